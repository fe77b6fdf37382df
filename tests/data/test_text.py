"""Character-level text data: plain files and play scripts split by speaker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import Dataset, load_dataset
from fedmodel.data.text import split_speakers
from fedmodel.errors import ConfigError

TINY_SHAKESPEARE = Path(__file__).resolve().parents[2].parent / "shared/data/tinyshakespeare.txt"

PLAY = """ALICE:
abcdefghij
klmnopqrst

BOB:
0123456789

ALICE:
uvwxyz!?

BOB THE SECOND:
ABCDEFGHIJKLMNOPQRSTUVWXYZ
"""


def _decode(ds: Dataset, ids: np.ndarray) -> str:
    assert ds.info.vocab is not None
    return "".join(ds.info.vocab[i] for i in ids)


def test_plain_text_windows_shift_by_one_and_split_at_the_end(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(200))
    (tmp_path / "t.txt").write_text(text)
    ds = load_dataset("text", path=tmp_path / "t.txt", seq_len=9)
    # 200 // 10 = 20 windows; the last 10% (2) are the test set
    assert ds.x_train.shape == (18, 9) and ds.x_test.shape == (2, 9)
    assert ds.x_train.dtype == np.int32 and ds.info.task == "next-token"
    assert ds.info.vocab == "abcdefghijklmnopqrstuvwxyz" and ds.info.num_classes == 26
    assert _decode(ds, ds.x_train[0]) == text[0:9] and _decode(ds, ds.y_train[0]) == text[1:10]
    assert _decode(ds, ds.x_test[-1]) == text[190:199]
    assert ds.groups_train is None


def test_split_speakers_joins_each_roles_blocks() -> None:
    roles = split_speakers(PLAY)
    assert list(roles) == ["ALICE", "BOB", "BOB THE SECOND"]
    assert roles["ALICE"] == "abcdefghij\nklmnopqrst\nuvwxyz!?"
    assert roles["BOB"] == "0123456789"


def test_shakespeare_windows_stay_within_one_role(tmp_path: Path) -> None:
    (tmp_path / "play.txt").write_text(PLAY)
    ds = load_dataset("shakespeare", path=tmp_path / "play.txt", seq_len=2)
    assert ds.groups_train is not None and len(ds.groups_train) == len(ds.x_train)
    # ALICE: 30 characters -> 10 windows of 3, the last held out; BOB: 10 -> 3; BOB THE SECOND: 26 -> 8
    assert np.unique(ds.groups_train, return_counts=True)[1].tolist() == [9, 3, 8]
    alice = "abcdefghij\nklmnopqrst\nuvwxyz!?"
    train_alice = [_decode(ds, w) for w in ds.x_train[ds.groups_train == "ALICE"]]
    assert train_alice == [alice[i : i + 2] for i in range(0, 27, 3)]
    assert [_decode(ds, w) for w in ds.x_test] == [alice[27:29]]


def test_play_without_speakers_and_too_short_text_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "prose.txt").write_text("just some prose\nwith lines\n")
    with pytest.raises(ConfigError, match="expected a play script"):
        load_dataset("shakespeare", path=tmp_path / "prose.txt")
    with pytest.raises(ConfigError, match="expected at least 10"):
        load_dataset("text", path=tmp_path / "prose.txt", seq_len=80)
    with pytest.raises(ConfigError, match="no such file"):
        load_dataset("text", path=tmp_path / "absent.txt")


@pytest.fixture(scope="module")
def tiny_shakespeare() -> Dataset:
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {TINY_SHAKESPEARE} (the shared data folder is absent)")
    return load_dataset("shakespeare", path=TINY_SHAKESPEARE)


def test_tiny_shakespeare_speakers_and_windows(tiny_shakespeare: Dataset) -> None:
    ds = tiny_shakespeare
    assert ds.info.num_classes == 65 and ds.x_train.shape[1] == 80
    assert ds.groups_train is not None
    roles, counts = np.unique(ds.groups_train, return_counts=True)
    assert len(roles) > 200  # hundreds of speaking roles; many with one or two windows
    assert {"ROMEO", "JULIET", "First Citizen"} <= set(roles.tolist())
    assert counts.max() < len(ds.x_train) / 10  # no single role dominates
    assert 11_000 < len(ds.x_train) < 12_000 and 1_000 < len(ds.x_test) < 1_300
    assert _decode(ds, ds.x_train[0]).startswith("Before we proceed any further")


def test_tiny_shakespeare_max_examples_caps_both_splits() -> None:
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {TINY_SHAKESPEARE} (the shared data folder is absent)")
    ds = load_dataset("shakespeare", path=TINY_SHAKESPEARE, max_examples=500, seq_len=40, seed=1)
    assert ds.x_train.shape == (500, 40) and ds.x_test.shape == (500, 40)
    assert ds.groups_train is not None and len(ds.groups_train) == 500
