"""Privacy reports: a planned budget or a finished run, as a terminal table, Markdown, JSON and plots.

Every report states the four things a reader needs to interpret epsilon (Ponomareva et al. 2023,
"How to DP-fy ML", https://arxiv.org/abs/2303.00654, Sec. 5.3): the unit of privacy (example or
client), the adjacency relation, the sampling assumption, and the accountant(s); then epsilon at the
given delta, over epochs (central) or rounds (federated).

:func:`report_run` reads ``RUN_DIR/privacy_ledger.json`` (what actually ran) and, if present,
``RUN_DIR/run.json`` (accuracy per epoch or round), and writes ``privacy_report.md``,
``privacy_report.json``, ``privacy_epsilon.png`` and, when accuracy is known,
``privacy_accuracy.png``, each atomically. matplotlib is imported only there (Agg canvas, no pyplot).
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from fedmodel.atomic import atomic_write
from fedmodel.errors import ConfigError
from fedmodel.privacy.accounting import AccountantName, AccountingError, check_accountants
from fedmodel.privacy.budget import BudgetReport, sampling_bound
from fedmodel.privacy.calibration import warn_delta
from fedmodel.privacy.ledger import LEDGER_FILE, PrivacyLedger

Format = Literal["table", "markdown", "json"]
FORMATS: tuple[Format, ...] = get_args(Format)

REPORT_MD = "privacy_report.md"
REPORT_JSON = "privacy_report.json"
EPSILON_PNG = "privacy_epsilon.png"
ACCURACY_PNG = "privacy_accuracy.png"
RUN_FILE = "run.json"
#: Most epoch/round points a run report evaluates (evenly thinned, the last always kept).
RUN_CURVE_POINTS = 50

_ACCOUNTANT_NAMES = {
    "rdp": "RDP (dp-accounting RdpAccountant, default orders)",
    "pld": "PLD (dp-accounting PLDAccountant, pessimistic)",
}


@dataclass(frozen=True)
class _Doc:
    """What both kinds of report show: facts, final epsilon, a curve, warnings."""

    title: str
    facts: list[tuple[str, str]]
    accountants: tuple[str, ...]
    delta: float
    epsilon: dict[str, float]
    axis: str
    curve: list[dict[str, Any]]  # {"at", "steps", "epsilon": {...}, optional "accuracy"}
    warnings: list[str]


# -- budget reports -------------------------------------------------------------------------------


def render(report: BudgetReport, fmt: Format = "table") -> str:
    """``report`` as a terminal table, Markdown, or JSON text."""
    if fmt == "json":
        return json.dumps(report.to_json_dict(), indent=2)
    return _render(_budget_doc(report), _check_format(fmt))


def render_table(report: BudgetReport) -> str:
    return render(report, "table")


def render_markdown(report: BudgetReport) -> str:
    return render(report, "markdown")


def _budget_doc(report: BudgetReport) -> _Doc:
    plan = report.plan
    if plan.federated:
        setup = (
            f"{plan.clients} clients, {plan.clients_per_round} per round ({plan.client_sampling}), {plan.rounds} rounds"
        )
    else:
        setup = f"{plan.examples} examples, batch size {plan.batch_size}, {_num(plan.epochs or 0)} epochs"
    noise = f"{report.noise_multiplier:.4g}"
    if report.calibrated_with is not None:
        noise += f" (calibrated with {report.calibrated_with} for target epsilon {_num(report.target_epsilon or 0)}"
        if len(report.accountants) > 1:
            noise += "; the tightest accountant's bound applies, the others are looser upper bounds"
        noise += ")"
    fixed = plan.federated and plan.client_sampling == "fixed-size"
    facts = [
        ("unit of privacy", report.unit),
        ("adjacency", report.adjacency),
        ("sampling", report.sampling),
        ("bound", report.bound),
        ("accountants", ", ".join(_ACCOUNTANT_NAMES[a] for a in report.accountants)),
        ("setup", setup),
        ("clients per round", f"{plan.clients_per_round} of {plan.clients}")
        if fixed
        else ("sampling rate q", f"{report.sampling_rate:.6g}"),
        ("steps", str(report.steps)),
        ("noise multiplier", noise),
        ("delta", f"{report.delta:g}"),
    ]
    curve = [{"at": p.at, "steps": p.steps, "epsilon": p.epsilon} for p in report.curve]
    return _Doc(
        "Privacy budget",
        facts,
        report.accountants,
        report.delta,
        report.epsilon,
        report.curve_axis,
        curve,
        list(report.warnings),
    )


# -- run reports ----------------------------------------------------------------------------------


def run_summary(
    run_dir: str | os.PathLike[str],
    *,
    delta: float | None = None,
    accountants: Sequence[AccountantName] | None = None,
) -> dict[str, Any]:
    """The privacy report of a run as a JSON-ready dict (what ``privacy_report.json`` holds).

    ``accountants`` None means every accountant that applies to the ledger (only RDP for fixed-size
    sampling); naming one that does not apply raises AccountingError.
    """
    root = Path(run_dir)
    if not root.is_dir():
        raise ConfigError(f"run directory {root} does not exist")
    ledger_path = root / LEDGER_FILE
    if not ledger_path.is_file():
        raise ConfigError(f"{ledger_path} does not exist: the run recorded no privacy ledger")
    ledger = PrivacyLedger.load(ledger_path)
    names = ledger.accountants if accountants is None else check_accountants(accountants)
    for name in names:
        if name not in ledger.accountants:
            raise AccountingError(
                f"{name} does not support fixed-size sampling; use rdp (the ledger {ledger_path} records "
                "fixed-size releases)"
            )
    d = ledger.resolve_delta(delta)
    if ledger.steps == 0:
        raise ConfigError(f"privacy ledger {ledger_path} records no steps")
    bounds = _thin(ledger.boundaries(), RUN_CURVE_POINTS)
    accuracy = _accuracy(root / RUN_FILE)
    curves: dict[str, dict[int, float]] = {}
    skipped: list[str] = []
    for n in names:
        try:
            curves[n] = dict(ledger.epsilon_curve(d, n, [s for _, s in bounds]))
        except AccountingError as err:
            if accountants is not None:  # asked for by name: say so as an error
                raise
            skipped.append(f"{n} accountant skipped: {err}")
    names = tuple(n for n in names if n in curves)
    curve = []
    for at, s in bounds:
        point: dict[str, Any] = {"at": at, "steps": s, "epsilon": {n: curves[n][s] for n in names}}
        if at in accuracy:
            point["accuracy"] = accuracy[at]
        curve.append(point)
    epsilon = {n: ledger.epsilon(d, n) for n in names}
    warnings = [w for w in [warn_delta(d, ledger.population, unit=ledger.unit)] if w] + skipped
    if any(e.noise_multiplier == 0 for e in ledger.entries):
        warnings.append("some steps ran with noise_multiplier=0: the run is not differentially private")
    return {
        "run_dir": str(root),
        "unit": ledger.unit,
        "adjacency": ledger.adjacency,
        "sampling": ledger.sampling,
        "sampling_assumption": _sampling_assumption(ledger),
        "bound": _bound(ledger),
        "population": ledger.population,
        "steps": ledger.steps,
        "delta": d,
        "accountants": list(names),
        "epsilon": {n: _json_float(v) for n, v in epsilon.items()},
        "curve_axis": "round" if ledger.unit == "client" else "epoch",
        "curve": [{**p, "epsilon": {n: _json_float(v) for n, v in p["epsilon"].items()}} for p in curve],
        "entries": [e.to_dict() for e in ledger.entries],
        "notes": list(ledger.notes),
        "warnings": warnings,
    }


def render_run(summary: dict[str, Any], fmt: Format = "markdown") -> str:
    """A :func:`run_summary` dict as a terminal table, Markdown, or JSON text."""
    if fmt == "json":
        return json.dumps(summary, indent=2)
    zs = sorted({e["noise_multiplier"] for e in summary["entries"]})
    facts = [
        ("run", summary["run_dir"]),
        ("unit of privacy", summary["unit"]),
        ("adjacency", summary["adjacency"]),
        ("sampling", summary["sampling_assumption"]),
        ("bound", summary["bound"]),
        ("accountants", ", ".join(_ACCOUNTANT_NAMES[a] for a in summary["accountants"])),
        ("population", str(summary["population"])),
        ("steps", str(summary["steps"])),
        ("noise multiplier", ", ".join(f"{z:.4g}" for z in zs)),
        *_sampling_facts(summary["entries"], summary["unit"]),
        ("delta", f"{summary['delta']:g}"),
    ]
    facts += [("note", n) for n in summary["notes"]]
    doc = _Doc(
        "Privacy report",
        facts,
        tuple(summary["accountants"]),
        summary["delta"],
        {k: float(v) for k, v in summary["epsilon"].items()},
        summary["curve_axis"],
        summary["curve"],
        summary["warnings"],
    )
    text = _render(doc, _check_format(fmt))
    if fmt == "markdown":
        text += f"\n![epsilon per {doc.axis}]({EPSILON_PNG})\n"
        if any("accuracy" in p for p in doc.curve):
            text += f"\n![accuracy vs epsilon]({ACCURACY_PNG})\n"
    return text


def report_run(
    run_dir: str | os.PathLike[str],
    *,
    delta: float | None = None,
    accountants: Sequence[AccountantName] | None = None,
) -> dict[str, Path]:
    """Write the privacy report files of a run into ``run_dir``; returns ``{kind: path}``.

    Kinds: ``"markdown"``, ``"json"``, ``"epsilon_plot"`` and, when ``run.json`` has accuracy per
    epoch/round, ``"accuracy_plot"``. Missing run directory or ledger raises ConfigError.
    """
    return write_run_report(run_summary(run_dir, delta=delta, accountants=accountants))


def write_run_report(summary: dict[str, Any]) -> dict[str, Path]:
    """Write the files of a :func:`run_summary` into its run directory (see :func:`report_run`)."""
    root = Path(summary["run_dir"])
    written = {"epsilon_plot": atomic_write(root / EPSILON_PNG, _epsilon_png(summary))}
    if any("accuracy" in p for p in summary["curve"]):
        written["accuracy_plot"] = atomic_write(root / ACCURACY_PNG, _accuracy_png(summary))
    written["json"] = atomic_write(root / REPORT_JSON, json.dumps(summary, indent=2) + "\n")
    written["markdown"] = atomic_write(root / REPORT_MD, render_run(summary, "markdown"))
    return written


def _sampling_assumption(ledger: PrivacyLedger) -> str:
    """How the ledger's units were drawn and what the accounting assumes about it, in one sentence."""
    who = "client" if ledger.unit == "client" else "example"
    per = "round" if ledger.unit == "client" else "step"
    if ledger.release_sampling == "tree":
        return (
            f"no sampling (DP-FTRL): any available {who} may take part in a {per}, each at most once per tree; "
            "trees restart (recorded per entry) and compose"
        )
    if ledger.release_sampling == "fixed-size":
        return (
            f"fixed-size sampling without replacement: exactly m of the N {who}s in each {per} (recorded per "
            "entry), accounted as such"
        )
    text = f"Poisson subsampling: each {who} joins each {per} independently with the recorded probability q"
    if ledger.sampling != "poisson":
        text += (
            f". The run drew {'clients' if ledger.unit == 'client' else 'batches'} by {ledger.sampling} "
            "sampling; the epsilon is the Poisson-sampling figure at the same q, the usual practice but not "
            "a proven bound for that sampling (Chua et al. 2024, https://arxiv.org/abs/2403.17673)"
        )
    return text


def _bound(ledger: PrivacyLedger) -> str:
    """The bound the epsilon comes from: mechanism, sampling, adjacency and source."""
    if ledger.release_sampling == "tree":
        return (
            f"tree aggregation (DP-FTRL), replace-one-{ledger.unit}-with-zero: each tree of n steps is "
            "dp-accounting's SingleEpochTreeAggregationDpEvent, RDP alpha ceil(log2(n + 1)) / (2 z^2) (Kairouz et "
            "al. 2021, https://arxiv.org/abs/2103.00039, appendix D); trees compose"
        )
    if ledger.release_sampling == "fixed-size":
        return sampling_bound("fixed-size", ledger.unit)
    return sampling_bound("poisson", ledger.unit)


def _sampling_facts(entries: list[dict[str, Any]], unit: str) -> list[tuple[str, str]]:
    samplings = [e["sampling"] for e in entries]
    qs = sorted({s["rate"] for s in samplings if s["kind"] == "poisson"})
    fixed = sorted({(s["size"], s["population"]) for s in samplings if s["kind"] == "fixed-size"})
    trees = [s["tree"] for s in samplings if s["kind"] == "tree"]
    facts = []
    if trees:
        facts.append(("trees", f"{len(set(trees))} ({len(trees)} releases)"))
    if qs:
        facts.append(("sampling rate q", ", ".join(f"{q:.6g}" for q in qs)))
    if fixed:
        per = "round" if unit == "client" else "step"
        facts.append((f"{unit}s per {per}", ", ".join(f"{m} of {n}" for m, n in fixed)))
    return facts


def _accuracy(path: Path) -> dict[int, float]:
    """Accuracy per epoch/round (counted from 1) from ``run.json``, or {} when there is none."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path} is not valid JSON: {err}") from err
    history = data.get("history") if isinstance(data, dict) else None
    if isinstance(history, dict):
        for key in ("val_accuracy", "accuracy"):
            values = history.get(key)
            if isinstance(values, list) and values:
                return {i + 1: float(v) for i, v in enumerate(values)}
    rounds = data.get("rounds") if isinstance(data, dict) else None
    if isinstance(rounds, list):
        out = {}
        for i, r in enumerate(rounds):
            if isinstance(r, dict) and isinstance(r.get("accuracy"), int | float):
                out[int(r.get("round", i + 1))] = float(r["accuracy"])
        return out
    return {}


def _thin(points: list[tuple[int, int]], most: int) -> list[tuple[int, int]]:
    if len(points) <= most:
        return points
    picks = sorted({round(i * (len(points) - 1) / (most - 1)) for i in range(most)})
    return [points[i] for i in picks]


# -- rendering ------------------------------------------------------------------------------------


def _check_format(fmt: str) -> Format:
    if fmt not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt  # type: ignore[return-value]


def _render(doc: _Doc, fmt: Format) -> str:
    header = [doc.axis, "steps", *(f"epsilon ({a})" for a in doc.accountants)]
    has_acc = any("accuracy" in p for p in doc.curve)
    if has_acc:
        header.append("accuracy")
    rows = []
    for p in doc.curve:
        row = [_num(p["at"]), str(p["steps"]), *(_eps(float(p["epsilon"][a])) for a in doc.accountants)]
        if has_acc:
            row.append(f"{p['accuracy']:.4f}" if "accuracy" in p else "")
        rows.append(row)
    final = ", ".join(f"{_eps(doc.epsilon[a])} ({a})" for a in doc.accountants)
    if fmt == "markdown":
        lines = [f"# {doc.title}", ""]
        lines += [f"- **{k}**: {v}" for k, v in doc.facts]
        lines += ["", f"**epsilon = {final} at delta = {doc.delta:g}**", ""]
        lines += [f"## Epsilon per {doc.axis}", "", _md_table(header, rows)]
        if doc.warnings:
            lines += ["", "## Warnings", ""] + [f"- {w}" for w in doc.warnings]
        return "\n".join(lines) + "\n"
    width = max(len(k) for k, _ in doc.facts)
    lines = [doc.title, "=" * len(doc.title)]
    lines += [f"{k:>{width}}  {v}" for k, v in doc.facts]
    lines += ["", f"epsilon = {final} at delta = {doc.delta:g}", "", _text_table(header, rows)]
    lines += [f"warning: {w}" for w in doc.warnings]
    return "\n".join(lines) + "\n"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _eps(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.4f}"


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else "inf"


# -- plots ----------------------------------------------------------------------------------------


def _epsilon_png(summary: dict[str, Any]) -> bytes:
    axis = summary["curve_axis"]
    fig, ax = _figure()
    for name in summary["accountants"]:
        xs = [p["at"] for p in summary["curve"]]
        ys = [float(p["epsilon"][name]) for p in summary["curve"]]
        ax.plot(xs, ys, marker="o", markersize=3, label=name.upper())
    ax.set_xlabel(axis)
    ax.set_ylabel(f"epsilon (delta = {summary['delta']:g})")
    ax.set_title(f"Privacy spent per {axis} ({summary['unit']}-level DP)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _accuracy_png(summary: dict[str, Any]) -> bytes:
    fig, ax = _figure()
    points = [p for p in summary["curve"] if "accuracy" in p]
    for name in summary["accountants"]:
        ax.plot(
            [float(p["epsilon"][name]) for p in points],
            [p["accuracy"] for p in points],
            marker="o",
            markersize=3,
            label=name.upper(),
        )
    ax.set_xlabel(f"epsilon (delta = {summary['delta']:g})")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Accuracy against privacy ({summary['unit']}-level DP)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _png(fig)


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()
