"""Exact deduplication by content hash (what CodeGen did): keep the first of identical files."""

from __future__ import annotations

import hashlib


def content_hash(text: str) -> bytes:
    """16-byte BLAKE2b digest of the UTF-8 text: collisions are not a practical concern."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class ExactDeduplicator:
    """Streaming exact dedup. Memory: one 16-byte digest (plus dict overhead) per unique file.

    >>> dedup = ExactDeduplicator()
    >>> dedup.first_seen("a", "x = 1\\n"), dedup.first_seen("b", "x = 1\\n")
    (None, 'a')
    """

    def __init__(self) -> None:
        self._first: dict[bytes, str] = {}
        self.duplicates = 0

    def first_seen(self, name: str, text: str) -> str | None:
        """None if ``text`` is new (and remember it under ``name``), else the earlier name."""
        return self.first_seen_digest(name, content_hash(text))

    def first_seen_digest(self, name: str, digest: bytes) -> str | None:
        """:meth:`first_seen` for a precomputed :func:`content_hash`."""
        before = len(self._first)
        earlier = self._first.setdefault(digest, name)
        if len(self._first) > before:
            return None
        self.duplicates += 1
        return earlier

    def __len__(self) -> int:
        return len(self._first)
