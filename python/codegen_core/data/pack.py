"""Pack tokenized documents into fixed-length training sequences.

Each document gets EOS appended and is laid into the current sequence. The packing rule is
jaxformer's (CodeGen1): when a document does not fit, the part that fits ends the current
sequence and the rest (the tail) starts the next one if it has at least ``min_tail`` tokens;
a shorter tail is dropped (a few tokens of context-free continuation teach little). A tail
longer than a sequence is split again by the same rule.

Every sequence carries, beside its tokens, ``segment_ids`` (1, 2, ... per document piece; 0
for padding) and ``positions`` (index within the piece), so attention can be restricted to
one document and position ids restart at each document.

    >>> packer = Packer(PackConfig(seq_len=8, min_tail=2, eos_id=0, pad_id=0))
    >>> out = packer.add([5, 6, 7]) + packer.add([1, 2, 3, 4, 5, 6]) + packer.finish()
    >>> [s.tokens.tolist() for s in out]
    [[5, 6, 7, 0, 1, 2, 3, 4], [5, 6, 0, 0, 0, 0, 0, 0]]
    >>> out[0].segment_ids.tolist(), out[1].positions.tolist()
    ([1, 1, 1, 1, 2, 2, 2, 2], [0, 1, 2, 0, 0, 0, 0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np


@dataclass(frozen=True)
class PackConfig:
    seq_len: int = 2048
    min_tail: int = 64  # jaxformer: shorter tails of split documents are dropped
    eos_id: int = 50256  # appended to every document (CodeGen's <|endoftext|>)
    pad_id: int = 50256  # fills the last sequence; its segment id is 0, so it is masked
    final: Literal["pad", "drop"] = "pad"  # what to do with the last, partial sequence

    def __post_init__(self) -> None:
        if self.seq_len < 2:
            raise ValueError(f"seq_len must be >= 2, got {self.seq_len}")
        if not 1 <= self.min_tail <= self.seq_len:
            raise ValueError(f"min_tail must be in [1, seq_len], got {self.min_tail}")
        if self.final not in ("pad", "drop"):
            raise ValueError(f"final must be 'pad' or 'drop', got {self.final!r}")


@dataclass(frozen=True)
class PackedSequence:
    tokens: np.ndarray  # int32 [seq_len]
    segment_ids: np.ndarray  # int32 [seq_len], 0 = padding
    positions: np.ndarray  # int32 [seq_len]


@dataclass
class PackStats:
    documents: int = 0
    tokens_in: int = 0  # including the appended EOS
    tokens_dropped: int = 0  # short tails
    tails_dropped: int = 0
    sequences: int = 0
    padding: int = 0

    @property
    def tokens_written(self) -> int:
        return self.tokens_in - self.tokens_dropped


class Packer:
    """Streaming packer: ``add`` documents, collect the sequences it completes, ``finish``."""

    def __init__(self, config: PackConfig | None = None) -> None:
        config = config if config is not None else PackConfig()
        self.config = config
        self.stats = PackStats()
        n = config.seq_len
        self._tokens = np.empty(n, dtype=np.int32)
        self._segments = np.empty(n, dtype=np.int32)
        self._positions = np.empty(n, dtype=np.int32)
        self._fill = 0
        self._segment = 0

    def _place(self, piece: np.ndarray) -> None:
        end = self._fill + piece.size
        self._segment += 1
        self._tokens[self._fill : end] = piece
        self._segments[self._fill : end] = self._segment
        self._positions[self._fill : end] = np.arange(piece.size, dtype=np.int32)
        self._fill = end

    def _emit(self) -> PackedSequence:
        n = self.config.seq_len
        pad = n - self._fill
        self._tokens[self._fill :] = self.config.pad_id
        self._segments[self._fill :] = 0
        self._positions[self._fill :] = 0
        seq = PackedSequence(self._tokens.copy(), self._segments.copy(), self._positions.copy())
        self.stats.sequences += 1
        self.stats.padding += pad
        self._fill = 0
        self._segment = 0
        return seq

    def add(self, tokens: Sequence[int] | np.ndarray) -> list[PackedSequence]:
        """Append EOS to one document, pack it, and return the sequences it completed."""
        doc = np.empty(len(tokens) + 1, dtype=np.int32)
        doc[:-1] = tokens
        doc[-1] = self.config.eos_id
        self.stats.documents += 1
        self.stats.tokens_in += doc.size
        n = self.config.seq_len
        done: list[PackedSequence] = []
        while doc.size:
            space = n - self._fill
            if doc.size <= space:
                self._place(doc)
                if self._fill == n:
                    done.append(self._emit())
                break
            self._place(doc[:space])
            done.append(self._emit())
            doc = doc[space:]
            if doc.size < self.config.min_tail:
                self.stats.tokens_dropped += doc.size
                self.stats.tails_dropped += 1
                break
        return done

    def finish(self) -> list[PackedSequence]:
        """The last, partial sequence (padded), or nothing with ``final="drop"``."""
        if self._fill == 0:
            return []
        if self.config.final == "drop":
            self.stats.tokens_dropped += self._fill
            self._fill = 0
            self._segment = 0
            return []
        return [self._emit()]


def pack_reference(docs: Sequence[Sequence[int]], config: PackConfig) -> list[list[int]]:
    """The packing rule in plain Python lists (tokens only), for tests."""
    out: list[list[int]] = []
    cur: list[int] = []
    for d in docs:
        doc = [*d, config.eos_id]
        while doc:
            space = config.seq_len - len(cur)
            if len(doc) <= space:
                cur += doc
                doc = []
            else:
                cur += doc[:space]
                doc = doc[space:]
                if len(doc) < config.min_tail:
                    doc = []
            if len(cur) == config.seq_len:
                out.append(cur)
                cur = []
    if cur and config.final == "pad":
        out.append(cur + [config.pad_id] * (config.seq_len - len(cur)))
    return out
