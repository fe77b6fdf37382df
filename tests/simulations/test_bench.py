"""The benchmark suite: BENCHMARKS.md is rewritten only between its markers, and --quick runs every section."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from simulations import bench

ROOT = Path(__file__).resolve().parents[2]
STRAYS = ("raylet", "gcs_server", "worker_binary", "ray::")


def _result(name: str) -> dict[str, object]:
    return {
        "title": f"Title of {name}",
        "command": f"uv run python -m simulations.{name}",
        "started": "2026-12-03 10:00:00 UTC",
        "seconds": 90.0,
        "markdown": f"| a | b |\n| --- | --- |\n| {name} | 1 |",
    }


def _results() -> dict[str, tuple[dict[str, object] | None, str]]:
    return {name: (_result(name), "ok") for name in bench.SECTIONS}


def test_rewrite_keeps_what_is_outside_the_markers(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    out.write_text("# Benchmarks\n\nintro\n\n## Old section\n\nold figures 1.23\n")
    bench.rewrite(out, bench.generated_part(_results(), quick=False, ran=["dpsgd"], started="now"))
    first = out.read_text()
    assert first.startswith("# Benchmarks\n\n" + bench.BEGIN)
    assert first.index(bench.END) < first.index("# Earlier measurements") < first.index("old figures 1.23")
    for name in bench.SECTIONS:
        assert f"Title of {name}" in first and f"`uv run python -m simulations.{name}`" in first
    # a second run replaces the generated part only: the old measurements appear once, the new ones once
    again = _results()
    again["utility"] = (None, "exit code 1")
    bench.rewrite(out, bench.generated_part(again, quick=False, ran=["utility"], started="later"))
    second = out.read_text()
    assert second.count(bench.BEGIN) == 1 and second.count("old figures 1.23") == 1
    assert "Title of utility" not in second and "Not available: exit code 1" in second
    assert "Title of dpsgd" in second and "started later" in second


def test_generated_part_names_machine_versions_and_commit() -> None:
    text = bench.generated_part(_results(), quick=True, ran=list(bench.SECTIONS), started="now")
    assert "QUICK MODE" in text
    assert "usable CPU cores" in text
    for package in ("tensorflow ", "tensorflow-privacy ", "tensorflow-federated ", "flwr ", "dp-accounting "):
        assert package in text
    assert "Commit now: " in text and "unknown" not in text.split("Commit now: ")[1].split("\n")[0]


def test_section_commands_pass_json_workdir_plots_and_quick(tmp_path: Path) -> None:
    for section in bench.SECTIONS.values():
        cmd = section.command(quick=True, workdir=tmp_path, plots=tmp_path / "p", link_prefix="p")
        assert cmd[:3] == [sys.executable, "-m", section.module]
        assert cmd[cmd.index("--json") + 1] == str(tmp_path / f"{section.name}.json")
        assert cmd[-1] == "--quick"
        assert ("--plots" in cmd) == section.plots
    assert "--quick" not in bench.SECTIONS["dpsgd"].command(
        quick=False, workdir=tmp_path, plots=tmp_path, link_prefix="."
    )


def test_unknown_section_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.parse_args(["--sections", "dpsgd,speed"])
    assert "got speed" in capsys.readouterr().err


def _strays(since: float) -> list[str]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline", "create_time"]):
        info = proc.info
        text = " ".join([info["name"] or "", *(info["cmdline"] or [])])
        if (info["create_time"] or 0) >= since and any(s in text for s in STRAYS):
            found.append(f"{proc.pid} {text[:80]}")
    return found


def _suite(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "simulations.bench", "--quick", "--workdir", str(tmp_path / "w"), *extra]
    return subprocess.Popen(
        [*cmd, "--out", str(tmp_path / "B.md"), "--plots", str(tmp_path / "plots")],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background job ignores SIGINT
    )


@pytest.mark.slow  # every section's --quick mode: about 10 minutes on 2 cores
@pytest.mark.timeout(2400)
def test_quick_suite_runs_every_section_and_leaves_no_process(tmp_path: Path) -> None:
    since = time.time()
    proc = _suite(tmp_path)
    output, _ = proc.communicate(timeout=2300)
    assert proc.returncode == 0, output[-4000:]
    text = (tmp_path / "B.md").read_text()
    assert "QUICK MODE" in text
    for name in bench.SECTIONS:
        result = json.loads((tmp_path / "w" / f"{name}.json").read_text())
        assert result["section"] == name and result["title"] in text
        assert "QUICK MODE" in result["markdown"]
    for png in ("dpsgd_cost.png", "scale.png", "utility_accuracy.png"):
        assert (tmp_path / "plots" / png).stat().st_size > 1000
        assert f"](plots/{png})" in text
    assert "failed" not in text.lower(), text
    time.sleep(2)
    assert _strays(since) == []


@pytest.mark.slow  # starts a real section (TensorFlow) and interrupts it
def test_ctrl_c_stops_the_section_and_keeps_benchmarks_md(tmp_path: Path) -> None:
    (tmp_path / "B.md").write_text("# Benchmarks\n\nkept\n")
    since = time.time()
    proc = _suite(tmp_path, "--sections", "rounds")
    assert proc.stdout is not None
    deadline = time.time() + 300
    for line in proc.stdout:  # wait until the section's first part has started
        if "[central]" in line or time.time() > deadline:
            break
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output[-3000:]
    assert "interrupted" in output
    assert (tmp_path / "B.md").read_text() == "# Benchmarks\n\nkept\n"
    time.sleep(2)
    assert _strays(since) == []


FAKE_SECTION = """
import json, sys, time
args = sys.argv[1:]
name = args[args.index("--name") + 1]
if name == "bad":
    print("[fake] failing", flush=True)
    sys.exit(3)
out = {"section": name, "title": "Fake " + name, "command": "fake", "started": "now", "seconds": 1.0,
       "markdown": "| fake | %s |" % name}
open(args[args.index("--json") + 1], "w").write(json.dumps(out))
"""


def test_each_finished_section_is_written_and_a_failed_one_shows_no_stale_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "fake_section.py").write_text(FAKE_SECTION)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    sections = {
        "good": bench.Section("good", "fake_section", ("--name", "good"), workdir_flag=None, plots=False),
        "bad": bench.Section("bad", "fake_section", ("--name", "bad"), workdir_flag=None, plots=False),
    }
    monkeypatch.setattr(bench, "SECTIONS", sections)
    work = tmp_path / "w"
    work.mkdir()
    (work / "bad.json").write_text(json.dumps({**_result("bad"), "title": "Stale bad"}))  # an earlier run's
    out = tmp_path / "B.md"
    code = bench.main(["--workdir", str(work), "--out", str(out), "--plots", str(tmp_path / "p")])
    text = out.read_text()
    assert code == 1
    assert "Fake good" in text and "| fake | good |" in text
    assert "Stale bad" not in text and "Not available: exit code 3" in text
    assert "[fake] failing" in (work / "bad.log").read_text()
    recorded = json.loads((work / "good.json").read_text())["commit"]  # the commit that measured the section
    assert recorded == bench.commit() and f"commit {recorded};" in text
    # rerunning only the good section keeps the (now absent) bad one absent, and says which ran this time
    code = bench.main(["--workdir", str(work), "--out", str(out), "--plots", str(tmp_path / "p"), "--sections", "good"])
    text = out.read_text()
    assert code == 0 and "sections run this time: good" in text and "Not available: not run" in text
    # --sections "" runs nothing and rewrites BENCHMARKS.md from the last results
    out.write_text("# Benchmarks\n\nold\n")
    assert (
        bench.main(["--workdir", str(work), "--out", str(out), "--plots", str(tmp_path / "p"), "--sections", ""]) == 0
    )
    text = out.read_text()
    assert "sections run this time: none" in text and "| fake | good |" in text and "Earlier measurements" in text


def test_the_suites_own_outputs_do_not_mark_the_commit_dirty(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "docs" / "bench").mkdir(parents=True)
    run = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    run("init", "-q")
    (repo / "code.py").write_text("x = 1\n")
    run("add", ".")
    run("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    (repo / "BENCHMARKS.md").write_text("new\n")
    (repo / "docs" / "bench" / "a.png").write_bytes(b"png")
    original = bench.ROOT
    try:
        bench.ROOT = repo
        assert "uncommitted" not in bench.commit()
        (repo / "code.py").write_text("x = 2\n")
        assert bench.commit().endswith("with uncommitted changes")
    finally:
        bench.ROOT = original
