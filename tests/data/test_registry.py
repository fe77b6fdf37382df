"""Dataset names, listings, argument checks, and the TensorFlow-free import."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import available_datasets, describe_datasets, load_dataset
from fedmodel.errors import ConfigError


def test_listing_covers_every_dataset_with_its_kind() -> None:
    names = available_datasets()
    assert {"digits", "mnist5k", "synthetic", "mnist", "cifar100", "npz", "text", "shakespeare"} <= set(names)
    rows = describe_datasets()
    assert [r["name"] for r in rows] == names
    kinds = {r["name"]: r["kind"] for r in rows}
    assert kinds["digits"] == "embedded" and kinds["cifar10"] == "keras" and kinds["npz"] == "file"
    assert all(set(r) == {"name", "kind", "shape", "classes", "summary"} for r in rows)


def test_text_datasets_list_the_public_vocabulary_size_they_load_with(tmp_path: Path) -> None:
    # two files with different characters: the listed class count is what both load with, whatever they hold
    (tmp_path / "lower.txt").write_text("abc" * 100)
    (tmp_path / "play.txt").write_text("KING:\n" + "Long live \u00e9t\u00e9!\n" * 30)
    rows = {r["name"]: r for r in describe_datasets()}
    for name, path in (("text", "lower.txt"), ("shakespeare", "play.txt")):
        assert rows[name]["classes"] == "97 (public ASCII vocabulary)"
        assert load_dataset(name, path=tmp_path / path, seq_len=9).info.num_classes == 97


def test_unknown_dataset_lists_the_available_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'imagenet'; expected one of \['digits'"):
        load_dataset("imagenet")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "digits", "path": "x.npz"}, "is built in and takes no path"),
        ({"name": "text"}, "expected path=FILE"),
        ({"name": "digits", "download": True}, "download=True applies only to"),
        ({"name": "synthetic", "max_examples": 0}, "max_examples must be >= 1 or None, got 0"),
    ],
)
def test_arguments_a_dataset_does_not_take_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_dataset(**kwargs)  # type: ignore[arg-type]


def test_max_examples_caps_train_and_test() -> None:
    ds = load_dataset("digits", max_examples=100, seed=3)
    assert (ds.num_train, ds.num_test) == (100, 100)
    assert np.array_equal(ds.y_train, load_dataset("digits", max_examples=100, seed=3).y_train)


def test_import_and_local_loads_never_import_tensorflow(tmp_path: Path) -> None:
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "datasets" / "mnist.npz",
        x_train=rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        y_train=np.arange(4, dtype=np.uint8),
        x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8),
        y_test=np.arange(2, dtype=np.uint8),
    )
    script = textwrap.dedent(
        """
        import sys
        import fedmodel.data as d
        assert "tensorflow" not in sys.modules, "import fedmodel.data imported tensorflow"
        d.load_dataset("digits"); d.load_dataset("synthetic"); d.load_dataset("mnist")
        d.describe_datasets()
        assert "tensorflow" not in sys.modules, "a local load imported tensorflow"
        print("ok")
        """
    )
    env = {**os.environ, "KERAS_HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
