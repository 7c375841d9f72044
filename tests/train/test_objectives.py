"""CodeGen2 span corruption on loader records: round trip, loss mask, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core.data.pack import PackConfig, Packer
from codegen_core.train.objectives import (
    MIN_PIECE,
    ObjectiveConfig,
    SpecialIds,
    apply_objectives,
    corrupt_piece,
    uncorrupt,
)

IDS = SpecialIds.codegen2()
EOS = IDS.eos


def _records(doc_lengths: list[int], seq_len: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Loader-like records: documents packed with the real packer (EOS appended)."""
    rng = np.random.default_rng(seed)
    packer = Packer(PackConfig(seq_len=seq_len, min_tail=4, eos_id=EOS, pad_id=EOS))
    seqs = []
    for n in doc_lengths:
        seqs += packer.add(rng.integers(0, EOS, n))
    seqs += packer.finish()
    return {
        "tokens": np.stack([s.tokens for s in seqs]).astype(np.int32),
        "segment_ids": np.stack([s.segment_ids for s in seqs]).astype(np.int32),
        "positions": np.stack([s.positions for s in seqs]).astype(np.int32),
    }


def _pieces(seg: np.ndarray) -> list[tuple[int, int]]:
    out, a = [], 0
    for t in range(1, seg.size + 1):
        if t == seg.size or seg[t] != seg[a]:
            if seg[a] != 0:
                out.append((a, t))
            a = t
    return out


def _check_record(orig: dict[str, np.ndarray], new: dict[str, np.ndarray], i: int) -> int:
    """Every invariant of one record; returns how many pieces were corrupted."""
    seg = orig["segment_ids"][i]
    np.testing.assert_array_equal(new["segment_ids"][i], seg)
    np.testing.assert_array_equal(new["positions"][i], orig["positions"][i])
    pad = seg == 0
    np.testing.assert_array_equal(new["tokens"][i][pad], orig["tokens"][i][pad])
    assert not new["loss_mask"][i][pad].any()
    corrupted = 0
    for a, b in _pieces(seg):
        old, got, lm = orig["tokens"][i, a:b], new["tokens"][i, a:b], new["loss_mask"][i, a:b]
        if np.array_equal(old, got):  # left as causal text: loss on every token, no prefix
            assert lm.all()
            if "prefix_mask" in new:
                assert not new["prefix_mask"][i, a:b].any()
            continue
        corrupted += 1
        n_spans = int(((got >= IDS.mask_end - IDS.n_masks) & (got < IDS.mask_end)).sum()) // 2
        kept = uncorrupt(got, IDS)
        # the kept leading part of the piece, exactly; 3 K + 2 tokens of the slot went to
        # sentinels (one of them replaces the piece's own EOS when it has one)
        assert kept.size == (b - a) - 3 * n_spans - 2
        np.testing.assert_array_equal(kept, old[: kept.size])
        sep = int(np.flatnonzero(got == IDS.sep)[0])
        assert got[sep - 1] == EOS and got[sep + 1] == IDS.mask(1) and got[-1] == IDS.eom
        # the loss counts exactly the targets: everything after <sep>
        np.testing.assert_array_equal(lm, np.arange(b - a) > sep)
        if "prefix_mask" in new:
            np.testing.assert_array_equal(new["prefix_mask"][i, a:b], np.arange(b - a) <= sep)
    return corrupted


def test_round_trip_and_loss_mask_on_packed_records() -> None:
    batch = _records([40, 300, 3, 120, 9, 500, 64, 20], seq_len=128)
    cfg = ObjectiveConfig(span_corruption_ratio=1.0, mean_span_length=4.0, prefix_lm=True)
    out = apply_objectives(batch, config=cfg, first_record_index=10, ids=IDS)
    assert set(out) == {"tokens", "segment_ids", "positions", "loss_mask", "prefix_mask"}
    for key in out:
        assert out[key].shape == batch["tokens"].shape
    assert out["loss_mask"].dtype == bool and out["prefix_mask"].dtype == bool
    assert out["tokens"].dtype == np.int32
    corrupted = sum(_check_record(batch, out, i) for i in range(len(batch["tokens"])))
    n_long = sum(b - a >= MIN_PIECE for i in range(len(batch["tokens"]))
                 for a, b in _pieces(batch["segment_ids"][i]))  # fmt: skip
    assert corrupted == n_long > 5  # ratio 1: every piece long enough is corrupted
    # the input batch is untouched
    again = _records([40, 300, 3, 120, 9, 500, 64, 20], seq_len=128)
    for key in batch:
        np.testing.assert_array_equal(batch[key], again[key])


def test_causal_only_and_no_prefix_by_default() -> None:
    batch = _records([30, 50, 70], seq_len=64)
    out = apply_objectives(batch, config=ObjectiveConfig(), first_record_index=0, ids=IDS)
    np.testing.assert_array_equal(out["tokens"], batch["tokens"])
    np.testing.assert_array_equal(out["loss_mask"], batch["segment_ids"] > 0)
    assert "prefix_mask" not in out
    out = apply_objectives(batch, config=ObjectiveConfig(prefix_lm=True), first_record_index=0,
                           ids=IDS)  # fmt: skip
    assert not out["prefix_mask"].any()


def test_spans_follow_the_config() -> None:
    """K = round(body * density / mean_span_length) spans, capped by max_spans; about
    ``noise_density`` of the kept tokens are masked."""
    piece = np.arange(1000, 1201, dtype=np.int32)
    piece[-1] = EOS  # a 200-token body and its EOS
    for mean, cap, want in ((8.0, 16, 4), (2.0, 16, 15), (2.0, 5, 5)):
        cfg = ObjectiveConfig(mean_span_length=mean, max_spans=cap)
        out, m, n_input = corrupt_piece(piece, np.random.default_rng(0), config=cfg, ids=IDS)
        assert m == piece.size - 3 * want - 2
        masks = [IDS.mask(k) for k in range(1, want + 1)]
        assert [t for t in out[:n_input] if t >= IDS.mask_end - IDS.n_masks] == masks
        assert n_input - want - 2 == m - round(0.15 * m)  # kept tokens in the input
    assert corrupt_piece(piece[: MIN_PIECE - 1], np.random.default_rng(0),
                         config=ObjectiveConfig(), ids=IDS) is None  # fmt: skip
    sentinel = piece.copy()
    sentinel[50] = IDS.sep  # a body that already holds a sentinel stays causal text
    assert corrupt_piece(sentinel, np.random.default_rng(0), config=ObjectiveConfig(),
                         ids=IDS) is None  # fmt: skip


def test_deterministic_per_seed_and_record_index() -> None:
    batch = _records([90] * 12, seq_len=64, seed=3)
    cfg = ObjectiveConfig(span_corruption_ratio=0.5, seed=7)
    full = apply_objectives(batch, config=cfg, first_record_index=100, ids=IDS)
    again = apply_objectives(batch, config=cfg, first_record_index=100, ids=IDS)
    for key in full:
        np.testing.assert_array_equal(full[key], again[key])
    # any split of the batch over processes sees the same records
    for start in range(0, len(batch["tokens"]), 3):
        part = {k: v[start : start + 3] for k, v in batch.items()}
        got = apply_objectives(part, config=cfg, first_record_index=100 + start, ids=IDS)
        for key in full:
            np.testing.assert_array_equal(got[key], full[key][start : start + 3])
    other = apply_objectives(batch, config=ObjectiveConfig(span_corruption_ratio=0.5, seed=8),
                             first_record_index=100, ids=IDS)  # fmt: skip
    assert not np.array_equal(other["tokens"], full["tokens"])


def test_corruption_ratio() -> None:
    """Over 400 records the corrupted fraction is within 5 sigma of the ratio."""
    row = _records([60], seq_len=61)  # one full-length piece per record
    batch = {k: np.repeat(v, 400, axis=0) for k, v in row.items()}
    for ratio in (0.0, 0.3, 1.0):
        cfg = ObjectiveConfig(span_corruption_ratio=ratio)
        out = apply_objectives(batch, config=cfg, first_record_index=0, ids=IDS)
        frac = (out["tokens"] != batch["tokens"]).any(1).mean()
        assert abs(frac - ratio) <= 5 * np.sqrt(ratio * (1 - ratio) / 400) + 1e-9, (ratio, frac)


def test_special_ids_and_bad_input() -> None:
    assert (IDS.eos, IDS.sep, IDS.eom, IDS.mask(1), IDS.mask(881)) == (
        50256, 50317, 50318, 51199, 50319)  # fmt: skip
    IDS.check_vocab(51200)
    with pytest.raises(ValueError, match="vocab_size is 50295"):
        IDS.check_vocab(50295)
    with pytest.raises(ValueError, match="mask_882"):
        IDS.mask(882)
    with pytest.raises(ValueError, match="collides with the mask ids"):
        SpecialIds(eos=51199)
    with pytest.raises(ValueError, match="span_corruption_ratio"):
        ObjectiveConfig(span_corruption_ratio=1.5)
    with pytest.raises(ValueError, match="mean_span_length"):
        ObjectiveConfig(mean_span_length=0.5)
    with pytest.raises(ValueError, match="needs batch\\['positions'\\]"):
        apply_objectives({"tokens": np.zeros((1, 4)), "segment_ids": np.zeros((1, 4))},
                         config=ObjectiveConfig(), first_record_index=0, ids=IDS)  # fmt: skip
    with pytest.raises(ValueError, match="not a corrupted piece"):
        uncorrupt(np.array([1, 2, 3]), IDS)
    # a small vocabulary gets its own sentinel layout
    small = SpecialIds(eos=95, sep=94, eom=93, mask_end=93, n_masks=16)
    small.check_vocab(96)
    assert small.mask(1) == 92


@st.composite
def _cases(draw: st.DrawFn) -> tuple[list[int], int, ObjectiveConfig, int]:
    docs = draw(st.lists(st.integers(1, 90), min_size=1, max_size=8))
    seq_len = draw(st.integers(8, 96))
    cfg = ObjectiveConfig(
        span_corruption_ratio=1.0, mean_span_length=draw(st.floats(1.0, 12.0)),
        noise_density=draw(st.floats(0.05, 0.6)), max_spans=draw(st.integers(1, 20)),
        seed=draw(st.integers(0, 2**31)), prefix_lm=True,
    )  # fmt: skip
    return docs, seq_len, cfg, draw(st.integers(0, 10**9))


@settings(max_examples=60, deadline=None)
@given(case=_cases())
def test_hypothesis_round_trip(case: tuple[list[int], int, ObjectiveConfig, int]) -> None:
    docs, seq_len, cfg, first = case
    batch = _records(docs, seq_len=seq_len, seed=cfg.seed % 1000)
    out = apply_objectives(batch, config=cfg, first_record_index=first, ids=IDS)
    corrupted = sum(_check_record(batch, out, i) for i in range(len(batch["tokens"])))
    long_pieces = sum(b - a >= MIN_PIECE for i in range(len(batch["tokens"]))
                      for a, b in _pieces(batch["segment_ids"][i]))  # fmt: skip
    assert corrupted == long_pieces


def test_prefix_lm_batch_through_the_model_has_no_leak() -> None:
    """A corrupted record through ``forward`` with its prefix mask: the input part (through
    ``<sep>``) is bidirectional but never sees the targets; other documents stay invisible."""
    import jax  # noqa: PLC0415  (the model is only needed here)
    import jax.numpy as jnp  # noqa: PLC0415

    from codegen_core.model.config import get_preset  # noqa: PLC0415
    from codegen_core.model.transformer import forward, init  # noqa: PLC0415

    config = get_preset("tiny-codegen")  # vocab 96: sentinels at the top of it
    ids = SpecialIds(eos=95, sep=94, eom=93, mask_end=93, n_masks=16)
    ids.check_vocab(config.vocab_size)
    rng = np.random.default_rng(0)
    packer = Packer(PackConfig(seq_len=48, min_tail=4, eos_id=ids.eos, pad_id=ids.eos))
    seqs = packer.add(rng.integers(0, 77, 25)) + packer.add(rng.integers(0, 77, 14))
    seqs += packer.finish()
    batch = {k: np.stack([getattr(s, k) for s in seqs]) for k in
             ("tokens", "segment_ids", "positions")}  # fmt: skip
    cfg = ObjectiveConfig(span_corruption_ratio=1.0, mean_span_length=3.0, prefix_lm=True)
    out = apply_objectives(batch, config=cfg, first_record_index=0, ids=ids)
    sep = int(np.flatnonzero(out["tokens"][0] == ids.sep)[0])
    assert (out["segment_ids"][0, :26] == 1).all() and out["segment_ids"][0, 26] == 2
    assert out["prefix_mask"][0, : sep + 1].all() and not out["prefix_mask"][0, sep + 1 : 26].any()
    params = init(config, jax.random.key(0))

    def logits(tokens: np.ndarray) -> np.ndarray:
        return np.asarray(forward(params, jnp.asarray(tokens), config,
                                  segment_ids=jnp.asarray(out["segment_ids"]),
                                  positions=jnp.asarray(out["positions"]),
                                  prefix_mask=jnp.asarray(out["prefix_mask"]))[0])  # fmt: skip

    ref = logits(out["tokens"])
    changed = out["tokens"].copy()
    changed[0, sep + 2] = (changed[0, sep + 2] + 1) % 77  # a target token of document 1
    moved = np.abs(logits(changed) - ref).max(-1)[0] > 1e-6  # (T,)
    assert not moved[: sep + 2].any()  # the input part and earlier targets never see it
    assert moved[sep + 2 : 26].all()  # later targets of the same document do
    assert not moved[26:].any()  # the second document does not
