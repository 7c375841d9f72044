"""Packing: jaxformer's rule, against the list reference; segment ids and positions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core.data.pack import PackConfig, Packer, pack_reference


def _pack(docs: list[list[int]], cfg: PackConfig) -> tuple[Packer, list]:
    packer = Packer(cfg)
    out = []
    for d in docs:
        out += packer.add(d)
    out += packer.finish()
    return packer, out


@settings(max_examples=60, deadline=None)
@given(
    docs=st.lists(st.lists(st.integers(1, 1000), max_size=40), max_size=12),
    seq_len=st.integers(2, 24),
    min_tail=st.integers(1, 8),
    final=st.sampled_from(["pad", "drop"]),
)
def test_matches_reference(docs: list[list[int]], seq_len: int, min_tail: int, final: str) -> None:
    cfg = PackConfig(
        seq_len=seq_len, min_tail=min(min_tail, seq_len), eos_id=0, pad_id=0, final=final
    )
    packer, out = _pack(docs, cfg)
    assert [s.tokens.tolist() for s in out] == pack_reference(docs, cfg)
    stats = packer.stats
    real = sum(int((s.segment_ids > 0).sum()) for s in out)
    assert real == stats.tokens_written
    assert stats.tokens_in == sum(len(d) + 1 for d in docs)
    for s in out:
        assert s.tokens.shape == (seq_len,)
        # positions restart at 0 at every segment and count up inside it
        for seg in np.unique(s.segment_ids[s.segment_ids > 0]):
            pos = s.positions[s.segment_ids == seg]
            assert pos.tolist() == list(range(pos.size))
        # segment ids are 1, 2, ... in order, then padding
        ids = s.segment_ids[s.segment_ids > 0]
        assert (np.diff(ids) >= 0).all() and ids[0] == 1


def test_jaxformer_tail_rule() -> None:
    cfg = PackConfig(seq_len=10, min_tail=3, eos_id=0, pad_id=-1)
    # doc 1 (5 + EOS) fits; doc 2 (7 + EOS) leaves a tail of 4 >= 3: carried.
    _, out = _pack([[1] * 5, [2] * 7], cfg)
    assert out[0].tokens.tolist() == [1, 1, 1, 1, 1, 0, 2, 2, 2, 2]
    assert out[1].tokens.tolist()[:4] == [2, 2, 2, 0]
    assert out[1].segment_ids.tolist() == [1] * 4 + [0] * 6
    # doc 2 (5 + EOS) leaves a tail of 2 < 3: dropped.
    packer, out = _pack([[1] * 5, [2] * 5], cfg)
    assert len(out) == 1 and packer.stats.tokens_dropped == 2 and packer.stats.tails_dropped == 1


def test_defaults_are_codegen() -> None:
    cfg = PackConfig()
    assert (cfg.seq_len, cfg.min_tail, cfg.eos_id) == (2048, 64, 50256)
    with pytest.raises(ValueError, match="min_tail"):
        PackConfig(seq_len=8, min_tail=9)
