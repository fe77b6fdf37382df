"""`fedmodel deploy ...` helpers, run in-process through the real command line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fedmodel.cli import main

SETTINGS = ["--set", "model=mlp", "--set", "dataset=digits", "--set", "num-clients=3", "--set", "clients-per-round=2"]


def test_certs_and_node_keys_print_the_commands_and_a_federation_that_parses(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["deploy", "certs", "--out", str(tmp_path / "certs"), "--host", "10.0.0.5", "--host", "srv.lan"]) == 0
    out = capsys.readouterr().out
    snippet = out[out.index("[tool.flwr.federations.") :]
    federation = tomllib.loads(snippet)["tool"]["flwr"]["federations"]["deployment"]
    assert federation["address"] == "10.0.0.5:9093" and Path(federation["root-certificates"]).is_file()
    assert main(["deploy", "node-keys", "--out", str(tmp_path / "keys"), "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "flwr supernode register" in out and (tmp_path / "keys" / "node-001.pub").is_file()
    assert (tmp_path / "keys" / "node-000.key").stat().st_mode & 0o777 == 0o600
    # Nothing is overwritten: a second call is an error (exit 2), the first files stay.
    before = (tmp_path / "keys" / "node-000.key").read_bytes()
    assert main(["deploy", "node-keys", "--out", str(tmp_path / "keys"), "--nodes", "1"]) == 2
    assert "already exists" in capsys.readouterr().err and (tmp_path / "keys" / "node-000.key").read_bytes() == before


def test_exported_files_pass_check_data_and_a_bad_file_fails_with_its_code(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    shards = tmp_path / "shards"
    assert main(["deploy", "export-data", *SETTINGS, "--out", str(shards)]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in shards.iterdir())
    assert names == ["client-000.npz", "client-001.npz", "client-002.npz", "manifest.json"]
    manifest = str(shards / "manifest.json")
    assert main(["deploy", "check-data", str(shards / "client-001.npz"), "--manifest", manifest]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary  # what the node holds, in numbers (no examples)
    assert main(["deploy", "check-data", str(shards / "client-001.npz"), *SETTINGS]) == 0
    capsys.readouterr()
    bad = tmp_path / "bad.npz"
    with np.load(shards / "client-000.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["x_train"] = arrays["x_train"].copy()
    arrays["x_train"][0] = np.nan
    np.savez(bad, **arrays)
    assert main(["deploy", "check-data", str(bad), "--manifest", manifest]) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedmodel: error:") and "NaN" in err, err


BAD = [["deploy", "trial", "--set", "num-clients=0"], ["deploy", "certs", "--out", "x", "--host", "a b"]]


@pytest.mark.parametrize("argv", BAD)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], capsys, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("fedmodel: error:") and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "runs").exists()
