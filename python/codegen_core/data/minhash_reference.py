"""Slow, obvious MinHash in numpy: the specification the C++ fast path must match bit for bit.

Every step mirrors ``csrc/dedup`` (see the comments in ``shingle.h``, ``minhash.h``):

1. tokens: runs of ASCII letters/digits/``_``/bytes >= 0x80, or single other non-space bytes;
2. token hash: FNV-1a 64 of the token bytes;
3. shingle: ``h = 0; h = (h + t) * 0x9E3779B97F4A7C15`` over ``ngram`` tokens, MurmurHash3's
   fmix64, keep the high 32 bits; a document shorter than ``ngram`` tokens is one shingle;
4. permutation ``i``: ``((a_i * x + b_i) mod 2**64) >> 32`` with ``a_i, b_i`` from splitmix64;
   or, for the one-permutation scheme, the bins and densification of ``minhash.h``.
"""

from __future__ import annotations

import re

import numpy as np

_MASK64 = (1 << 64) - 1
_TOKEN_RE = re.compile(rb"[A-Za-z0-9_\x80-\xff]+|[^A-Za-z0-9_\x80-\xff \t\n\r\f\v]")


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & _MASK64
    return h


def _fmix64(h: int) -> int:
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK64
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK64
    h ^= h >> 33
    return h


def _combine(tokens: list[int]) -> int:
    h = 0
    for t in tokens:
        h = ((h + t) * 0x9E3779B97F4A7C15) & _MASK64
    return _fmix64(h) >> 32


def tokenize(text: str | bytes) -> list[bytes]:
    """The code tokens of ``text`` (str is UTF-8 encoded first)."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return _TOKEN_RE.findall(data)


def shingle_set(text: str | bytes, ngram: int = 5) -> np.ndarray:
    """Sorted unique uint32 shingle hashes of one document."""
    if not 1 <= ngram <= 64:
        raise ValueError(f"ngram must be in [1, 64], got {ngram}")
    hashes = [_fnv1a64(tok) for tok in tokenize(text)]
    if not hashes:
        return np.zeros(0, dtype=np.uint32)
    if len(hashes) < ngram:
        values = {_combine(hashes)}
    else:
        values = {_combine(hashes[i : i + ngram]) for i in range(len(hashes) - ngram + 1)}
    return np.array(sorted(values), dtype=np.uint32)


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B97F4A7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return state, z ^ (z >> 31)


def permutation_params(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (a, b) uint64 arrays of the hash family, drawn from splitmix64(seed)."""
    a, b = [], []
    state = seed & _MASK64
    for _ in range(num_perm):
        state, va = _splitmix64(state)
        state, vb = _splitmix64(state)
        a.append(va | 1)
        b.append(vb >> 32)
    return np.array(a, dtype=np.uint64), np.array(b, dtype=np.uint64)


def signature(shingles: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signature (uint32 [num_perm]) of a uint32 shingle set; all-0xFFFFFFFF if empty."""
    if shingles.size == 0:
        return np.full(a.shape, 0xFFFFFFFF, dtype=np.uint32)
    x = shingles.astype(np.uint64)[:, None]  # (S, 1)
    # uint64 array arithmetic wraps modulo 2**64, which is the definition.
    hashed = ((a[None, :] * x + b[None, :]) >> np.uint64(32)).astype(np.uint32)  # (S, P)
    return hashed.min(axis=0)


def signatures(
    docs: list[str] | list[bytes],
    *,
    num_perm: int = 256,
    seed: int = 1,
    ngram: int = 5,
    scheme: str = "permutations",
) -> np.ndarray:
    """uint32 [len(docs), num_perm] signatures, one document at a time."""
    a, b = permutation_params(num_perm, seed)
    out = np.empty((len(docs), num_perm), dtype=np.uint32)
    for i, doc in enumerate(docs):
        shingles = shingle_set(doc, ngram)
        if scheme == "oph":
            out[i] = oph_signature(shingles, num_perm, seed)
        else:
            out[i] = signature(shingles, a, b)
    return out


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    """Exact Jaccard similarity of two shingle sets (0.0 when both are empty)."""
    union = np.union1d(x, y).size
    return float(np.intersect1d(x, y).size / union) if union else 0.0


def oph_keys(seed: int) -> tuple[int, int]:
    """(key, probe_key) of the one-permutation scheme."""
    state, key = _splitmix64((seed ^ 0x4F50480000000000) & _MASK64)
    _, probe_key = _splitmix64(state)
    return key, probe_key


def _fmix64_np(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def oph_signature(shingles: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """One-permutation hashing with optimal densification (see ``minhash.h``)."""
    sig = np.full(num_perm, 0xFFFFFFFF, dtype=np.uint32)
    if shingles.size == 0:
        return sig
    key, probe_key = oph_keys(seed)
    y = _fmix64_np(shingles.astype(np.uint64) ^ np.uint64(key))
    bins = ((y >> np.uint64(32)) * np.uint64(num_perm)) >> np.uint64(32)
    np.minimum.at(sig, bins.astype(np.intp), (y & np.uint64(0xFFFFFFFF)).astype(np.uint32))
    filled = np.zeros(num_perm, dtype=bool)
    filled[bins.astype(np.intp)] = True
    out = sig.copy()
    for i in np.flatnonzero(~filled):
        t = 1
        while True:
            probe = _fmix64(probe_key ^ ((int(i) << 32) | t))
            j = ((probe >> 32) * num_perm) >> 32
            if filled[j]:
                out[i] = sig[j]
                break
            t += 1
    return out
