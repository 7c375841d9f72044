"""CodeGen2's training objectives as a transform on the data loader's records.

CodeGen2 mixes causal LM with *within-file span corruption* (``CODEGEN.md`` section 4): in a
corrupted document, spans are replaced by sentinels ``<mask_1>``, ``<mask_2>``, ...; after the
document's ``<|endoftext|>`` comes ``<sep>`` and then the targets
``<mask_1> span_1 <eom> <mask_2> span_2 <eom> ...``. The loss counts only the targets. This is
the layout of the infill prompt (``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``), so a
model trained this way infills.

How records keep their length. Loader records are packed rows of ``seq_len`` tokens whose
``segment_ids`` mark document *pieces* (1, 2, ...; 0 = padding) and whose ``positions`` restart
per piece. The corrupted form of a piece is longer than the piece (``3 K + 2`` more tokens than
its body for K spans, one of which replaces the piece's own ``<|endoftext|>``), so each piece
keeps its slot (same place, same length, same segment id, positions ``0 ..``) and only the
*leading part* of its body that fits is corrupted: with slot length L and K spans, the first
``m = L - 3 K - 2`` body tokens are kept and the rest of the piece is dropped (it is not in
the record any more; a slot that is not even ``5 K + 2`` tokens long gets fewer spans, and one
under 7 tokens stays plain causal text). Rebuilding from the masked input and the targets gives
exactly the piece's first m tokens (:func:`uncorrupt`). A piece whose body already contains
``<sep>``, ``<eom>`` or a ``<mask_k>`` id is left as causal text (the layout would be ambiguous).

Spans (T5-style random segmentation): about ``noise_density`` of the kept tokens are noise, in
``K = round(noise / mean_span_length)`` spans (1 <= K <= ``max_spans``), separated by at least
one kept token. Which records are corrupted (a fraction ``span_corruption_ratio``) and where the
spans go is a pure function of (seed, global record index): resume and any process count see
the same data.

Loss mask: in a corrupted piece, True exactly on the targets (every token after ``<sep>``); in
an uncorrupted piece True on every token (causal LM); False on padding. With ``prefix_lm`` the
corrupted input of each piece (up to and including ``<sep>``) is the bidirectional prefix
(``prefix_mask``); the targets stay causal. Uncorrupted pieces have no prefix.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpecialIds:
    """Sentinel token ids. ``mask(k) = mask_end - k`` (``<mask_1>`` is the highest id)."""

    eos: int = 50256
    sep: int = 50317
    eom: int = 50318
    mask_end: int = 51200  # <mask_1> = 51199 ... <mask_881> = 50319 (CodeGen2)
    n_masks: int = 881

    def __post_init__(self) -> None:
        if self.n_masks < 1:
            raise ValueError(f"SpecialIds.n_masks must be >= 1, got {self.n_masks}")
        low = self.mask_end - self.n_masks
        if low < 0:
            raise ValueError(f"SpecialIds: mask ids {low}..{self.mask_end - 1} go below 0")
        named = {"eos": self.eos, "sep": self.sep, "eom": self.eom}
        for name, i in named.items():
            if i < 0:
                raise ValueError(f"SpecialIds.{name} must be >= 0, got {i}")
            if low <= i < self.mask_end:
                raise ValueError(f"SpecialIds.{name}={i} collides with the mask ids "
                                 f"{low}..{self.mask_end - 1}")  # fmt: skip
        if len(set(named.values())) != 3:
            raise ValueError(f"SpecialIds eos, sep and eom must differ, got {named}")

    @classmethod
    def codegen2(cls) -> SpecialIds:
        """The CodeGen2 / 2.5 layout: eos 50256, sep 50317, eom 50318, mask_k = 51200 - k."""
        return cls()

    def mask(self, k: int) -> int:
        """The id of ``<mask_k>`` (k = 1 .. n_masks)."""
        if not 1 <= k <= self.n_masks:
            raise ValueError(f"<mask_{k}> does not exist (1 .. {self.n_masks})")
        return self.mask_end - k

    @property
    def max_id(self) -> int:
        return max(self.eos, self.sep, self.eom, self.mask_end - 1)

    def check_vocab(self, vocab_size: int) -> None:
        """Raise if a model with ``vocab_size`` ids cannot hold every sentinel."""
        if self.max_id >= vocab_size:
            raise ValueError(
                f"the objectives' special ids go up to {self.max_id} (<mask_1>), but the model "
                f"vocab_size is {vocab_size}: use a CodeGen2-sized vocabulary (51200) or "
                f"SpecialIds for this vocabulary"
            )

    def is_special(self, tokens: np.ndarray) -> np.ndarray:
        """Sentinels that cannot appear in a body to corrupt: sep, eom and the mask ids."""
        low = self.mask_end - self.n_masks
        is_mask = (tokens >= low) & (tokens < self.mask_end)
        return (tokens == self.sep) | (tokens == self.eom) | is_mask


@dataclass(frozen=True)
class ObjectiveConfig:
    """Span corruption (CodeGen2) mixed with causal LM, optional prefix-LM."""

    span_corruption_ratio: float = 0.0  # fraction of records corrupted (0 = causal LM only)
    mean_span_length: float = 8.0  # tokens per span on average (code spans: lines, not words)
    max_spans: int = 16  # spans per document piece at most
    prefix_lm: bool = False  # bidirectional attention over the corrupted input
    seed: int = 0
    noise_density: float = 0.15  # fraction of a piece's kept body that is masked out

    def __post_init__(self) -> None:
        if not 0.0 <= self.span_corruption_ratio <= 1.0:
            raise ValueError(f"span_corruption_ratio must be in [0, 1], got "
                             f"{self.span_corruption_ratio}")  # fmt: skip
        if not self.mean_span_length >= 1.0:
            raise ValueError(f"mean_span_length must be >= 1, got {self.mean_span_length}")
        if self.max_spans < 1:
            raise ValueError(f"max_spans must be >= 1, got {self.max_spans}")
        if not 0.0 < self.noise_density < 1.0:
            raise ValueError(f"noise_density must be in (0, 1), got {self.noise_density}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")


# Shortest slot that can hold one span: 2 kept body tokens (1 noise, 1 kept) + 3 K + 2.
MIN_PIECE = 7


def _rng(seed: int, record: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, record, 0xC0DE2]))


def _split(rng: np.random.Generator, total: int, parts: int, minimum: int) -> np.ndarray:
    """``parts`` integers >= ``minimum`` summing to ``total`` (uniform over compositions)."""
    free = total - parts * minimum
    if free < 0 or parts < 1:
        raise AssertionError(f"cannot split {total} into {parts} parts >= {minimum}")
    bars = np.sort(rng.choice(free + parts - 1, parts - 1, replace=False))
    edges = np.concatenate([[-1], bars, [free + parts - 1]])
    return np.diff(edges) - 1 + minimum


def corrupt_piece(
    piece: np.ndarray, rng: np.random.Generator, *, config: ObjectiveConfig, ids: SpecialIds
) -> tuple[np.ndarray, int, int] | None:
    """The corrupted form of one piece, in the piece's own length.

    piece: (L,) tokens of one document piece (a trailing ``<|endoftext|>`` included if the
    piece has one). Returns (tokens (L,), m, n_input): the first ``m`` body tokens are kept,
    ``tokens[:n_input]`` is the corrupted input through ``<sep>`` and the rest the targets;
    None when the piece is left as causal text (too short, or sentinels in its body).
    """
    length = int(piece.size)
    body = piece[:-1] if length and piece[-1] == ids.eos else piece
    if length < MIN_PIECE or ids.is_special(body).any():
        return None
    k = round(body.size * config.noise_density / config.mean_span_length)
    k = max(1, min(k, config.max_spans, ids.n_masks))
    while k > 0 and length - 3 * k - 2 < 2 * k:  # room for k spans and k separators
        k -= 1
    if k == 0:
        return None
    m = length - 3 * k - 2  # kept body tokens (<= body.size: the slot only shrinks)
    noise = min(max(round(m * config.noise_density), k), m - k)
    spans = _split(rng, noise, k, 1)  # (k,) >= 1
    # kept runs: before span 1, between spans (>= 1 each), after span k
    gaps = _split(rng, m - noise - (k - 1), k + 1, 0)
    gaps[1:-1] += 1
    kept = body[:m]
    inputs: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    at = 0
    for j in range(k):
        inputs.append(kept[at : at + gaps[j]])
        at += gaps[j]
        sentinel = np.array([ids.mask(j + 1)], np.int32)
        inputs.append(sentinel)
        targets += [sentinel, kept[at : at + spans[j]], np.array([ids.eom], np.int32)]
        at += spans[j]
    inputs.append(kept[at:])
    inputs.append(np.array([ids.eos, ids.sep], np.int32))
    out = np.concatenate(inputs + targets).astype(np.int32)
    n_input = sum(x.size for x in inputs)
    if out.size != length:
        raise AssertionError(f"corrupted piece has {out.size} tokens, slot {length}")
    return out, m, n_input


def uncorrupt(tokens: np.ndarray, ids: SpecialIds) -> np.ndarray:
    """Rebuild the kept body from a corrupted piece (input, ``<|endoftext|><sep>``, targets):
    every ``<mask_k>`` of the input is replaced by the span that follows ``<mask_k>`` in the
    targets. Raises ValueError when ``tokens`` is not in that layout."""
    tokens = np.asarray(tokens)
    seps = np.flatnonzero(tokens == ids.sep)
    if seps.size != 1 or seps[0] == 0 or tokens[seps[0] - 1] != ids.eos:
        raise ValueError("not a corrupted piece: expected one '<|endoftext|><sep>'")
    inp, tgt = tokens[: seps[0] - 1], tokens[seps[0] + 1 :]
    spans: dict[int, np.ndarray] = {}
    at = 0
    while at < tgt.size:
        k = ids.mask_end - int(tgt[at])
        ends = np.flatnonzero(tgt[at:] == ids.eom)
        if not 1 <= k <= ids.n_masks or ends.size == 0 or k in spans:
            raise ValueError(f"bad target layout at target token {at}")
        spans[k] = tgt[at + 1 : at + ends[0]]
        at += int(ends[0]) + 1
    out: list[np.ndarray] = []
    for tok in inp:
        k = ids.mask_end - int(tok)
        if 1 <= k <= ids.n_masks:
            if k not in spans:
                raise ValueError(f"<mask_{k}> in the input has no target")
            out.append(spans.pop(k))
        else:
            out.append(np.array([tok]))
    if spans:
        raise ValueError(f"targets {sorted(spans)} have no <mask_k> in the input")
    return np.concatenate(out) if out else tokens[:0]


def _pieces(segment_ids: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) of every run of one non-zero segment id."""
    change = np.flatnonzero(np.diff(segment_ids)) + 1
    bounds = np.concatenate([[0], change, [segment_ids.size]])
    return [(int(a), int(b)) for a, b in itertools.pairwise(bounds) if segment_ids[a] != 0]


def apply_objectives(
    batch: Mapping[str, np.ndarray],
    *,
    config: ObjectiveConfig,
    first_record_index: int,
    ids: SpecialIds,
) -> dict[str, np.ndarray]:
    """Span-corrupt a deterministic ``span_corruption_ratio`` of the records of ``batch``.

    batch: loader records, (local_batch, seq_len) int arrays ``tokens``, ``segment_ids``,
    ``positions`` (other keys pass through). Record i of the batch has the global index
    ``first_record_index + i``; its fate depends only on (``config.seed``, that index).
    Returns the same keys and shapes (new arrays; the input is not modified) plus
    ``loss_mask`` (bool) and, with ``config.prefix_lm``, ``prefix_mask`` (bool).
    """
    for key in ("tokens", "segment_ids", "positions"):
        if key not in batch:
            raise ValueError(f"apply_objectives needs batch[{key!r}] (loader records)")
    tokens = np.array(batch["tokens"], dtype=np.int32)
    seg = np.asarray(batch["segment_ids"])
    if tokens.ndim != 2 or seg.shape != tokens.shape or batch["positions"].shape != tokens.shape:
        raise ValueError(
            f"tokens, segment_ids and positions must share one (batch, seq_len) shape, got "
            f"{tokens.shape}, {seg.shape}, {batch['positions'].shape}"
        )
    if first_record_index < 0:
        raise ValueError(f"first_record_index must be >= 0, got {first_record_index}")
    loss_mask = seg > 0
    prefix = np.zeros(tokens.shape, bool)
    for i in range(tokens.shape[0]):
        rng = _rng(config.seed, first_record_index + i)
        if not rng.random() < config.span_corruption_ratio:
            continue
        for a, b in _pieces(seg[i]):
            done = corrupt_piece(tokens[i, a:b], rng, config=config, ids=ids)
            if done is None:
                continue
            out, _, n_input = done
            tokens[i, a:b] = out
            loss_mask[i, a : a + n_input] = False
            prefix[i, a : a + n_input] = True
    result = {k: np.array(v) for k, v in batch.items()}
    result["tokens"] = tokens
    result["loss_mask"] = loss_mask
    if config.prefix_lm:
        result["prefix_mask"] = prefix
    return result
