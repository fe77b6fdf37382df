"""Run directories appear whole or not at all."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedmodel.errors import ConfigError
from fedmodel.rundir import default_run_dir, staged_run_dir, versions, write_json


def test_success_renames_staging_into_place(tmp_path: Path) -> None:
    final = tmp_path / "a" / "b" / "run"
    with staged_run_dir(final) as out:
        assert out != final and out.parent == final.parent
        write_json(out / "run.json", {"x": 1})
    assert json.loads((final / "run.json").read_text()) == {"x": 1}
    assert sorted(p.name for p in final.parent.iterdir()) == ["run"]


def test_failure_leaves_nothing_not_even_new_parents(tmp_path: Path) -> None:
    final = tmp_path / "new" / "deeper" / "run"
    with pytest.raises(RuntimeError), staged_run_dir(final) as out:
        (out / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_existing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already exists"), staged_run_dir(tmp_path):
        pass


def test_default_run_dir_is_unique(tmp_path: Path) -> None:
    first = default_run_dir("train", "cnn", root=tmp_path)
    first.mkdir()
    assert default_run_dir("train", "cnn", root=tmp_path) != first


def test_versions_names_the_stack() -> None:
    got = versions()
    assert got["tensorflow"] == "2.14.1"
    assert got["flwr"] == "1.23.0"


@pytest.mark.parametrize("resumable", [True, False])
def test_failure_keeps_a_named_staging_directory_only_when_asked(tmp_path: Path, resumable: bool) -> None:
    final, staging = tmp_path / "run", tmp_path / ".run.partial"
    with pytest.raises(KeyboardInterrupt), staged_run_dir(final, staging=staging, keep_if=lambda s: resumable) as out:
        assert out == staging
        (out / "point.txt").write_text("epoch 2")
        raise KeyboardInterrupt
    assert staging.exists() is resumable and not final.exists()
    if resumable:  # the next session reuses the staging directory and finishes the run
        with staged_run_dir(final, staging=staging) as out:
            assert (out / "point.txt").read_text() == "epoch 2"
        assert (final / "point.txt").is_file() and not staging.exists()
