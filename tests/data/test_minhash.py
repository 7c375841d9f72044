"""The C++ shingling and MinHash equal the numpy reference bit for bit; LSH parameters equal
datasketch's; bad input is a ValueError."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core import _core
from codegen_core.data import minhash_reference as ref
from codegen_core.data.minhash import (
    MinHashConfig,
    load_signatures,
    minhash_signatures,
    save_signatures,
    shingle_set,
)

EDGE_CASES = [
    "",
    "   \n\t ",
    "x",
    "a b c d",  # fewer tokens than ngram: one shingle
    "a b c d e",
    "naïve = 'ünïcode' + 1\n",
    "def f(x):\n    return x + 1\n" * 3,
    "ℝ∑ 0xFF 1e-9 __dunder__ @decorator #comment",
    b"bytes \xff\xfe input (not UTF-8)",
]


@pytest.fixture(scope="module")
def sample_docs(stdlib_texts: list[tuple[str, str]]) -> list[str]:
    # 40 real files of moderate size, spread over the library, plus the edge cases.
    small = [t for _, t in stdlib_texts if 200 < len(t) < 6000]
    return small[:: max(1, len(small) // 40)][:40]


def test_params_equal_reference() -> None:
    a, b = _core.minhash_params(256, 1)
    ra, rb = ref.permutation_params(256, 1)
    np.testing.assert_array_equal(a, ra)
    np.testing.assert_array_equal(b, rb)


def test_shingle_sets_equal_reference(sample_docs: list[str]) -> None:
    for doc in [*EDGE_CASES, *sample_docs]:
        for ngram in (1, 3, 5):
            np.testing.assert_array_equal(shingle_set(doc, ngram), ref.shingle_set(doc, ngram))


@pytest.mark.parametrize("scheme", ["permutations", "oph"])
def test_signatures_equal_reference(sample_docs: list[str], scheme: str) -> None:
    docs = [*EDGE_CASES, *sample_docs]
    config = MinHashConfig(num_perm=128, seed=7, num_threads=2, scheme=scheme)
    sigs, counts = minhash_signatures(docs, config)
    assert sigs.dtype == np.uint32 and sigs.shape == (len(docs), 128)
    np.testing.assert_array_equal(sigs, ref.signatures(docs, num_perm=128, seed=7, scheme=scheme))
    assert counts[0] == counts[1] == 0 and counts[2] == counts[3] == 1
    assert (sigs[0] == 0xFFFFFFFF).all()


@settings(max_examples=30, deadline=None)
@given(
    text=st.text(max_size=200),
    ngram=st.integers(1, 6),
    scheme=st.sampled_from(["permutations", "oph"]),
)
def test_signatures_equal_reference_on_any_text(text: str, ngram: int, scheme: str) -> None:
    cfg = MinHashConfig(num_perm=16, ngram=ngram, num_threads=1, scheme=scheme)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(ValueError, match="UTF-8"):
            minhash_signatures([text], cfg)
        return
    sigs, _ = minhash_signatures([text], cfg)
    expected = ref.signatures([text], num_perm=16, ngram=ngram, scheme=scheme)
    np.testing.assert_array_equal(sigs, expected)


def test_signatures_do_not_depend_on_threads(sample_docs: list[str]) -> None:
    one, _ = minhash_signatures(sample_docs, MinHashConfig(num_threads=1))
    many, _ = minhash_signatures(sample_docs, MinHashConfig(num_threads=4))
    np.testing.assert_array_equal(one, many)


@pytest.mark.parametrize("scheme", ["permutations", "oph"])
@pytest.mark.parametrize("words", [4000, 120])
def test_estimate_tracks_jaccard(scheme: str, words: int) -> None:
    rng = np.random.default_rng(words)
    vocab = [f"w{i}" for i in rng.permutation(words)]
    a, b = " ".join(vocab[: words * 3 // 4]), " ".join(vocab[words // 4 :])
    sa, sb = shingle_set(a), shingle_set(b)
    exact = ref.jaccard(sa, sb)
    sigs, _ = minhash_signatures([a, b], MinHashConfig(scheme=scheme))
    estimate = float(np.mean(sigs[0] == sigs[1]))
    assert abs(estimate - exact) < 4 * np.sqrt(exact * (1 - exact) / 256)


@pytest.mark.parametrize(("threshold", "num_perm"), [(0.85, 256), (0.5, 128), (0.7, 64)])
@pytest.mark.parametrize("weights", [(0.5, 0.5), (0.01, 0.99)])
def test_lsh_params_equal_datasketch(
    threshold: float, num_perm: int, weights: tuple[float, float]
) -> None:
    lsh = pytest.importorskip("datasketch.lsh")
    ours = _core.lsh_optimal_params(threshold, num_perm, *weights)
    assert tuple(ours) == lsh._optimal_param(threshold, num_perm, *weights)


def test_bad_input_is_value_error() -> None:
    with pytest.raises(ValueError, match="num_perm"):
        MinHashConfig(num_perm=0)
    with pytest.raises(ValueError, match="str or bytes"):
        minhash_signatures(["ok", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="dtype"):
        _core.band_keys(np.zeros((2, 8), dtype=np.int64), 2, 4, 1)
    with pytest.raises(ValueError, match="bands"):
        _core.band_keys(np.zeros((2, 8), dtype=np.uint32), 3, 3, 1)
    with pytest.raises(ValueError, match="bands"):
        _core.band_keys(np.zeros((2, 8), dtype=np.uint32), -1, 3, 1)
    with pytest.raises(ValueError, match="pair"):
        _core.cluster_roots(2, np.array([[1, 0]], dtype=np.uint32), None)
    with pytest.raises(ValueError, match="ngram"):
        _core.shingle_set("x", 0)
    with pytest.raises(ValueError, match="scheme"):
        _core.minhash_signatures(["x"], 8, 1, 5, 1, "bogus")


def test_save_and_merge_signatures(tmp_path, sample_docs: list[str]) -> None:
    cfg = MinHashConfig()
    half = len(sample_docs) // 2
    for i, part in enumerate((sample_docs[:half], sample_docs[half:])):
        save_signatures(tmp_path / f"part{i}.npz", *minhash_signatures(part, cfg), cfg)
    parts = [load_signatures(tmp_path / f"part{i}.npz", cfg) for i in range(2)]
    merged = np.concatenate([p[0] for p in parts])
    np.testing.assert_array_equal(merged, minhash_signatures(sample_docs, cfg)[0])
    with pytest.raises(ValueError, match="signatures made with"):
        load_signatures(tmp_path / "part0.npz", MinHashConfig(seed=2))
    with pytest.raises(ValueError, match="signatures made with"):
        load_signatures(tmp_path / "part0.npz", MinHashConfig(scheme="permutations"))


def test_bulk_call_releases_the_gil(stdlib_texts: list[tuple[str, str]]) -> None:
    # While one thread is inside minhash_signatures, another must keep running Python code.
    docs = [t for _, t in stdlib_texts[:400]] * 3
    cfg = MinHashConfig(scheme="permutations", num_threads=1)
    window: list[float] = []

    def work() -> None:
        window.append(time.perf_counter())
        minhash_signatures(docs, cfg)
        window.append(time.perf_counter())

    worker = threading.Thread(target=work)
    ticks: list[float] = []
    worker.start()
    while worker.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    inside = [t for t in ticks if window[0] < t < window[1]]
    assert window[1] - window[0] > 0.05  # the call is long enough to tell
    assert len(inside) >= 10, (len(inside), window[1] - window[0])
