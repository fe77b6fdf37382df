"""MultiWorkerMirroredStrategy across two real worker processes on loopback (TF_CONFIG)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_together_and_only_the_chief_writes(tmp_path: Path) -> None:
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    run_dir = tmp_path / "run"
    procs = []
    for index in range(2):
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
        }
        args = [
            sys.executable, "-m", "fedmodel.cli", "train", "--model", "logreg", "--dataset", "synthetic",
            "--epochs", "2", "--strategy", "multi-worker", "--no-tensorboard", "--format", "json",
            "--run-dir", str(run_dir),
        ]  # fmt: skip
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    summaries = [json.loads(out) for out, _ in outputs]
    assert [s["replicas"] for s in summaries] == [2, 2]
    # Both workers hold the same synchronized model, so they report the same test accuracy.
    assert summaries[0]["accuracy"] == summaries[1]["accuracy"]
    assert json.loads((run_dir / "run.json").read_text())["strategy"] == {
        "name": "multi-worker",
        "replicas": 2,
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
