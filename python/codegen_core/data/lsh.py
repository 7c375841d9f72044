"""LSH candidate pairs, verification and union-find clustering over MinHash signatures.

Streaming: :class:`NearDuplicateIndex` keeps ``bands`` uint64 keys per document (184 bytes
at the defaults; plus the signature itself with ``verify="signature"``), never the
documents. Exact verification fetches only the documents that are in a candidate pair.

    >>> index = NearDuplicateIndex(MinHashConfig())
    >>> docs = ["def f(x):\\n    return x + 1\\n" * 20, "def f(x): return x + 1\\n" * 20, "y = 2"]
    >>> _ = index.add(docs)
    >>> result = index.find_duplicates(docs)
    >>> result.keep.tolist()
    [True, False, True]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from codegen_core._core import (
    band_keys,
    candidate_pairs,
    cluster_roots,
    exact_jaccard,
    signature_similarity,
)
from codegen_core.data.minhash import MinHashConfig, minhash_signatures

# Fetches the texts of the given (sorted) document ids, in that order.
DocFetcher = Callable[[np.ndarray], Sequence[str | bytes]]


@dataclass(frozen=True)
class DedupResult:
    """Outcome of near-dedup over n documents."""

    roots: np.ndarray  # uint32 [n]: smallest document id in the document's cluster
    pairs: np.ndarray  # uint32 [m, 2]: LSH candidate pairs (i < j), sorted
    similarity: np.ndarray  # float64 [m]: verified Jaccard (exact or estimated); nan if none
    duplicate: np.ndarray  # bool [m]: pairs accepted as duplicates (joined in the clusters)

    @property
    def keep(self) -> np.ndarray:
        """bool [n]: True for the one document kept per cluster (the first in input order)."""
        return self.roots == np.arange(self.roots.size, dtype=self.roots.dtype)

    @property
    def num_removed(self) -> int:
        return int(self.roots.size - np.count_nonzero(self.keep))

    def duplicate_pairs(self) -> np.ndarray:
        """uint32 [k, 2]: the accepted pairs."""
        return self.pairs[self.duplicate]

    def clusters(self) -> list[np.ndarray]:
        """Clusters of two or more documents, each sorted (kept document first), by root."""
        order = np.argsort(self.roots, kind="stable")
        roots = self.roots[order]
        starts = np.flatnonzero(np.r_[True, roots[1:] != roots[:-1]])
        groups = np.split(order, starts[1:])
        return [g for g in groups if g.size > 1]


class NearDuplicateIndex:
    """Accumulates LSH band keys batch by batch, then clusters everything added."""

    VERIFY_CHUNK = 4096  # candidate pairs verified per batch of fetched documents

    def __init__(self, config: MinHashConfig | None = None) -> None:
        config = config if config is not None else MinHashConfig()
        self.config = config
        self.bands, self.rows = config.lsh_params()
        self._keys: list[np.ndarray] = []
        self._counts: list[np.ndarray] = []
        self._sigs: list[np.ndarray] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, docs: Sequence[str | bytes]) -> range:
        """Signatures for a batch of documents (C++, all threads); returns their ids."""
        sigs, counts = minhash_signatures(docs, self.config)
        return self.add_signatures(sigs, counts)

    def add_signatures(self, signatures: np.ndarray, counts: np.ndarray) -> range:
        """Add precomputed signatures (e.g. a shard from :func:`load_signatures`)."""
        if signatures.ndim != 2 or signatures.shape[1] != self.config.num_perm:
            raise ValueError(
                f"signatures must be [n, {self.config.num_perm}], got {signatures.shape}"
            )
        if counts.shape != (signatures.shape[0],):
            raise ValueError(f"counts must be [{signatures.shape[0]}], got {counts.shape}")
        keys = band_keys(
            np.ascontiguousarray(signatures, dtype=np.uint32),
            self.bands,
            self.rows,
            self.config.num_threads,
        )
        self._keys.append(keys)
        self._counts.append(np.asarray(counts, dtype=np.uint32))
        if self.config.verify == "signature":
            self._sigs.append(np.asarray(signatures, dtype=np.uint32))
        ids = range(self._size, self._size + signatures.shape[0])
        self._size += signatures.shape[0]
        return ids

    def candidate_pairs(self) -> np.ndarray:
        """uint32 [m, 2]: pairs sharing a band key (documents without tokens excluded)."""
        if self._size == 0:
            return np.zeros((0, 2), dtype=np.uint32)
        keys = np.concatenate(self._keys)
        skip = (np.concatenate(self._counts) == 0).astype(np.uint8)
        return candidate_pairs(keys, skip, self.config.max_bucket, self.config.num_threads)

    def find_duplicates(
        self, docs: Sequence[str | bytes] | DocFetcher | None = None
    ) -> DedupResult:
        """Cluster everything added. ``docs`` (all documents by id, or a fetcher of given ids)
        is needed only for ``verify="exact"``."""
        cfg = self.config
        pairs = self.candidate_pairs()
        if cfg.verify == "none":
            similarity = np.full(pairs.shape[0], np.nan)
            duplicate = np.ones(pairs.shape[0], dtype=bool)
        else:
            if cfg.verify == "signature":
                sigs = np.concatenate(self._sigs) if self._sigs else np.zeros((0, cfg.num_perm))
                similarity = signature_similarity(
                    sigs.astype(np.uint32, copy=False), pairs, cfg.num_threads
                )
            else:
                similarity = self._exact_similarity(pairs, docs)
            duplicate = similarity >= cfg.threshold
        roots = cluster_roots(self._size, pairs, duplicate.astype(np.uint8))
        return DedupResult(roots=roots, pairs=pairs, similarity=similarity, duplicate=duplicate)

    def _exact_similarity(
        self, pairs: np.ndarray, docs: Sequence[str | bytes] | DocFetcher | None
    ) -> np.ndarray:
        if docs is None:
            raise ValueError('verify="exact" needs the documents: pass docs to find_duplicates')
        if not callable(docs) and len(docs) != self._size:
            raise ValueError(f"got {len(docs)} documents for an index of {self._size}")
        similarity = np.empty(pairs.shape[0], dtype=np.float64)
        # Chunks of pairs bound the texts held at once (pairs are sorted, so a chunk touches
        # few distinct documents).
        for start in range(0, pairs.shape[0], self.VERIFY_CHUNK):
            chunk = pairs[start : start + self.VERIFY_CHUNK]
            involved = np.unique(chunk)  # sorted ids of documents in these pairs
            fetched = docs(involved) if callable(docs) else [docs[int(i)] for i in involved]
            texts = list(fetched)
            if len(texts) != involved.size:
                raise ValueError(f"fetcher returned {len(texts)} documents for {involved.size} ids")
            local = np.searchsorted(involved, chunk).astype(np.uint32)  # monotone: keeps i < j
            similarity[start : start + chunk.shape[0]] = exact_jaccard(
                texts, local, self.config.ngram, self.config.num_threads
            )
        return similarity


def near_dedup(docs: Sequence[str | bytes], config: MinHashConfig | None = None) -> DedupResult:
    """Near-dedup an in-memory list of documents in one call."""
    index = NearDuplicateIndex(config)
    index.add(docs)
    return index.find_duplicates(docs)
