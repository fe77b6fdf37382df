"""One Ctrl-C stops `fedmodel simulate` at once, keeps a resumable run directory, and leaves no Ray process.

Which processes are the run's: every process whose environment holds a marker variable that only this test
sets. Ray hands the driver's environment to everything it starts (GCS, raylet, dashboard, agents, log
monitor, ``ray::`` workers), so the marker finds them even after they are re-parented or change their command
line, and never confuses them with another run's Ray on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
MARK = "FEDMODEL_INTERRUPT_TEST"
SETTINGS = ["model=mlp", "hparam-hidden=[16]", "dataset=digits", "num-clients=4", "clients-per-round=2"]
SETTINGS += ["local-epochs=1"]
RAY = ("raylet", "gcs_server", "ray::", "dashboard", "log_monitor", "runtime_env")


def marked(token: str) -> dict[int, str]:
    """Running (not zombie) processes whose environment holds ``MARK=token``: pid -> command line."""
    wanted = f"{MARK}={token}".encode()
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if wanted not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # exited meanwhile, or not ours to read
        if state not in ("Z", "X"):
            found[int(proc.name)] = command
    return found


def gone_after(token: str, *, timeout: float) -> float:
    """Seconds until no marked process runs; fails listing them if some still do after ``timeout``."""
    start = time.monotonic()
    while (left := marked(token)) and time.monotonic() - start < timeout:
        time.sleep(0.1)
    assert not left, f"still running {time.monotonic() - start:.1f} s later: {left}"
    return time.monotonic() - start


def start(run_dir: Path, rounds: int, token: str, log: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "fedmodel.cli", "simulate", "--run-dir", str(run_dir)]
    for setting in [*SETTINGS, f"rounds={rounds}"]:
        argv += ["--set", setting]
    env = {**os.environ, "PYTHONPATH": str(ROOT), MARK: token}
    # A shell's background job starts with SIGINT ignored and Python keeps an inherited SIG_IGN: give the
    # process the default disposition, as a terminal's foreground process has.
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    with log.open("w") as sink:  # a file, not a pipe: a full pipe would block the process
        return subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True, preexec_fn=reset
        )


def kill_all(proc: subprocess.Popen[bytes], token: str) -> None:
    """Whatever happened, leave nothing this test started."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in marked(token):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def rounds_run(run_dir: Path) -> int:
    try:
        return int(json.loads((run_dir / "run.json").read_text())["rounds_run"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow  # two real Flower simulations: Ray and TensorFlow start in every actor (minutes)
def test_one_sigint_stops_the_run_keeps_it_resumable_and_leaves_no_ray_process(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    token = uuid.uuid4().hex
    proc = start(run_dir, 50, token, tmp_path / "first.txt")
    try:
        deadline = time.monotonic() + 600
        while rounds_run(run_dir) < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "first.txt").read_text()[-3000:]
        assert rounds_run(run_dir) >= 1, "no round finished in 600 s"
        running = marked(token).values()
        assert any(name in command for command in running for name in RAY), running  # the marker finds Ray

        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)  # to the process only, not to its group
        proc.wait(timeout=20)
        exit_seconds = time.monotonic() - sent
        ray_seconds = gone_after(token, timeout=5)
    finally:
        kill_all(proc, token)
    print(f"SIGINT to exit: {exit_seconds:.2f} s; no marked process {ray_seconds:.2f} s after the exit")

    stderr = (tmp_path / "first.txt").read_text()
    assert proc.returncode == 130, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("fedmodel: interrupted")]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    before: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    done = int(before["rounds_run"])
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert lines[0].startswith(f"fedmodel: interrupted after round {state['round']}; resume with: fedmodel simulate ")
    assert f"--run-dir {run_dir}" in lines[0] and "--set rounds=50" in lines[0]
    assert not list(run_dir.rglob(".*.tmp"))  # no half-written file left behind

    # Resume: the same command, one round more than run.json shows; also a normal short run, after which
    # nothing may remain either.
    token = uuid.uuid4().hex
    proc = start(run_dir, done + 1, token, tmp_path / "resume.txt")
    try:
        proc.wait(timeout=600)
        after_normal_run = gone_after(token, timeout=5)
    finally:
        kill_all(proc, token)
    print(f"after the resumed (normal) run: no marked process {after_normal_run:.2f} s after the exit")
    stderr = (tmp_path / "resume.txt").read_text()
    assert proc.returncode == 0, stderr[-3000:]
    assert f"resuming {run_dir} after round {done}" in stderr or f"already finished {done + 1}" in stderr
    record = json.loads((run_dir / "run.json").read_text())
    assert record["rounds_run"] == done + 1 and record["status"] == "completed"
    assert len(record["rounds"]) == done + 1
    assert record["rounds"][:done] == before["rounds"][:done]  # continued from the checkpoint, not restarted


@pytest.mark.parametrize(
    ("command", "signum", "done", "line"),
    [
        (["demo"], signal.SIGINT, 3, "interrupted after round 3; resume with: fedmodel demo --run-dir runs/federated-"),
        (["simulate", "--set", "rounds=9"], signal.SIGTERM, 0, "interrupted before round 1 finished; resume with: "
         "fedmodel simulate --set rounds=9 --run-dir runs/federated-"),
    ],
)  # fmt: skip
def test_an_interrupted_run_is_one_line_naming_the_command_that_resumes_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: list[str],
    signum: int,
    done: int,
    line: str,
) -> None:
    from fedmodel import cli
    from fedmodel.federated import simulate

    def interrupted(config: object, **kwargs: object) -> None:
        raise simulate.SimulationInterrupted(signum, done)

    monkeypatch.chdir(tmp_path)  # the default run directory, runs/..., is relative
    monkeypatch.setattr(simulate, "run_simulation", interrupted)
    assert cli.main(command) == 128 + signum
    out, err = capsys.readouterr()
    lines = [text for text in err.splitlines() if text.startswith("fedmodel:")]
    assert out == "" and len(lines) == 1 and lines[0].startswith(f"fedmodel: {line}"), err


def test_a_failed_simulation_process_is_one_error_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmodel import cli
    from fedmodel.federated import simulate

    def failed(config: object, **kwargs: object) -> None:
        raise simulate.SimulationFailed(1)

    monkeypatch.setattr(simulate, "run_simulation", failed)
    assert cli.main(["simulate", "--set", "rounds=2", "--run-dir", str(tmp_path / "run")]) == 1
    err = capsys.readouterr().err
    assert "fedmodel: error: the simulation process exited with status 1 (see the log above)" in err, err


def test_rounds_finished_reads_the_checkpoint_before_run_json(tmp_path: Path) -> None:
    from fedmodel.federated.simulate import rounds_finished

    assert rounds_finished(None) == 0 and rounds_finished(tmp_path) == 0
    (tmp_path / "run.json").write_text(json.dumps({"rounds_run": 4}))
    assert rounds_finished(tmp_path) == 4
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "state.json").write_text(json.dumps({"round": 5}))  # killed before run.json
    assert rounds_finished(tmp_path) == 5
