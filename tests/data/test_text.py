"""Character-level text data: plain files and play scripts split by speaker, over a public vocabulary."""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path

import numpy as np
import pytest

from fedmodel.data import Dataset, load_dataset
from fedmodel.data.text import (
    ASCII_VOCAB,
    OOV_ID,
    OOV_MARKER,
    decode,
    encode,
    load_text,
    read_text,
    split_speakers,
)
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
    return decode(ids, vocab=ds.info.vocab)


def test_default_vocabulary_is_oov_newline_and_printable_ascii() -> None:
    # independent reference: Python's string.printable without the whitespace controls \t \n \r \x0b \x0c
    printable = sorted(set(string.printable) - set("\t\n\r\x0b\x0c"))
    assert len(printable) == 95
    assert len(ASCII_VOCAB) == 97 and ASCII_VOCAB[OOV_ID] == OOV_MARKER == "\ufffd"
    assert ASCII_VOCAB[1] == "\n" and list(ASCII_VOCAB[2:]) == printable
    # documented id rule: printable c has id ord(c) - 30
    assert encode(" A~").tolist() == [2, 65 - 30, 126 - 30]


def test_ascii_text_round_trips() -> None:
    text = "\n".join([string.ascii_letters, string.digits, string.punctuation, "  spaces  "]) + "\n"
    ids = encode(text)
    assert ids.dtype == np.int32 and ids.shape == (len(text),)
    assert OOV_ID not in ids.tolist()
    assert decode(ids) == text


def test_characters_outside_the_vocabulary_become_the_oov_id() -> None:
    text = "caf\u00e9\tA\r\u00a7\U0001f600z"  # e-acute, tab, lone CR, section sign, emoji: none in the vocabulary
    ids = encode(text).tolist()
    assert ids == [ord("c") - 30, ord("a") - 30, ord("f") - 30, 0, 0, ord("A") - 30, 0, 0, 0, ord("z") - 30]
    assert decode(np.array(ids)) == "caf\ufffd\ufffdA\ufffd\ufffd\ufffdz"


def test_files_with_different_characters_get_the_same_vocabulary(tmp_path: Path) -> None:
    # same length, disjoint character sets; one holds a character outside the vocabulary
    (tmp_path / "a.txt").write_text("ab" * 100)
    (tmp_path / "b.txt").write_text("XY\u00a7" * 66 + "XY")
    a = load_dataset("text", path=tmp_path / "a.txt", seq_len=9)
    b = load_dataset("text", path=tmp_path / "b.txt", seq_len=9)
    assert a.info.vocab == b.info.vocab == ASCII_VOCAB and a.info.num_classes == b.info.num_classes == 97
    # nothing else in the description depends on the characters either
    assert dataclasses.replace(a.info, source="") == dataclasses.replace(b.info, source="")
    assert b.x_train[0].tolist() == [ord("X") - 30, ord("Y") - 30, OOV_ID] * 3


def test_a_rare_character_of_one_speaker_is_not_revealed(tmp_path: Path) -> None:
    rare = PLAY.replace("0123456789", "012\u00e6456789")  # only BOB uses the rare character
    (tmp_path / "play.txt").write_text(PLAY)
    (tmp_path / "rare.txt").write_text(rare)
    plain = load_dataset("shakespeare", path=tmp_path / "play.txt", seq_len=2)
    ds = load_dataset("shakespeare", path=tmp_path / "rare.txt", seq_len=2)
    assert ds.info == dataclasses.replace(plain.info, source=ds.info.source)
    assert "\u00e6" not in (ds.info.vocab or "")
    assert ds.groups_train is not None
    bob = [_decode(ds, w) for w in ds.x_train[ds.groups_train == "BOB"]]
    assert bob == ["01", "\ufffd4", "67"]


def test_an_explicit_vocabulary_is_used_as_given(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text("abcz" * 50)
    vocab = OOV_MARKER + "cba"  # the given order, not sorted
    ds = load_text(tmp_path / "t.txt", name="text", seq_len=3, vocab=vocab)
    assert ds.info.vocab == vocab and ds.info.num_classes == 4
    assert ds.x_train[0].tolist() == [3, 2, 1] and ds.y_train[0].tolist() == [2, 1, 0]  # "abc" -> "bcz"
    assert _decode(ds, ds.y_train[0]) == "bc\ufffd"


@pytest.mark.parametrize(
    ("vocab", "message"),
    [
        ("abc", r"must start with the out-of-vocabulary marker '\ufffd' \(token 0\), got 'a'"),
        (OOV_MARKER, "at least 2 characters"),
        (OOV_MARKER + "abca", r"must not repeat a character, got \['a'\]"),
        (OOV_MARKER + "a\ud800", "must hold Unicode characters"),
    ],
)
def test_malformed_vocabularies_are_rejected_before_the_file_is_read(vocab: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text("/nonexistent/file.txt", name="text", vocab=vocab)


def test_plain_text_windows_shift_by_one_and_split_at_the_end(tmp_path: Path) -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(200))
    (tmp_path / "t.txt").write_text(text)
    ds = load_dataset("text", path=tmp_path / "t.txt", seq_len=9)
    # 200 // 10 = 20 windows; the last 10% (2) are the test set
    assert ds.x_train.shape == (18, 9) and ds.x_test.shape == (2, 9)
    assert ds.x_train.dtype == np.int32 and ds.info.task == "next-token"
    assert ds.info.vocab == ASCII_VOCAB and ds.info.num_classes == 97  # public, not the file's 26 letters
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
    assert ds.info.num_classes == 97 and ds.info.vocab == ASCII_VOCAB and ds.x_train.shape[1] == 80
    assert ds.groups_train is not None
    roles, counts = np.unique(ds.groups_train, return_counts=True)
    assert len(roles) > 200  # hundreds of speaking roles; many with one or two windows
    assert {"ROMEO", "JULIET", "First Citizen"} <= set(roles.tolist())
    assert counts.max() < len(ds.x_train) / 10  # no single role dominates
    assert 11_000 < len(ds.x_train) < 12_000 and 1_000 < len(ds.x_test) < 1_300
    assert _decode(ds, ds.x_train[0]).startswith("Before we proceed any further")


def test_tiny_shakespeare_encodes_losslessly(tiny_shakespeare: Dataset) -> None:
    ds = tiny_shakespeare
    text = read_text(TINY_SHAKESPEARE, name="shakespeare")
    assert decode(encode(text)) == text  # plain ASCII: nothing falls outside the vocabulary
    for split in (ds.x_train, ds.y_train, ds.x_test, ds.y_test):
        assert int(split.min()) > OOV_ID
    # every window is a piece of its role's text, character for character
    assert ds.groups_train is not None
    roles = split_speakers(text)
    romeo = ds.x_train[ds.groups_train == "ROMEO"]
    assert len(romeo) > 10
    assert [_decode(ds, w) for w in romeo] == [roles["ROMEO"][i : i + 80] for i in range(0, 81 * len(romeo), 81)]


def test_tiny_shakespeare_max_examples_caps_both_splits() -> None:
    if not TINY_SHAKESPEARE.is_file():
        pytest.skip(f"tiny Shakespeare not found at {TINY_SHAKESPEARE} (the shared data folder is absent)")
    ds = load_dataset("shakespeare", path=TINY_SHAKESPEARE, max_examples=500, seq_len=40, seed=1)
    assert ds.x_train.shape == (500, 40) and ds.x_test.shape == (500, 40)
    assert ds.groups_train is not None and len(ds.groups_train) == 500
