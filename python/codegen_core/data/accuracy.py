"""Ground truth for near-dedup accuracy: exact all-pairs Jaccard, synthetic mutants, scores.

:func:`exact_similar_pairs` finds *every* pair of shingle sets with Jaccard >= t without
comparing all n^2 pairs, using prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007,
"Scaling up all pairs similarity search"): order each set by global token rarity; two sets
with Jaccard >= t must share a token among the first |x| - ceil(t |x|) + 1 of each. Every
candidate is then verified exactly with numpy, independently of the C++ code under test.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codegen_core.data.minhash import shingle_set


def shingle_sets(docs: Sequence[str | bytes], ngram: int = 5) -> list[np.ndarray]:
    """Sorted uint32 shingle sets (C++; equal to the numpy reference, see the tests)."""
    return [shingle_set(d, ngram) for d in docs]


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard of two sorted unique arrays (0.0 if both are empty)."""
    union = a.size + b.size
    if union == 0:
        return 0.0
    common = np.intersect1d(a, b, assume_unique=True).size
    return common / (union - common)


def exact_similar_pairs(
    sets: Sequence[np.ndarray], threshold: float
) -> dict[tuple[int, int], float]:
    """{(i, j): Jaccard} for every pair i < j of non-empty sets with Jaccard >= threshold."""
    sizes = np.array([s.size for s in sets], dtype=np.int64)
    docs = np.flatnonzero(sizes > 0)
    if docs.size < 2:
        return {}
    values = np.concatenate([sets[d] for d in docs])
    owner = np.repeat(docs.astype(np.int32), sizes[docs])
    uniq, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    del values
    rank = np.empty(uniq.size, dtype=np.int32)
    rank[np.lexsort((uniq, counts))] = np.arange(uniq.size, dtype=np.int32)  # rarest first
    token_rank = rank[inverse]
    del inverse, rank
    order = np.lexsort((token_rank, owner))  # by document, then rarity
    owner, token_rank = owner[order], token_rank[order]
    del order
    starts = np.r_[0, np.cumsum(sizes[docs])[:-1]]
    prefix = sizes[docs] - np.ceil(threshold * sizes[docs] - 1e-9).astype(np.int64) + 1
    take = np.concatenate([np.arange(s, s + p) for s, p in zip(starts, prefix, strict=True)])
    p_tok, p_doc = token_rank[take], owner[take]
    by_token = np.argsort(p_tok, kind="stable")
    p_tok, p_doc = p_tok[by_token], p_doc[by_token]
    bounds = np.flatnonzero(np.r_[True, p_tok[1:] != p_tok[:-1], True])
    candidates: set[tuple[int, int]] = set()
    for g in range(bounds.size - 1):
        lo, hi = bounds[g], bounds[g + 1]
        if hi - lo < 2:
            continue
        members = np.unique(p_doc[lo:hi])
        for x in range(members.size):
            for y in range(x + 1, members.size):
                candidates.add((int(members[x]), int(members[y])))
    out: dict[tuple[int, int], float] = {}
    for i, j in sorted(candidates):
        small, large = sorted((sizes[i], sizes[j]))
        if small < threshold * large - 1e-9:  # size filter: J <= small / large
            continue
        jac = exact_jaccard(sets[i], sets[j])
        if jac >= threshold:
            out[(i, j)] = jac
    return out


def pair_scores(
    predicted: set[tuple[int, int]], truth: set[tuple[int, int]]
) -> tuple[float, float]:
    """(precision, recall) of predicted duplicate pairs; 1.0 for an empty denominator."""
    hit = len(predicted & truth)
    precision = hit / len(predicted) if predicted else 1.0
    recall = hit / len(truth) if truth else 1.0
    return precision, recall


def mutation_rate_for(jaccard: float, ngram: int = 5) -> float:
    """Per-token substitution rate whose expected n-gram Jaccard is ``jaccard``: a shingle
    survives with q = (1 - p)^n, and J = q / (2 - q) for a substituted copy."""
    q = 2 * jaccard / (1 + jaccard)
    return 1.0 - q ** (1.0 / ngram)


def synthetic_mutants(
    seed: int,
    *,
    families: int,
    mutants: int,
    length: int,
    jaccard_range: tuple[float, float] = (0.7, 1.0),
    ngram: int = 5,
) -> list[str]:
    """``families`` random code-like documents of ``length`` tokens, each followed by
    ``mutants`` copies with random token substitutions aimed at Jaccards spread over
    ``jaccard_range`` (the exact values are measured, not assumed)."""
    rng = np.random.default_rng(seed)
    ops = np.array(["=", "(", ")", "+", ",", ":", ".", "[", "]"])
    docs: list[str] = []

    def word() -> str:
        return f"v{rng.integers(1 << 40):x}"

    for _ in range(families):
        base = [word() if rng.random() < 0.7 else str(rng.choice(ops)) for _ in range(length)]
        docs.append(_render(base))
        for target in rng.uniform(*jaccard_range, size=mutants):
            p = mutation_rate_for(float(target), ngram)
            copy = [word() if rng.random() < p else tok for tok in base]
            docs.append(_render(copy))
    return docs


def _render(tokens: list[str]) -> str:
    lines = [" ".join(tokens[i : i + 8]) for i in range(0, len(tokens), 8)]
    return "\n".join(lines) + "\n"


def lsh_recall_bound(threshold: float, bands: int, rows: int) -> float:
    """P(candidate) at the threshold itself: the worst case recall of a verified pair."""
    return 1.0 - (1.0 - threshold**rows) ** bands
