"""Character-level next-token data from a plain text file or a play script.

The vocabulary is the sorted set of characters in the file; token id ``i`` is ``vocab[i]``. The
text is cut into non-overlapping windows of ``seq_len + 1`` characters; for a window ``w`` the input
is ``w[:-1]`` and the target ``w[1:]`` (int32 ids, both ``(N, seq_len)``).

Play scripts (``load_text(..., by_speaker=True)``) are blocks separated by blank lines, each opening
with a ``SPEAKER NAME:`` line, as in tiny Shakespeare. As in LEAF's Shakespeare benchmark (Caldas et
al. 2018, https://leaf.cmu.edu), each role's lines are joined into that role's text and windows are
cut within a role, so ``groups_train`` holds the role of every training window and the
``"natural"`` partition gives one client per role. Tiny Shakespeare has no play titles, so a role
name is one role across all plays.

Split: the last ``TEST_FRACTION`` (rounded down) of each role's windows (of the whole text for plain
files) are the test set, like LEAF's per-user split; the test windows come after the training
windows in the text, so they never overlap.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from fedmodel.data.dataset import Dataset, DatasetInfo
from fedmodel.errors import ConfigError

TEST_FRACTION = 0.1
_SPEAKER = re.compile(r"^([A-Z][A-Za-z0-9' .,&-]{0,39}):\s*$")
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def read_text(path: str | os.PathLike[str], *, name: str) -> str:
    """Read a UTF-8 text file; ``\\r\\n`` becomes ``\\n``.

    Raises
    ------
    ConfigError
        When the file is missing, not UTF-8, or empty.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{name}: expected a text file at {p}, but no such file exists")
    try:
        text = p.read_text(encoding="utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: expected UTF-8 text in {p}, got undecodable bytes ({exc.reason})") from exc
    if not text:
        raise ConfigError(f"{name}: expected a non-empty text file at {p}, got an empty file")
    return text


def split_speakers(text: str) -> dict[str, str]:
    """Each role's lines, joined with newlines, in order of the role's first appearance.

    A block without a ``NAME:`` header continues the previous speaker's lines; text before the first
    header is dropped.
    """
    roles: dict[str, list[str]] = {}
    current: str | None = None
    for block in _BLANK_LINES.split(text):
        lines = block.strip("\n").split("\n")
        match = _SPEAKER.match(lines[0])
        if match:
            current, lines = match.group(1).strip(), lines[1:]
        if current is not None and any(line.strip() for line in lines):
            roles.setdefault(current, []).append("\n".join(lines))
    return {role: "\n".join(parts) for role, parts in roles.items()}


def make_windows(ids: np.ndarray, *, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut token ids into non-overlapping ``(inputs, targets)`` windows, each ``(N, seq_len)``.

    The tail shorter than ``seq_len + 1`` is dropped.
    """
    n = len(ids) // (seq_len + 1)
    windows = ids[: n * (seq_len + 1)].reshape(n, seq_len + 1)
    return windows[:, :-1], windows[:, 1:]


def load_text(path: str | os.PathLike[str], *, name: str, seq_len: int = 80, by_speaker: bool = False) -> Dataset:
    """Load a text file as character-level next-token data.

    Parameters
    ----------
    path : str or os.PathLike
        UTF-8 text file.
    name : str
        Dataset name for ``info.name`` and error messages (``"text"`` or ``"shakespeare"``).
    seq_len : int
        Characters per input window.
    by_speaker : bool
        Parse the file as a play script and record each training window's role in ``groups_train``.

    Returns
    -------
    Dataset
        ``task="next-token"``, ``info.vocab`` set, ``num_classes == len(vocab)``.
    """
    if seq_len < 1:
        raise ConfigError(f"{name}: seq_len must be >= 1, got {seq_len}")
    text = read_text(path, name=name)
    vocab = "".join(sorted(set(text)))
    if by_speaker:
        pieces = split_speakers(text)
        if not pieces:
            raise ConfigError(
                f"{name}: expected a play script with 'SPEAKER NAME:' lines opening blank-line separated "
                f"blocks in {path}, found none"
            )
    else:
        pieces = {"": text}
    xs_tr, ys_tr, gs_tr, xs_te, ys_te = [], [], [], [], []
    for role, piece in pieces.items():
        x, y = make_windows(_encode(piece, vocab), seq_len=seq_len)
        cut = len(x) - int(len(x) * TEST_FRACTION)
        xs_tr.append(x[:cut])
        ys_tr.append(y[:cut])
        gs_tr.append(np.full(cut, role))
        xs_te.append(x[cut:])
        ys_te.append(y[cut:])
    x_train, x_test = np.concatenate(xs_tr), np.concatenate(xs_te)
    if len(x_test) == 0:
        raise ConfigError(
            f"{name}: {path} gives {len(x_train)} windows of {seq_len + 1} characters"
            f"{' per role' if by_speaker else ''}; expected at least {round(1 / TEST_FRACTION)} "
            "(use a longer text or a smaller seq_len)"
        )
    info = DatasetInfo(
        name=name,
        input_shape=(seq_len,),
        num_classes=len(vocab),
        task="next-token",
        source=str(Path(path).expanduser().resolve()),
        vocab=vocab,
    )
    return Dataset(
        x_train=x_train,
        y_train=np.concatenate(ys_tr),
        x_test=x_test,
        y_test=np.concatenate(ys_te),
        info=info,
        groups_train=np.concatenate(gs_tr) if by_speaker else None,
    )


def _encode(text: str, vocab: str) -> np.ndarray:
    """Token ids (int32) of ``text`` under the sorted ``vocab``."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    return np.searchsorted(table, codepoints).astype(np.int32)
