"""The command line: fast help without TensorFlow, one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def fedmodel(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as a user's shell has it
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "fedmodel.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def imports_tensorflow(*argv: str) -> bool:
    code = (
        "import sys\nfrom fedmodel.cli import main\n"
        f"try:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass\n"
        "print('TF' if 'tensorflow' in sys.modules else 'NOTF', file=sys.stderr)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return proc.stderr.strip().splitlines()[-1] == "TF"


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["zoo"],
        ["zoo", "--format", "json"],
        ["datasets"],
        ["train", "--help"],
        ["train", "--resume", "/nonexistent/run"],
        ["train", "--dataset", "digits"],
    ],
)
def test_commands_that_do_not_train_do_not_import_tensorflow(argv: list[str]) -> None:
    assert not imports_tensorflow(*argv)


def test_zoo_json_lists_every_model_with_params() -> None:
    proc = fedmodel("zoo", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    names = {row["name"] for row in rows}
    assert {"logreg", "mlp", "cnn", "lenet", "resnet20", "lstm", "transformer"} <= names
    assert all(isinstance(row["params"], int) and row["params"] > 0 for row in rows)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--model", "nope", "--dataset", "digits"], ["'nope'", "cnn"]),
        (["--model", "cnn", "--dataset", "nope"], ["'nope'", "digits"]),
        (["--model", "cnn", "--dataset", "digits", "--learning-rate", "-1"], ["learning_rate", "-1"]),
        (["--model", "cnn", "--dataset", "npz", "--data-path", "VECTORS"], ["cnn", "(5,)"]),
        (["--model", "lstm", "--dataset", "digits"], ["lstm", "next-token"]),
        (
            ["--model", "cnn", "--dataset", "npz", "--data-path", "/nonexistent/file.npz"],
            ["/nonexistent/file.npz"],
        ),
        (["--model", "mlp", "--dataset", "digits", "--hparam", "bogus=3"], ["bogus"]),
        (["--model", "logreg", "--dataset", "digits", "--batch-size", "5000"], ["batch_size=5000 > examples=1293"]),
    ],
)
def test_bad_input_is_one_line_exit_2_and_no_run_dir(tmp_path: Path, argv: list[str], fragments: list[str]) -> None:
    vectors = tmp_path / "vectors.npz"  # 5 features: not an image, so an image model must refuse it
    rng = np.random.default_rng(0)
    np.savez(
        vectors,
        x_train=rng.random((20, 5)),
        y_train=np.arange(20) % 2,
        x_test=rng.random((4, 5)),
        y_test=np.arange(4) % 2,
    )
    argv = [str(vectors) if a == "VECTORS" else a for a in argv]
    proc = fedmodel("train", *argv, "--run-dir", str(tmp_path / "run"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("fedmodel: error:")]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectors.npz"]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--dataset", "digits"], "train needs --model (or --resume RUN_DIR)"),
        ([], "train needs --model and --dataset"),
        (["--resume", "RUN"], "no interrupted run to resume at"),
        (["--resume", "RUN", "--model", "cnn"], "drop --model"),
        (["--resume", "RUN", "--noise-multiplier", "1.0", "--lr", "0.1"], "drop --learning-rate, --noise-multiplier"),
        (["--resume", "RUN", "--epochs", "30", "--seed", "0"], "drop --epochs, --seed"),  # the defaults, typed
    ],
)
def test_train_and_resume_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], fragment: str) -> None:
    argv = [str(tmp_path / "run") if a == "RUN" else a for a in argv]
    proc = fedmodel("train", *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and fragment in proc.stderr, proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_train_json_prints_only_json_on_stdout(tmp_path: Path) -> None:
    proc = fedmodel(
        "train",
        "--model",
        "logreg",
        "--dataset",
        "synthetic",
        "--epochs",
        "2",
        "--format",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary["run_dir"] == str(tmp_path / "run")
    assert 0 <= summary["accuracy"] <= 1 and summary["epochs_run"] == 2
    assert (tmp_path / "run" / "run.json").is_file()
    assert "epoch 2/2" in proc.stderr  # progress went to stderr
    assert "Unable to register" not in proc.stderr  # TensorFlow's C++ import noise (cuDNN/cuFFT/cuBLAS factories)


def test_tensorflow_log_level_is_set_before_tensorflow_and_inherited() -> None:
    code = (
        "import os, subprocess, sys\nfrom fedmodel.cli import main\nmain(['zoo'])\n"
        "print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'), file=sys.stderr)\n"
        "subprocess.run([sys.executable, '-c', 'import tensorflow'], check=True)  # as a Ray worker would\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[0] == "3" and "Unable to register" not in proc.stderr, proc.stderr[-2000:]


def test_a_tensorflow_log_level_the_user_set_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedmodel import cli

    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    assert cli.main(["zoo", "--format", "json"]) == 0
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_partition_prints_each_clients_labels_and_writes_a_plot(tmp_path: Path) -> None:
    plot = tmp_path / "labels.png"
    proc = fedmodel("partition", "--dataset", "digits", "--scheme", "shards", "--clients", "10", "--plot", str(plot))
    assert proc.returncode == 0, proc.stderr
    assert "10 clients, 1437 examples" in proc.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    proc = fedmodel("partition", "--dataset", "digits", "--scheme", "shards", "--clients", "10", "--format", "json")
    counts = np.array(json.loads(proc.stdout)["counts"])
    assert counts.sum() == 1437
    assert ((counts > 0).sum(axis=1) <= 4).all()  # a label-sorted shard of ~72 spans at most 2 labels


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["simulate", "--set", "num-clinets=3"], "unknown setting 'num-clinets'"),
        (["simulate", "/nonexistent/exp.toml"], "/nonexistent/exp.toml does not exist"),
        (["simulate", "--set", "clients-per-round=50", "--set", "num-clients=10"], "clients-per-round must be <="),
        (["simulate", "--set", "model=lstm"], "next-token"),
        (["demo", "--set", "dp-noise=-1"], "dp-noise must be >= 0"),
    ],
)
def test_simulate_bad_input_is_one_line_exit_2_before_flower_starts(
    tmp_path: Path, argv: list[str], fragment: str
) -> None:
    proc = fedmodel(*argv, "--run-dir", str(tmp_path / "run"), timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fedmodel: error:")]
    assert len(errors) == 1 and fragment in errors[0], proc.stderr[-2000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["train", "simulate", "partition"])
def test_a_truncated_npz_is_one_line_exit_2_in_every_command(tmp_path: Path, command: str) -> None:
    good = tmp_path / "good.npz"
    rng = np.random.default_rng(0)
    np.savez(good, x_train=rng.random((40, 4)), y_train=np.arange(40) % 2, x_test=rng.random((8, 4)), y_test=[0, 1] * 4)
    data = tmp_path / "x.npz"
    data.write_bytes(good.read_bytes()[:300])
    argv = {
        "train": ["train", "--model", "logreg", "--dataset", str(data), "--run-dir", str(tmp_path / "run")],
        "simulate": [
            "simulate",
            "--set",
            "model=logreg",
            "--set",
            f"dataset={data}",
            "--run-dir",
            str(tmp_path / "run"),
        ],
        "partition": ["partition", "--dataset", str(data)],
    }[command]
    proc = fedmodel(*argv, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fedmodel: error:")]
    assert errors and errors[0].startswith("fedmodel: error: x.npz: not a readable .npz ("), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "run").exists()


def _finished_federated_run(run_dir: Path, settings: dict[str, object], *, rounds_run: int) -> dict[str, float]:
    """A run directory as a finished federated run leaves it (run.json and a checkpoint); returns mtimes."""
    from fedmodel.federated.config import FederatedConfig

    config = FederatedConfig.from_mapping({**settings, "run-dir": str(run_dir)})
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "checkpoint" / "state.json").write_text("{}")
    rows = [{"round": r, "loss": 1.0 / r, "accuracy": 0.5, "sampled": 2} for r in range(1, rounds_run + 1)]
    record = {
        "kind": "federated",
        "config": config.to_dict(),
        "rounds_run": rounds_run,
        "rounds": rows,
        "final": rows[-1],
        "privacy": None,
        "status": "completed",
    }
    (run_dir / "run.json").write_text(json.dumps(record, default=list))
    return {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*")}


SMALL_RUN = {"model": "logreg", "dataset": "digits", "num-clients": 4, "clients-per-round": 2, "rounds": 2}


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        (["client-lr=0.5", "alpha=0.3"], ["alpha 0.5 in the run, 0.3 now", "client-lr 0.05 in the run, 0.5 now"]),
        (["dp-noise=1.0"], ["dp-noise None in the run, 1.0 now"]),
        (["rounds=1"], ["rounds 1 now, but the run has finished 2"]),
    ],
)
def test_simulate_refuses_other_settings_for_a_finished_run_before_ray_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    changes: list[str],
    fragments: list[str],
) -> None:
    from fedmodel import cli
    from fedmodel.federated import simulate

    run_dir = tmp_path / "run"
    before = _finished_federated_run(run_dir, SMALL_RUN, rounds_run=2)
    started: list[object] = []
    monkeypatch.setattr(simulate, "run_simulation", lambda config, **kw: started.append(config))
    argv = ["simulate", *(a for kv in SMALL_RUN.items() for a in ("--set", f"{kv[0]}={kv[1]}"))]
    argv += [a for change in changes for a in ("--set", change)]
    assert cli.main([*argv, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"fedmodel: error: run directory {run_dir} holds a federated run with other settings: ")
    for fragment in fragments:
        assert fragment in err, err
    assert started == []
    assert {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before  # nothing written


def test_simulate_continues_a_finished_run_when_only_rounds_are_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fedmodel import cli
    from fedmodel.federated import simulate
    from fedmodel.federated.config import FederatedConfig

    run_dir = tmp_path / "run"
    _finished_federated_run(run_dir, SMALL_RUN, rounds_run=2)
    started: list[FederatedConfig] = []
    monkeypatch.setattr(simulate, "run_simulation", lambda config, **kw: started.append(config))
    argv = ["simulate", *(a for kv in {**SMALL_RUN, "rounds": 5}.items() for a in ("--set", f"{kv[0]}={kv[1]}"))]
    assert cli.main([*argv, "--run-dir", str(run_dir)]) == 0
    assert [c.rounds for c in started] == [5]


def test_simulate_refuses_a_central_run_directory_before_ray_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fedmodel import cli
    from fedmodel.central.config import TrainConfig
    from fedmodel.federated import simulate

    run_dir = tmp_path / "train-run"  # what `fedmodel train` leaves (run.json of kind "central", the model)
    run_dir.mkdir()
    central = {"kind": "central", "config": TrainConfig(model="logreg", dataset="digits").to_dict(), "metrics": {}}
    (run_dir / "run.json").write_text(json.dumps(central, default=list))
    (run_dir / "model.keras").write_bytes(b"")
    before = {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*")}
    monkeypatch.setattr(simulate, "run_simulation", lambda config, **kw: pytest.fail("the simulation started"))
    argv = ["simulate", *(a for kv in SMALL_RUN.items() for a in ("--set", f"{kv[0]}={kv[1]}"))]
    assert cli.main([*argv, "--run-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert f"fedmodel: error: run directory {run_dir} holds a central (train) run" in err, err
    assert {str(p): p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


@pytest.mark.parametrize("fmt", ["table", "json"])
def test_simulate_prints_rounds_once_and_stdout_holds_only_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    from fedmodel import cli
    from fedmodel.federated import simulate
    from fedmodel.federated.config import FederatedConfig

    def fake_simulation(config: FederatedConfig, **kwargs: object) -> None:
        """What the real one does to the streams: the server's lines, a stray print, and run.json."""
        assert "starting 4 simulated clients on Ray" in capsys.readouterr().err  # said before Ray starts
        print(f"run directory: {config.run_dir}")  # as the ServerApp prints it, to stdout
        for rnd in (1, 2):
            print(f"round {rnd:>3}  loss {1.0 / rnd:.4f}  accuracy 0.5000  sampled 2", file=sys.stderr)
        _finished_federated_run(Path(str(config.run_dir)), SMALL_RUN, rounds_run=2)

    monkeypatch.setattr(simulate, "run_simulation", fake_simulation)
    argv = ["simulate", *(a for kv in SMALL_RUN.items() for a in ("--set", f"{kv[0]}={kv[1]}"))]
    assert cli.main([*argv, "--run-dir", str(tmp_path / "run"), "--format", fmt]) == 0
    out, err = capsys.readouterr()
    assert "run directory:" in err and "run directory:" not in out
    assert [line.split()[1] for line in (out + err).splitlines() if line.startswith("round")] == ["1", "2"]
    if fmt == "json":
        assert json.loads(out)["final"]["round"] == 2
    else:
        assert "final model (round 2): test loss 0.5000, accuracy 0.5000" in out
        assert f"report: {tmp_path / 'run'}/report.md" in out


def test_readme_links_stay_inside_the_repository() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "../" not in readme  # e.g. a design note in a folder beside the checkout, absent from a clone
    for target in re.findall(r"\]\(([^)#\s]+)", readme):
        if "://" not in target:
            path = (ROOT / target).resolve()
            assert path.is_relative_to(ROOT) and path.exists(), target


def test_the_simulate_precheck_refuses_exactly_the_settings_the_server_refuses(tmp_path: Path) -> None:
    from fedmodel.errors import ConfigError
    from fedmodel.federated.config import FederatedConfig
    from fedmodel.federated.server import check_run_dir
    from fedmodel.federated.simulate import check_continuation

    config = FederatedConfig.from_mapping({**SMALL_RUN, "run-dir": str(tmp_path)})

    def refuses(check: Callable[[], None]) -> bool:
        try:
            check()
        except ConfigError:
            return True
        return False

    allowed = []
    for key in config.to_dict():  # one setting changed at a time, in the saved run
        saved = {**json.loads(json.dumps(config.to_dict(), default=list)), key: "another value"}
        (tmp_path / "run.json").write_text(json.dumps({"kind": "federated", "config": saved, "rounds_run": 0}))
        server = refuses(lambda: check_run_dir(tmp_path, config))
        assert refuses(lambda: check_continuation(config)) == server, key
        allowed += [] if server else [key]
    assert {"rounds", "run_dir"} <= set(allowed) and "model" not in allowed
