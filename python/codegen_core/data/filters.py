"""CodeGen's file filters, with a count of what each one dropped.

CodeGen (Nijkamp et al. 2022, appendix) drops files whose mean line length is > 100, whose
longest line is > 1000 characters, or that are > 90% decimal/hex digits (data tables and
blobs, not code). We also drop what cannot be source: wrong extension, empty, binary (NUL
bytes), not valid UTF-8, unreadable, and files too large to be hand-written code.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from codegen_core import _core

# Reasons, in the order they are checked.
UNREADABLE = "unreadable"
EXTENSION = "extension"
TOO_LARGE = "too_large"
EMPTY = "empty"
BINARY = "binary"
NOT_UTF8 = "not_utf8"
MEAN_LINE_LENGTH = "mean_line_length"
MAX_LINE_LENGTH = "max_line_length"
DIGIT_FRACTION = "digit_fraction"

_HEX_DIGITS = "0123456789abcdefABCDEF"
_WHITESPACE = " \t\n\r\f\v"
_HEX_BYTES = np.frombuffer(_HEX_DIGITS.encode(), dtype=np.uint8)
_WHITESPACE_BYTES = np.frombuffer(_WHITESPACE.encode(), dtype=np.uint8)


@dataclass(frozen=True)
class FilterConfig:
    """Thresholds of the filters (defaults: CodeGen's)."""

    extensions: tuple[str, ...] = (".py",)  # empty tuple: keep every extension
    max_file_bytes: int = 1 << 20  # larger files are generated or data, and slow everything
    max_mean_line_length: float = 100.0
    max_line_length: int = 1000
    max_digit_fraction: float = 0.9  # of non-whitespace characters that are [0-9a-fA-F]

    def __post_init__(self) -> None:
        if self.max_file_bytes <= 0:
            raise ValueError(f"max_file_bytes must be positive, got {self.max_file_bytes}")
        if not 0.0 < self.max_digit_fraction <= 1.0:
            raise ValueError(f"max_digit_fraction must be in (0, 1], got {self.max_digit_fraction}")


@dataclass
class FilterStats:
    """How many documents were seen and kept, and why the others were dropped."""

    seen: int = 0
    kept: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)  # reason -> a few names

    MAX_EXAMPLES = 5  # names kept per reason

    def record(self, name: str, reason: str | None) -> None:
        self.seen += 1
        if reason is None:
            self.kept += 1
            return
        self.dropped[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.MAX_EXAMPLES:
            shown.append(name)

    def merge(self, other: FilterStats) -> None:
        """Add ``other``'s counts (a later part of the same input) to these; examples keep
        their first :attr:`MAX_EXAMPLES` names in input order."""
        self.seen += other.seen
        self.kept += other.kept
        self.dropped.update(other.dropped)
        for reason, names in other.examples.items():
            shown = self.examples.setdefault(reason, [])
            shown.extend(names[: self.MAX_EXAMPLES - len(shown)])

    def as_dict(self) -> dict[str, object]:
        return {
            "seen": self.seen,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "examples": {k: list(v) for k, v in sorted(self.examples.items())},
        }


def extension_ok(name: str, config: FilterConfig) -> bool:
    """True if ``name`` ends with one of the configured extensions (or none are configured)."""
    return not config.extensions or name.lower().endswith(config.extensions)


def decode_source(data: bytes, config: FilterConfig) -> tuple[str | None, str | None]:
    """Bytes -> (text, None) if the file passes the byte-level checks, else (None, reason)."""
    if len(data) > config.max_file_bytes:
        return None, TOO_LARGE
    if not data.strip():
        return None, EMPTY
    if b"\x00" in data:
        return None, BINARY
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None, NOT_UTF8
    return text, None


def content_reason(text: str, config: FilterConfig) -> str | None:
    """The CodeGen content filters on decoded text: the reason to drop it, or None to keep.

    Lines are split on "\\n" only (a final newline does not start a new line); lengths count
    characters. Vectorised over the UTF-8 bytes; :func:`content_reason_reference` is the
    plain-Python definition it is tested against.
    """
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    counts = np.bincount(data, minlength=256)
    whitespace = int(counts[_WHITESPACE_BYTES].sum())
    if whitespace == data.size:
        return EMPTY
    char_start = (data & 0xC0) != 0x80  # UTF-8 lead bytes: one per character
    chars = int(np.count_nonzero(char_start))
    newlines = np.flatnonzero(data == 0x0A)
    num_lines = newlines.size + (0 if data[-1] == 0x0A else 1)
    if (chars - newlines.size) / num_lines > config.max_mean_line_length:
        return MEAN_LINE_LENGTH
    # Character index of every newline, then line lengths as gaps between them.
    chars_before = np.cumsum(char_start)[newlines] - 1 if newlines.size else newlines
    bounds = np.concatenate(([-1], chars_before, [chars]))
    if int(np.max(np.diff(bounds))) - 1 > config.max_line_length:
        return MAX_LINE_LENGTH
    non_space = chars - whitespace
    digits = int(counts[_HEX_BYTES].sum())
    if digits / non_space > config.max_digit_fraction:
        return DIGIT_FRACTION
    return None


def content_reason_reference(text: str, config: FilterConfig) -> str | None:
    """:func:`content_reason`, spelled out in plain Python."""
    if not text.strip(_WHITESPACE):
        return EMPTY
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    if sum(len(line) for line in lines) / len(lines) > config.max_mean_line_length:
        return MEAN_LINE_LENGTH
    if max(len(line) for line in lines) > config.max_line_length:
        return MAX_LINE_LENGTH
    non_space = sum(1 for c in text if c not in _WHITESPACE)
    digits = sum(1 for c in text if c in _HEX_DIGITS)
    if digits / non_space > config.max_digit_fraction:
        return DIGIT_FRACTION
    return None


def document_reason(doc: str | bytes, config: FilterConfig) -> str | None:
    """The per-document definition behind :func:`content_reasons`: for bytes, the byte-level
    checks of :func:`decode_source` then :func:`content_reason` on the decoded text; for str,
    :func:`content_reason` alone."""
    if isinstance(doc, bytes):
        text, reason = decode_source(doc, config)
        if text is None:
            return reason
        doc = text
    return content_reason(doc, config)


# The native reason codes (csrc/data/filters.h), as this module's names; code 0 keeps.
REASON_OF_CODE: tuple[str | None, ...] = tuple(n or None for n in _core.filter_reason_names())


def native_options(config: FilterConfig) -> tuple[int, float, float, float]:
    """The thresholds as ``_core.filter_documents``/``read_filter_files`` take them. Sizes
    compare as integers (``len > max_file_bytes`` iff ``len > floor(max_file_bytes)``); the
    others as doubles, which is what Python compares for thresholds below 2**53."""
    return (
        min(math.floor(config.max_file_bytes), (1 << 64) - 1),
        float(config.max_mean_line_length),
        float(config.max_line_length),
        float(config.max_digit_fraction),
    )


def content_reasons_and_digests(
    texts: Sequence[str | bytes], config: FilterConfig, *, num_threads: int = 0
) -> tuple[list[str | None], list[bytes | None]]:
    """:func:`content_reasons` and, for each kept document, its
    :func:`codegen_core.data.exact.content_hash` (None for a dropped one): one native call,
    GIL released, on ``num_threads`` threads (0: all cores)."""
    if not isinstance(texts, list | tuple):
        texts = list(texts)
    codes, digests = _core.filter_documents(texts, *native_options(config), num_threads)
    reasons = [REASON_OF_CODE[c] for c in codes]
    return reasons, [
        None if r is not None else digests[16 * i : 16 * i + 16] for i, r in enumerate(reasons)
    ]


def content_reasons(
    texts: Sequence[str | bytes], config: FilterConfig, *, num_threads: int = 0
) -> list[str | None]:
    """The drop reason (or None to keep) of every document of a batch, in order: exactly
    :func:`document_reason` of each (bytes get the byte-level checks too: too_large, empty,
    binary, not_utf8; str only the content filters). One native call per block of documents
    (csrc/data/filters.h), GIL released, on ``num_threads`` threads (0: all cores).

    >>> content_reasons(["x = 1\\n", b"", b"\\x00", "  "], FilterConfig())
    [None, 'empty', 'binary', 'empty']
    """
    return content_reasons_and_digests(texts, config, num_threads=num_threads)[0]
