"""Seconds per federated round, start-up and peak memory from 10 to 100,000 clients, five implementations.

What is measured
----------------
One round's compute is held fixed while the population grows: every client holds ``--per-client`` synthetic
examples (8x8 grey images of 10 classes, :func:`fedmodel.data.synthetic.make_synthetic`, written to an
``.npz`` per population size because the embedded sets are too small for 100,000 clients; fedmodel keeps
90% of a shard for training), 10 clients are sampled per round, each trains 5 local epochs at batch 10 with
SGD 0.1 on the 2NN MLP (200, 200); FedAvg, no DP, no client evaluation. For each population size each
implementation runs in a fresh process (:func:`simulations.bench_federated.run_part`):

* ``fedmodel on Flower``: ``fedmodel simulate`` (ServerApp/ClientApp on Flower's Ray engine), per-round
  seconds from the run's diagnostics (training, aggregation, server evaluation, checkpoint);
* ``fedmodel on TFF``: ``fedmodel simulate --backend tff`` (``tff.learning`` FedAvg, server evaluation and
  checkpoint per round as above);
* ``textbook Flower``: the Flower tutorial's client, which builds a new Keras model on every call
  (:mod:`simulations.textbook_client`), with a centralized evaluation per round;
* ``plain TFF``: ``tff.learning.algorithms.build_weighted_fed_avg`` alone, one ``process.next`` per round,
  no evaluation;
* ``central limit``: one Keras ``model.fit`` over the union of a round's 10 client shards (the same
  compute in one process, no federation); it does not depend on the population, so it runs once.

Columns: the median seconds of rounds 2..R (round 1 holds tracing), the ratio to the central limit, the
start-up (seconds from launching the process to the end of round 1: imports, data loading, Ray or TFF
start, tracing and round 1 itself; for fedmodel taken when ``run.json`` first records round 1), and the
peak resident memory summed over the process tree (driver, Ray's GCS/raylet/workers, TFF's
``worker_binary``), sampled every 0.5 s.

Run ``uv run python -m simulations.bench_scale`` (``--quick`` for a smoke run, ``--json`` for the suite).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from simulations.bench_federated import Outcome, run_part, steady, workload
from simulations.plotting import new_figure, save
from simulations.section import markdown, plot_link, write_section

IMPLEMENTATIONS: dict[str, str] = {
    "ours": "fedmodel on Flower",
    "ours_tff": "fedmodel on TFF",
    "textbook": "textbook Flower client",
    "tff": "plain TFF",
}
POPULATIONS = (10, 100, 1_000, 10_000, 100_000)
TEST_EXAMPLES = 2_000


def synthetic_npz(path: Path, *, clients: int, per_client: int, seed: int) -> Path:
    """Write (once) ``clients * per_client`` synthetic training examples and a fixed test set to ``path``."""
    if path.exists():
        return path
    import numpy as np

    from fedmodel.data.synthetic import make_synthetic

    n_train = clients * per_client
    data = make_synthetic(
        num_examples=n_train + TEST_EXAMPLES,
        input_shape=(8, 8, 1),
        num_classes=10,
        seed=seed,
        noise=0.6,
        test_fraction=TEST_EXAMPLES / (n_train + TEST_EXAMPLES),
    )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        x_train=np.round(data.x_train * 255).astype(np.uint8),
        y_train=data.y_train,
        x_test=np.round(data.x_test * 255).astype(np.uint8),
        y_test=data.y_test,
    )
    tmp.replace(path)
    return path


@dataclasses.dataclass(frozen=True)
class Cell:
    """One implementation at one population size."""

    implementation: str
    clients: int
    seconds: float | None
    startup: float | None
    peak_rss_mb: float
    rounds: int
    accuracy: float | None
    error: str | None

    @classmethod
    def of(cls, implementation: str, clients: int, out: Outcome) -> Cell:
        r = out.result
        return cls(
            implementation=implementation,
            clients=clients,
            seconds=steady(r["seconds"]) if r and r.get("seconds") else None,
            startup=out.startup,
            peak_rss_mb=out.peak_rss_mb,
            rounds=len(r["seconds"]) if r else 0,
            accuracy=r.get("accuracy") if r else None,
            error=out.error,
        )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def tables(cells: Sequence[Cell], limit: float | None, populations: Sequence[int]) -> str:
    """Three Markdown tables (s/round with x limit, start-up, peak RSS): implementations x population."""
    head = "| implementation | " + " | ".join(f"{n:,}" for n in populations) + " |"
    rule = "| --- |" + " --- |" * len(populations)
    by = {(c.implementation, c.clients): c for c in cells}

    def table(title: str, cell_text: Any) -> str:
        lines = [f"**{title}**", "", head, rule]
        for name, label in IMPLEMENTATIONS.items():
            row = [cell_text(by.get((name, n))) for n in populations]
            if any(text != "" for text in row):
                lines.append(f"| {label} | " + " | ".join(row) + " |")
        return "\n".join(lines)

    def speed(c: Cell | None) -> str:
        if c is None:
            return ""
        if c.seconds is None:
            return "failed"
        ratio = f" ({c.seconds / limit:.1f}x)" if limit else ""
        return f"{c.seconds:.3f}{ratio}"

    limit_line = (
        f"Central limit (one Keras `model.fit` over a round's examples): **{limit:.3f} s**; "
        "the ratio to it is in brackets."
        if limit
        else "Central limit: not measured."
    )
    return "\n\n".join(
        [
            table("Seconds per round (median of rounds 2..R)", speed),
            limit_line,
            table(
                "Start-up: seconds from launch to the end of round 1",
                lambda c: "" if c is None else _fmt(c.startup, ".1f"),
            ),
            table(
                "Peak RSS of the whole process tree (MB)",
                lambda c: "" if c is None else f"{c.peak_rss_mb:,.0f}",
            ),
        ]
    )


def plot(cells: Sequence[Cell], limit: float | None, path: Path) -> Path:
    """Seconds per round, start-up and peak memory against the population, one line per implementation."""
    fig, axes = new_figure(3, (15, 4.2))
    panels = (
        ("seconds per round", lambda c: c.seconds),
        ("start-up to end of round 1 (s)", lambda c: c.startup),
        ("peak RSS, process tree (MB)", lambda c: c.peak_rss_mb if c.seconds is not None else None),
    )
    for ax, (ylabel, value) in zip(axes, panels, strict=True):
        for name, label in IMPLEMENTATIONS.items():
            points = sorted((c.clients, value(c)) for c in cells if c.implementation == name)
            points = [(n, v) for n, v in points if v is not None]
            if points:
                ax.plot([n for n, _ in points], [v for _, v in points], marker="o", label=label)
        if ylabel.startswith("seconds") and limit:
            ax.axhline(limit, color="black", linestyle="--", linewidth=1, label="central limit")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("clients in the population")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("FedAvg, 10 clients per round, fixed work per round (synthetic 8x8, MLP 200-200)")
    return save(fig, path)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--clients", default=",".join(str(n) for n in POPULATIONS), help="population sizes")
    parser.add_argument("--only", default=",".join(IMPLEMENTATIONS), help=f"of: {', '.join(IMPLEMENTATIONS)}")
    parser.add_argument("--rounds", type=int, default=4, help="rounds per run; rounds 2.. are timed")
    parser.add_argument("--per-client", type=int, default=10, help="synthetic examples per client")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats of the central limit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before one run is killed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="data, run directories and logs (default: a temp dir)")
    parser.add_argument("--json", default=None, help="write the section (Markdown + data) here for the suite")
    parser.add_argument("--plots", default=None, help="directory for scale.png")
    parser.add_argument("--link-prefix", default=None, help="how the Markdown links the plot (default: --plots)")
    parser.add_argument("--quick", action="store_true", help="100 clients, 2 rounds (smoke run)")
    args = parser.parse_args(argv)
    try:
        args.clients = [int(n.replace("_", "")) for n in args.clients.split(",") if n.strip()]
    except ValueError:
        parser.error(f"--clients takes comma-separated integers, got {args.clients!r}")
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := set(args.only) - set(IMPLEMENTATIONS):
        parser.error(f"--only takes {', '.join(IMPLEMENTATIONS)}; got {', '.join(sorted(unknown))}")
    if args.quick:
        args.clients, args.rounds, args.repeats = [100], 2, 2
    if not args.clients or min(args.clients) < 10:
        parser.error(f"--clients must all be >= 10 (10 clients are sampled per round), got {args.clients}")
    if args.rounds < 2 or args.per_client < 2 or args.repeats < 1:
        parser.error("--rounds and --per-client must be >= 2, --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_scale_"))
    workdir.mkdir(parents=True, exist_ok=True)
    began, started = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S %Z")

    def settings(clients: int, name: str) -> dict[str, Any]:
        data = synthetic_npz(
            workdir / f"synthetic-{clients}x{args.per_client}.npz",
            clients=clients,
            per_client=args.per_client,
            seed=args.seed,
        )
        return workload(
            dataset=str(data),
            num_clients=clients,
            rounds=args.rounds,
            run_dir=str(workdir / f"run-{name}-{clients}"),
            seed=args.seed,
        )

    print(f"[scale] central limit ({args.repeats} repeats) ...", file=sys.stderr, flush=True)
    central = run_part(
        "central",
        {"settings": settings(min(args.clients), "central"), "repeats": args.repeats},
        workdir=workdir,
        timeout=args.timeout,
    )
    limit = steady(central.result["fit"]) if central.result else None
    cells: list[Cell] = []
    for clients in args.clients:
        for name in args.only:
            label = f"[scale] {IMPLEMENTATIONS[name]}, {clients:,} clients, {args.rounds} rounds"
            print(f"{label} ...", file=sys.stderr, flush=True)
            kwargs: dict[str, Any] = {"settings": settings(clients, name)}
            if name == "ours":
                kwargs["eval_repeats"] = 1
            out = run_part(name, kwargs, workdir=workdir, timeout=args.timeout, tag=str(clients))
            cell = Cell.of(name, clients, out)
            cells.append(cell)
            shown = f"{cell.seconds:.3f} s/round" if cell.seconds is not None else f"FAILED: {cell.error}"
            print(f"{label}: {shown} ({out.wall:.0f} s, peak {out.peak_rss_mb:,.0f} MB)", file=sys.stderr, flush=True)
            if out.leftover:
                print(f"{label}: terminated leftover processes {', '.join(out.leftover)}", file=sys.stderr)
    body = [
        (
            f"Workload: synthetic 8x8 images, 10 classes, {args.per_client} examples per client, 10 clients per "
            "round, 5 local epochs at batch 10, SGD 0.1, MLP (200, 200), FedAvg, no DP; "
            f"{args.rounds} rounds per run, rounds 2..{args.rounds} timed. Each cell is one fresh process."
        ),
        tables(cells, limit, args.clients),
    ]
    failures = [c for c in cells if c.error]
    if central.error:
        body.append(f"Central limit failed: {central.error}")
    if failures:
        body.append("Failed runs:\n\n" + "\n".join(f"- {IMPLEMENTATIONS[c.implementation]}, {c.clients:,} "
                                                     f"clients: {c.error}" for c in failures))  # fmt: skip
    if args.plots:
        png = plot(cells, limit, Path(args.plots) / "scale.png")
        body.append(plot_link(args, png, "seconds per round, start-up and memory against clients"))
    if args.json:
        write_section(args.json, name="scale", title="Seconds per round from 10 to 100,000 clients",
                      command="uv run python -m simulations.bench_scale", quick=args.quick, started=started,
                      began=began, body=body, data={"limit": limit, "cells": [dataclasses.asdict(c) for c in cells],
                                                    "workdir": str(workdir)})  # fmt: skip
    else:
        print(markdown(body, quick=args.quick))
    return 1 if failures or central.error else 0


if __name__ == "__main__":
    sys.exit(main())
