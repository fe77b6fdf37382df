"""The report of a federated run: a per-round table (Markdown + JSON) and PNG plots.

Two tables, kept apart as the run directory keeps them: what the privacy ledger covers (``run.json``:
server-side test metrics of the released model, epsilon, clip, clients sampled) and the diagnostics
computed on the clients' data without noise (``diagnostics.json``), headed as not covered.

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

COLUMNS = ("round", "loss", "accuracy", "epsilon", "clip", "sampled")
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


def write_report(run_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json``, ``accuracy.png`` (and ``epsilon.png`` with DP) into ``run_dir``."""
    run = Path(run_dir)
    record_path = run / "run.json"
    if not record_path.is_file():
        raise ConfigError(f"{record_path} does not exist: not a finished federated run directory")
    record = json.loads(record_path.read_text())
    rows: list[dict[str, Any]] = record.get("rounds", [])
    config = record.get("config", {})
    written = []
    lines = [
        f"# Federated run: {config.get('model')} on {config.get('dataset')}",
        "",
        f"- clients: {config.get('num_clients')} ({config.get('partition')} partition), "
        f"{config.get('clients_per_round')} per round, {record.get('rounds_run')} rounds, "
        f"strategy {config.get('strategy')}",
        f"- local training: {config.get('local_epochs')} epoch(s) at batch {config.get('local_batch_size')}, "
        f"{config.get('client_optimizer')} lr {config.get('client_lr')}",
    ]
    privacy = record.get("privacy")
    if privacy:
        eps = ", ".join(f"{_cell(v)} ({k})" for k, v in privacy.get("epsilon", {}).items())
        if "rounds" in privacy:
            lines += [
                f"- client-level DP: epsilon {eps} at delta {privacy['delta']} after {privacy['rounds']} rounds; "
                f"unit: one client ({privacy.get('adjacency')}); client sampling {privacy.get('bound')}",
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
    diagnostics = _diagnostics(run)
    if diagnostics:
        lines += ["## Diagnostics: NOT covered by epsilon", "", str(diagnostics.get("note", "")), ""]
        lines += [rounds_table(diagnostics["rounds"], markdown=True, columns=DIAGNOSTIC_COLUMNS), ""]
    elif record.get("outputs", {}).get("dp_outputs_only"):
        lines += ["Run with dp-outputs-only: no diagnostics on the clients' data were computed or written.", ""]
    written.append(atomic_write(run / "report.md", "\n".join(lines)))
    written.append(
        atomic_write(run / "report.json", json.dumps({"config": config, "rounds": rows, "privacy": privacy}, indent=2))
    )
    if rows:
        merged = [{**d, **r} for r, d in zip(rows, _aligned(rows, diagnostics), strict=True)]
        written.append(
            _plot(
                run / "accuracy.png",
                merged,
                [("accuracy", "test accuracy (server)"), ("fed_accuracy", "federated evaluation (not DP)")],
                "accuracy",
            )
        )
        if any("epsilon" in r for r in rows):
            written.append(
                _plot(
                    run / "epsilon.png",
                    rows,
                    [("epsilon", "epsilon (RDP)")],
                    f"epsilon (delta = {privacy['delta']})" if privacy else "epsilon",
                )
            )
    if (run / LEDGER_FILE).is_file():
        from fedmodel.privacy.report import report_run

        written += list(report_run(run).values())
    return written


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
