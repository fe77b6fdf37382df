"""The report of a federated run: ``report.md`` (with ``report.json``) and PNG plots.

``report.md`` is the run: settings, a per-round table, the plots (``accuracy.png``; ``epsilon.png`` with
client-level DP) and the diagnostics. Two tables, kept apart as the run directory keeps them: what the privacy
ledger covers (``run.json``: server-side test metrics of the released model, epsilon, clip, clients sampled) and
the diagnostics computed on the clients' data without noise (``diagnostics.json``), headed as not covered.

The privacy accounting of a run with a ledger (unit, adjacency, sampling bound, accountants, epsilon per round)
is ``privacy_report.md``, written by :func:`fedmodel.privacy.report.report_run` and linked from ``report.md``.

Plots: accuracy of the global model on the server's test set per round (and federated evaluation
accuracy, marked "not DP", when the clients evaluated), and epsilon per round for client-level DP runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from fedmodel.atomic import atomic_write, atomic_write_with
from fedmodel.errors import ConfigError
from fedmodel.privacy.ledger import LEDGER_FILE
from fedmodel.privacy.report import REPORT_MD as PRIVACY_REPORT
from fedmodel.privacy.report import report_run

COLUMNS = ("round", "loss", "accuracy", "epsilon", "clip", "sampled", "survivors")
DIAGNOSTIC_COLUMNS = (
    "round", "replies", "failures", "rejected", "train_loss", "train_accuracy", "fed_loss", "fed_accuracy",
    "clipped", "local_epsilon_max", "seconds",
)  # fmt: skip


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def rounds_table(rows: list[dict[str, Any]], *, markdown: bool, columns: tuple[str, ...] = COLUMNS) -> str:
    """The per-round table, Markdown or plain text, with the columns that this run has."""
    columns = tuple(c for c in columns if any(c in r for r in rows))
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _client_data(record: dict[str, Any], config: dict[str, Any]) -> str:
    """Where the clients' training data came from, as run.json's ``outputs.client_data`` says."""
    source = (record.get("outputs") or {}).get("client_data")
    if source == "node-local":
        return "each trained on its own node-local data file; the server saw none of it"
    return f"{config.get('partition')} partition of {config.get('dataset')}"


def write_report(run_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json``, ``accuracy.png`` (and ``epsilon.png`` with DP) into ``run_dir``.

    ``report.md`` is the run: its settings, the released model's test metrics per round, the plots and the
    diagnostics. A run with a privacy ledger also gets ``privacy_report.md`` (:mod:`fedmodel.privacy.report`:
    unit, adjacency, sampling bound, accountants, epsilon per round from the ledger), which ``report.md``
    links instead of repeating.
    """
    run = Path(run_dir)
    record_path = run / "run.json"
    if not record_path.is_file():
        raise ConfigError(f"{record_path} does not exist: not a finished federated run directory")
    record = json.loads(record_path.read_text())
    rows: list[dict[str, Any]] = record.get("rounds", [])
    config = record.get("config", {})
    privacy = record.get("privacy")
    diagnostics = _diagnostics(run)
    has_ledger = (run / LEDGER_FILE).is_file()
    plots: list[tuple[Path, str]] = []
    if rows:
        merged = [{**d, **r} for r, d in zip(rows, _aligned(rows, diagnostics), strict=True)]
        series = [("accuracy", "test accuracy (server)"), ("fed_accuracy", "federated evaluation (not DP)")]
        plots.append((_plot(run / "accuracy.png", merged, series, "accuracy"), "test accuracy per round"))
        if any("epsilon" in r for r in rows):
            ylabel = f"epsilon (delta = {privacy['delta']})" if privacy else "epsilon"
            path = _plot(run / "epsilon.png", rows, [("epsilon", "epsilon (RDP)")], ylabel)
            plots.append((path, "epsilon per round"))
    lines = _markdown(record, rows, config, privacy, diagnostics, has_ledger=has_ledger, plots=plots)
    written = [atomic_write(run / "report.md", "\n".join(lines))]
    written.append(
        atomic_write(run / "report.json", json.dumps({"config": config, "rounds": rows, "privacy": privacy}, indent=2))
    )
    written += [path for path, _ in plots]
    if has_ledger:
        written += list(report_run(run).values())
    return written


def _markdown(
    record: dict[str, Any],
    rows: list[dict[str, Any]],
    config: dict[str, Any],
    privacy: dict[str, Any] | None,
    diagnostics: dict[str, Any] | None,
    *,
    has_ledger: bool,
    plots: list[tuple[Path, str]],
) -> list[str]:
    """The lines of ``report.md``; privacy accounting details are left to the linked ``privacy_report.md``."""
    lines = [
        f"# Federated run: {config.get('model')} on {config.get('dataset')}",
        "",
        f"- clients: {config.get('num_clients')} ({_client_data(record, config)}), "
        f"{config.get('clients_per_round')} per round, {record.get('rounds_run')} rounds, "
        f"strategy {config.get('strategy')}",
        f"- local training: {config.get('local_epochs')} epoch(s) at batch {config.get('local_batch_size')}, "
        f"{config.get('client_optimizer')} lr {config.get('client_lr')}",
    ]
    if privacy:
        eps = ", ".join(f"{_cell(v)} ({k})" for k, v in privacy.get("epsilon", {}).items())
        if "rounds" in privacy:
            line = (
                f"- client-level DP: epsilon {eps} at delta {privacy['delta']} after {privacy['rounds']} rounds; "
                "unit: one client"
            )
            if has_ledger:
                line += (
                    f" (adjacency, sampling bound, accountants and the ledger: [{PRIVACY_REPORT}]({PRIVACY_REPORT}))"
                )
            else:
                line += f" ({privacy.get('adjacency')}); client sampling {privacy.get('bound')}"
            lines.append(line)
        secure = privacy.get("secure_aggregation")
        if secure:
            lines += [
                f"- secure aggregation: {privacy.get('mechanism')}; {secure.get('bits')}-bit integers, "
                f"each client's discrete Gaussian scale {_cell(secure.get('local_noise_scale_integers'))}, "
                f"noise counted from {secure.get('counted_shares')} other survivors; {privacy.get('bound')}",
                f"- who sees what: {secure.get('who_sees_what')}",
                f"- dropouts: {secure.get('dropouts')}",
                "- details: docs/secure_aggregation.md",
            ]
        local = privacy.get("local_dp")
        if local:
            lines.append(
                f"- local DP-SGD on each client: largest client epsilon {local.get('epsilon_max_over_clients')} "
                f"at delta {local.get('delta')} (unit: one example of that client)"
            )
    if record.get("stop_reason"):
        lines.append(f"- {record['stop_reason']}")
    lines += ["", "## Released under the privacy ledger" if privacy else "## Rounds", ""]
    lines += [rounds_table(rows, markdown=True), ""]
    if plots:
        lines += ["## Plots", ""]
        for path, title in plots:
            lines += [f"![{title}]({path.name})", ""]
        if diagnostics and any("fed_accuracy" in d for d in diagnostics["rounds"]):
            lines += ["The accuracy plot's federated evaluation is a diagnostic, not covered by epsilon.", ""]
    if diagnostics:
        lines += ["## Diagnostics: NOT covered by epsilon", "", str(diagnostics.get("note", "")), ""]
        lines += [rounds_table(diagnostics["rounds"], markdown=True, columns=DIAGNOSTIC_COLUMNS), ""]
    elif record.get("outputs", {}).get("dp_outputs_only"):
        lines += ["Run with dp-outputs-only: no diagnostics on the clients' data were computed or written.", ""]
    return lines


def _diagnostics(run: Path) -> dict[str, Any] | None:
    path = run / "diagnostics.json"
    if not path.is_file():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data if data.get("rounds") else None


def _aligned(rows: list[dict[str, Any]], diagnostics: dict[str, Any] | None) -> list[dict[str, Any]]:
    by_round = {d["round"]: d for d in (diagnostics or {}).get("rounds", [])}
    return [by_round.get(r["round"], {}) for r in rows]


def _plot(path: Path, rows: list[dict[str, Any]], series: list[tuple[str, str]], ylabel: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, label in series:
        points = [(r["round"], r[key]) for r in rows if r.get(key) is not None and not math.isnan(r[key])]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return atomic_write_with(path, lambda fh: fig.savefig(fh, format="png", dpi=100))
