"""MinHash signatures and LSH parameters, computed by the C++ core (``codegen_core._core``).

The specification (and a slow reference) is :mod:`codegen_core.data.minhash_reference`;
``tests/data/test_minhash.py`` checks that the two agree bit for bit.

Signatures are plain numpy arrays, so a corpus too big for one machine is handled by
computing them per shard anywhere, saving them (:func:`save_signatures`), and clustering
the concatenation (:class:`codegen_core.data.lsh.NearDuplicateIndex`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from codegen_core._core import lsh_optimal_params
from codegen_core._core import minhash_signatures as _native_signatures
from codegen_core._core import shingle_set as _native_shingle_set

Verify = Literal["exact", "signature", "none"]
Scheme = Literal["permutations", "oph"]


@dataclass(frozen=True)
class MinHashConfig:
    """Near-dedup settings. Defaults: the BigCode recipe (5-gram shingles, 256 permutations,
    Jaccard 0.85), with candidates verified by exact Jaccard so precision does not depend on
    the LSH parameters."""

    num_perm: int = 256
    ngram: int = 5  # code tokens per shingle
    seed: int = 1  # seeds the hash family; signatures from different seeds do not mix
    # "oph": one-permutation hashing with optimal densification, O(shingles + num_perm) per
    # document; "permutations": num_perm independent hash functions, O(shingles * num_perm),
    # the textbook scheme. OPH is the default because it is 2x faster end to end and measured
    # as accurate (benchmarks/bench_dedup.py: identical duplicate-pair precision/recall on
    # stdlib + site-packages and on mutants; Jaccard-estimate RMSE 0.023 vs 0.025 overall,
    # lower on long files, slightly higher on files under 100 shingles).
    scheme: Scheme = "oph"
    threshold: float = 0.85  # Jaccard at or above which two documents are duplicates
    # LSH (bands, rows) minimise fp_weight * FP + fn_weight * FN (datasketch's rule). Because
    # candidates are verified, a false positive costs only a cheap check, so recall gets
    # the weight: 0.01/0.99 gives 23 bands x 11 rows at 0.85, which makes a pair with
    # Jaccard 0.85 a candidate with P = 0.985 (0.87: 0.996), against 0.45 for datasketch's
    # 0.5/0.5 (13 x 19). Pairs at Jaccard 0.5 become candidates with P = 0.011.
    fp_weight: float = 0.01
    fn_weight: float = 0.99
    # "exact": Jaccard of the shingle sets of each candidate pair (needs the documents);
    # "signature": the MinHash estimate (no documents needed: works on merged shards);
    # "none": every LSH candidate pair is a duplicate (what datasketch's query returns).
    verify: Verify = "exact"
    max_bucket: int = 100  # LSH buckets larger than this are linked as star + chain
    num_threads: int = 0  # 0: all cores

    def __post_init__(self) -> None:
        if not 1 <= self.num_perm <= 4096:
            raise ValueError(f"num_perm must be in [1, 4096], got {self.num_perm}")
        if not 1 <= self.ngram <= 64:
            raise ValueError(f"ngram must be in [1, 64], got {self.ngram}")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.verify not in ("exact", "signature", "none"):
            raise ValueError(f"verify must be 'exact', 'signature' or 'none', got {self.verify!r}")
        if self.scheme not in ("permutations", "oph"):
            raise ValueError(f"scheme must be 'permutations' or 'oph', got {self.scheme!r}")
        if self.max_bucket < 2:
            raise ValueError(f"max_bucket must be >= 2, got {self.max_bucket}")

    def lsh_params(self) -> tuple[int, int]:
        """(bands, rows) for this threshold and number of permutations."""
        return lsh_params(self.threshold, self.num_perm, self.fp_weight, self.fn_weight)

    def signature_key(self) -> dict[str, int | str]:
        """The settings two signature arrays must share to be merged."""
        return {
            "num_perm": self.num_perm,
            "ngram": self.ngram,
            "seed": self.seed,
            "scheme": self.scheme,
        }


@functools.lru_cache(maxsize=64)
def lsh_params(
    threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive/negative areas, as datasketch
    (a search over all b * r <= num_perm with numerical integrals, so results are cached)."""
    bands, rows = lsh_optimal_params(threshold, num_perm, fp_weight, fn_weight)
    return int(bands), int(rows)


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> np.ndarray:
    """P(two documents with this Jaccard share at least one band): 1 - (1 - s^r)^b."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


def shingle_set(doc: str | bytes, ngram: int = 5) -> np.ndarray:
    """Sorted uint32 shingle hashes of one document (see ``csrc/dedup/shingle.h``)."""
    return _native_shingle_set(doc, ngram)


def minhash_signatures(
    docs: Sequence[str | bytes], config: MinHashConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(signatures uint32 [n, num_perm], shingles per document uint32 [n], repeats included)
    on all threads, GIL free.

    A document with no tokens has count 0 and the all-0xFFFFFFFF signature; it is never
    anyone's duplicate.

    >>> sigs, counts = minhash_signatures(["x = 1", "x = 1", ""])
    >>> sigs.shape, bool((sigs[0] == sigs[1]).all()), counts.tolist()
    ((3, 256), True, [1, 1, 0])
    """
    config = config if config is not None else MinHashConfig()
    if not isinstance(docs, list | tuple):
        docs = list(docs)
    sigs, counts = _native_signatures(
        docs, config.num_perm, config.seed, config.ngram, config.num_threads, config.scheme
    )
    return sigs, counts


def save_signatures(
    path: str | Path, signatures: np.ndarray, counts: np.ndarray, config: MinHashConfig
) -> None:
    """Write one shard's signatures (``.npz``) with the settings needed to merge it."""
    np.savez(
        Path(path),
        signatures=signatures,
        counts=counts,
        config=np.array(json.dumps(config.signature_key(), sort_keys=True)),
    )


def load_signatures(path: str | Path, config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """Read a shard written by :func:`save_signatures`; refuse one made with other settings."""
    with np.load(Path(path), allow_pickle=False) as data:
        saved = json.loads(str(data["config"]))
        if saved != config.signature_key():
            raise ValueError(f"{path}: signatures made with {saved}, need {config.signature_key()}")
        return data["signatures"], data["counts"]


def config_dict(config: MinHashConfig) -> dict[str, object]:
    """The config as a JSON-ready dict (for manifests and reports)."""
    return asdict(config)
