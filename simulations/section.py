"""One benchmark script's result for the suite (:mod:`simulations.bench`): its Markdown and the data behind it.

Every ``bench_*.py`` the suite runs ends with :func:`write_section` (given ``--json``); the suite reads the
file back, adds the commit and puts the Markdown into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

QUICK = "QUICK MODE: smoke run, not a measurement."


def plot_link(args: argparse.Namespace, png: Path | str, alt: str) -> str:
    """Markdown image link to ``png`` as BENCHMARKS.md sees it (``--link-prefix``, else ``--plots``)."""
    prefix = args.link_prefix if args.link_prefix is not None else args.plots
    return f"![{alt}]({prefix}/{Path(png).name})"


def markdown(body: Sequence[str], *, quick: bool) -> str:
    """The section's parts separated by blank lines (empty parts left out), QUICK MODE first in a smoke run."""
    return "\n\n".join(part for part in ([QUICK] if quick else []) + list(body) if part)


def write_section(
    path: Path | str,
    *,
    name: str,
    title: str,
    command: str,
    quick: bool,
    started: str,
    began: float,
    body: Sequence[str],
    data: Any,
) -> str:
    """Write the section (``began``: its ``time.perf_counter()`` start) as JSON at ``path``; its Markdown."""
    text = markdown(body, quick=quick)
    section = {
        "section": name,
        "title": title,
        "command": command + (" --quick" if quick else ""),
        "started": started,
        "seconds": time.perf_counter() - began,
        "markdown": text,
        "data": data,
    }
    Path(path).write_text(json.dumps(section, indent=2, default=str))
    return text
