"""Character-level next-token data from a plain text file or a play script.

Vocabulary
----------
The vocabulary is public metadata, fixed before any file is read; it is never derived from the
(private) text. Token id ``i`` decodes to ``vocab[i]``, and the model's output size
``num_classes`` is ``len(vocab)``. A vocabulary built from the characters found in the training
file would be a data-dependent release that no DP ledger counts: one rare character used by a
single speaker would show up in the vocabulary, the model's shape and the run record.

The default, :data:`ASCII_VOCAB`, has 97 tokens:

- id 0: the out-of-vocabulary id :data:`OOV_ID`; every character outside the vocabulary (tab,
  carriage return, accented letters, emoji, ...) is encoded as 0, which decodes to
  :data:`OOV_MARKER`, U+FFFD REPLACEMENT CHARACTER (not ``"?"``, which is an ordinary token);
- id 1: newline ``"\\n"``;
- ids 2-96: the printable ASCII characters, code points 32 (space) to 126 (``"~"``) in order,
  so character ``c`` has id ``ord(c) - 30``.

A custom alphabet is passed as ``vocab=`` to :func:`load_text`: a string that starts with
:data:`OOV_MARKER` (id 0) followed by distinct characters, in the order of their ids (e.g.
``OOV_MARKER + "abc"``). It must come from public knowledge, never from the file. How many
characters of a file fell outside the vocabulary is itself data-dependent, so it is neither
printed nor stored.

Windows
-------
The text is cut into non-overlapping windows of ``seq_len + 1`` characters; for a window ``w`` the
input is ``w[:-1]`` and the target ``w[1:]`` (int32 ids, both ``(N, seq_len)``).

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
# The public default vocabulary (97 tokens, see the module docstring): id 0 is out-of-vocabulary and
# decodes to U+FFFD, id 1 is newline, ids 2-96 are the printable ASCII characters 32..126.
OOV_ID = 0
OOV_MARKER = "\ufffd"
ASCII_VOCAB = OOV_MARKER + "\n" + "".join(chr(c) for c in range(32, 127))
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


def load_text(
    path: str | os.PathLike[str],
    *,
    name: str,
    seq_len: int = 80,
    by_speaker: bool = False,
    vocab: str = ASCII_VOCAB,
) -> Dataset:
    """Load a text file as character-level next-token data over a fixed public vocabulary.

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
    vocab : str
        The token table, public and fixed in advance (see :func:`check_vocab`): ``vocab[0]`` is
        :data:`OOV_MARKER`, the other characters get ids 1, 2, ... in order. Default
        :data:`ASCII_VOCAB` (97 tokens).

    Returns
    -------
    Dataset
        ``task="next-token"``, ``info.vocab == vocab``, ``num_classes == len(vocab)``; characters
        outside ``vocab`` are encoded as :data:`OOV_ID`.
    """
    if seq_len < 1:
        raise ConfigError(f"{name}: seq_len must be >= 1, got {seq_len}")
    check_vocab(vocab, name=name)
    text = read_text(path, name=name)
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
        x, y = make_windows(encode(piece, vocab=vocab), seq_len=seq_len)
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


def check_vocab(vocab: str, *, name: str = "vocab") -> None:
    """Check a token table: :data:`OOV_MARKER` first, then at least one character, none repeated.

    Raises
    ------
    ConfigError
        When ``vocab`` breaks one of these rules or holds a lone surrogate (not a character).
    """
    if not isinstance(vocab, str) or len(vocab) < 2:
        raise ConfigError(f"{name}: vocab must be a string of at least 2 characters, got {vocab!r}")
    if vocab[0] != OOV_MARKER:
        raise ConfigError(
            f"{name}: vocab must start with the out-of-vocabulary marker {OOV_MARKER!r} (token {OOV_ID}), "
            f"got {vocab[0]!r}"
        )
    try:
        vocab.encode("utf-32-le")
    except UnicodeEncodeError as exc:
        raise ConfigError(f"{name}: vocab must hold Unicode characters, got {exc.object[exc.start]!r}") from exc
    if len(set(vocab)) != len(vocab):
        repeated = sorted({c for c in vocab if vocab.count(c) > 1})
        raise ConfigError(f"{name}: vocab must not repeat a character, got {repeated} more than once")


def encode(text: str, *, vocab: str = ASCII_VOCAB) -> np.ndarray:
    """Token ids (int32, ``(len(text),)``) of ``text``; a character outside ``vocab`` becomes :data:`OOV_ID`."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.frombuffer(vocab.encode("utf-32-le"), dtype=np.uint32)
    order = np.argsort(table, kind="stable")
    ordered = table[order]
    slot = np.minimum(np.searchsorted(ordered, codepoints), len(ordered) - 1)
    found = ordered[slot] == codepoints
    return np.where(found, order[slot], OOV_ID).astype(np.int32)


def decode(ids: np.ndarray, *, vocab: str = ASCII_VOCAB) -> str:
    """The text of token ``ids`` (any shape, flattened in C order); :data:`OOV_ID` gives :data:`OOV_MARKER`."""
    flat = np.asarray(ids).reshape(-1)
    if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= len(vocab)):
        raise ConfigError(f"token ids must lie in [0, {len(vocab)}), got range [{int(flat.min())}, {int(flat.max())}]")
    return "".join(vocab[i] for i in flat.tolist())
