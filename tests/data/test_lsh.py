"""Near-dedup: accuracy against exact Jaccard (brute force), clustering, streaming, merging."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from codegen_core import _core
from codegen_core.data import accuracy
from codegen_core.data.lsh import NearDuplicateIndex, near_dedup
from codegen_core.data.minhash import MinHashConfig, candidate_probability, minhash_signatures


@pytest.fixture(scope="module")
def mutants() -> list[str]:
    return accuracy.synthetic_mutants(0, families=30, mutants=6, length=300)


@pytest.fixture(scope="module")
def truth(mutants: list[str]) -> dict[tuple[int, int], float]:
    return accuracy.exact_similar_pairs(accuracy.shingle_sets(mutants), 0.85)


def _pairs(arr: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in arr}


def test_prefix_join_equals_all_pairs(mutants: list[str], truth: dict) -> None:
    sets = accuracy.shingle_sets(mutants[:70])
    brute = {}
    for i, j in itertools.combinations(range(len(sets)), 2):
        jac = accuracy.exact_jaccard(sets[i], sets[j])
        if jac >= 0.85:
            brute[(i, j)] = jac
    assert brute == accuracy.exact_similar_pairs(sets, 0.85)
    assert brute == {k: v for k, v in truth.items() if k[1] < 70}
    assert len(truth) > 50  # the mutants do straddle the threshold
    assert min(truth.values()) < 0.9


def test_precision_recall_beat_datasketch(mutants: list[str], truth: dict) -> None:
    result = near_dedup(mutants, MinHashConfig(num_threads=2))
    precision, recall = accuracy.pair_scores(_pairs(result.duplicate_pairs()), set(truth))
    assert precision >= 0.97 and recall >= 0.97, (precision, recall)

    datasketch = pytest.importorskip("datasketch")
    cfg = MinHashConfig()
    lsh = datasketch.MinHashLSH(
        threshold=cfg.threshold, num_perm=cfg.num_perm, weights=(cfg.fp_weight, cfg.fn_weight)
    )
    assert (lsh.b, lsh.r) == cfg.lsh_params()
    for i, s in enumerate(accuracy.shingle_sets(mutants)):  # the very same shingles
        m = datasketch.MinHash(num_perm=cfg.num_perm, seed=1)
        m.update_batch([int(x).to_bytes(4, "little") for x in s])
        lsh.insert(i, m)
        predicted = {(j, i) for j in lsh.query(m) if j != i}
        if i == 0:
            theirs: set[tuple[int, int]] = set()
        theirs |= predicted
    ds_precision, ds_recall = accuracy.pair_scores(theirs, set(truth))
    assert precision >= ds_precision and recall >= ds_recall - 0.01, (ds_precision, ds_recall)


def test_verification_modes(mutants: list[str], truth: dict) -> None:
    none = near_dedup(mutants, MinHashConfig(verify="none"))
    sig = near_dedup(mutants, MinHashConfig(verify="signature"))
    exact = near_dedup(mutants, MinHashConfig(verify="exact"))
    np.testing.assert_array_equal(none.pairs, exact.pairs)
    assert np.isnan(none.similarity).all() and none.duplicate.all()
    # The C++ exact similarities of candidate pairs are the numpy ones.
    sets = accuracy.shingle_sets(mutants)
    expected = [accuracy.exact_jaccard(sets[i], sets[j]) for i, j in exact.pairs]
    np.testing.assert_allclose(exact.similarity, expected, rtol=0, atol=1e-12)
    # The signature estimate is within 5 standard deviations of them.
    sd = np.sqrt(exact.similarity * (1 - exact.similarity) / 256)
    assert (np.abs(sig.similarity - exact.similarity) <= 5 * sd + 1e-9).all()


def test_keeps_first_of_each_cluster_deterministically() -> None:
    base = "".join(f"value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 200))
    near = base.replace("value_17 ", "value_x ")
    docs = ["other = 1\n" * 3, near, base, "", base + "# tail\n"]
    result = near_dedup(docs)
    assert result.keep.tolist() == [True, True, False, True, False]
    assert result.roots.tolist() == [0, 1, 1, 3, 1]
    assert [c.tolist() for c in result.clusters()] == [[1, 2, 4]]
    again = near_dedup(list(docs))
    np.testing.assert_array_equal(result.roots, again.roots)


def test_streaming_batches_and_merged_shards_match_one_call(mutants: list[str]) -> None:
    cfg = MinHashConfig(verify="signature")
    whole = near_dedup(mutants, cfg)
    index = NearDuplicateIndex(cfg)
    for start in range(0, len(mutants), 37):
        index.add(mutants[start : start + 37])
    np.testing.assert_array_equal(index.find_duplicates().roots, whole.roots)
    merged = NearDuplicateIndex(cfg)
    for part in (mutants[:100], mutants[100:]):  # e.g. signatures computed on two machines
        merged.add_signatures(*minhash_signatures(part, cfg))
    np.testing.assert_array_equal(merged.find_duplicates().roots, whole.roots)


def test_exact_verification_fetches_only_candidates(mutants: list[str]) -> None:
    index = NearDuplicateIndex(MinHashConfig())
    index.add(mutants)
    asked: list[int] = []

    def fetch(ids: np.ndarray) -> list[str]:
        asked.extend(ids.tolist())
        return [mutants[i] for i in ids]

    result = index.find_duplicates(fetch)
    assert sorted(asked) == np.unique(result.pairs).tolist()
    # Verification in small chunks (bounded memory) gives the same answer.
    index.VERIFY_CHUNK = 7
    asked.clear()
    chunked = index.find_duplicates(fetch)
    np.testing.assert_array_equal(chunked.similarity, result.similarity)
    assert set(asked) == set(np.unique(result.pairs).tolist())
    with pytest.raises(ValueError, match="needs the documents"):
        index.find_duplicates()


def test_large_buckets_are_linked_not_enumerated() -> None:
    keys = np.full((1000, 2), 42, dtype=np.uint64)
    pairs = _core.candidate_pairs(keys, None, 50, 1)
    assert pairs.shape[0] < 3000
    assert (_core.cluster_roots(1000, pairs, None) == 0).all()


def test_default_lsh_params_favour_recall() -> None:
    bands, rows = MinHashConfig().lsh_params()
    assert (bands, rows) == (23, 11)
    assert candidate_probability(0.85, bands, rows) > 0.98
    integrate = pytest.importorskip("scipy.integrate")
    fp, fn = _core.lsh_error_areas(0.85, bands, rows)
    ref_fp = integrate.quad(lambda s: candidate_probability(s, bands, rows), 0, 0.85)[0]
    ref_fn = integrate.quad(lambda s: 1 - candidate_probability(s, bands, rows), 0.85, 1)[0]
    assert fp == pytest.approx(ref_fp, rel=1e-6) and fn == pytest.approx(ref_fn, rel=1e-6)


def test_real_near_duplicates_in_stdlib_encodings(stdlib_texts: list[tuple[str, str]]) -> None:
    # The codec tables (cp1252.py, mac_roman.py, ...) are generated from one template: real
    # near-duplicates at many Jaccards.
    texts = [t for name, t in stdlib_texts if name.startswith("encodings")]
    assert len(texts) > 50
    truth = set(accuracy.exact_similar_pairs(accuracy.shingle_sets(texts), 0.85))
    assert len(truth) > 20
    for scheme in ("oph", "permutations"):
        result = near_dedup(texts, MinHashConfig(scheme=scheme))
        precision, recall = accuracy.pair_scores(_pairs(result.duplicate_pairs()), truth)
        assert precision >= 0.97 and recall >= 0.97, (scheme, precision, recall)
