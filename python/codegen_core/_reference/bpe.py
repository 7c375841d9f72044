"""A pure-Python byte-level BPE tokenizer: slow and obvious, the yardstick for the C++ one.

It follows HF ``tokenizers`` step by step (which in turn follows openai/gpt-2 encoder.py):
added tokens are split out leftmost-longest (non-normalized tokens first, then normalized
ones), each remaining segment is split by the GPT-2 regular expression, each piece is mapped
to GPT-2's byte alphabet and merged by rank. The pattern is evaluated by the ``regex``
package, whose Unicode tables may be newer than the 16.0.0 tables HF and the native core use:
on characters that Unicode assigned since, the two can disagree (tests avoid them).
"""

from __future__ import annotations

import functools
import itertools

import regex

from codegen_core.tokenizer.spec import AddedToken, TokenizerSpec

GPT2_PATTERN = regex.compile(
    r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


class ReferenceTokenizer:
    """Encodes exactly like HF ``tokenizers`` for a byte-level BPE spec; no speed at all."""

    def __init__(self, spec: TokenizerSpec) -> None:
        self.spec = spec
        self.vocab = dict(spec.vocab)
        self.ranks = {pair: rank for rank, pair in enumerate(spec.merges)}
        self.byte_char = bytes_to_unicode()
        self.added = list(spec.added_tokens)
        self._memo: dict[str, list[int]] = {}  # piece -> ids: pure memoisation

    # -- BPE of one piece: merge the lowest-ranked adjacent pair, leftmost on ties --
    def bpe(self, piece: str) -> list[int]:
        symbols = [self.byte_char[b] for b in piece.encode("utf-8")]
        while len(symbols) > 1:
            ranked = [
                (self.ranks[pair], i)
                for i, pair in enumerate(itertools.pairwise(symbols))
                if pair in self.ranks
            ]
            if not ranked:
                break
            _, i = min(ranked)
            symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
        return [self.vocab[s] for s in symbols]

    def _ordinary(self, text: str) -> list[int]:
        if self.spec.add_prefix_space and not text.startswith(" "):
            text = " " + text
        pieces = GPT2_PATTERN.findall(text) if self.spec.use_regex else [text]
        ids: list[int] = []
        for piece in pieces:
            whole = "".join(self.byte_char[b] for b in piece.encode("utf-8"))
            if self.spec.ignore_merges and whole in self.vocab:
                ids.append(self.vocab[whole])
            else:
                if piece not in self._memo:
                    self._memo[piece] = self.bpe(piece)
                ids.extend(self._memo[piece])
        return ids

    def _split(
        self, text: str, tokens: list[AddedToken], allowed: set[int] | None
    ) -> list[str | AddedToken]:
        """Leftmost-longest matching; a disallowed special match is skipped but consumed."""
        by_first: dict[str, list[AddedToken]] = {}
        for t in tokens:
            by_first.setdefault(t.content[0], []).append(t)
        out: list[str | AddedToken] = []
        pending = 0
        i = 0
        while i < len(text):
            candidates = by_first.get(text[i], [])
            matches = [t for t in candidates if text.startswith(t.content, i)]
            if not matches:
                i += 1
                continue
            token = max(matches, key=lambda t: len(t.content))
            end = i + len(token.content)
            if token.special and allowed is not None and token.id not in allowed:
                i = end
                continue
            start = i
            if token.lstrip:
                while start > pending and text[start - 1].isspace():
                    start -= 1
            if token.rstrip:
                while end < len(text) and text[end].isspace():
                    end += 1
            if pending < start:
                out.append(text[pending:start])
            out.append(token)
            pending = i = end
        if pending < len(text):
            out.append(text[pending:])
        return out

    def encode(self, text: str, allowed_special: set[int] | None = None) -> list[int]:
        raw = [t for t in self.added if not t.normalized]
        normalized = [t for t in self.added if t.normalized]
        segments: list[str | AddedToken] = []
        for seg in self._split(text, raw, allowed_special):
            segments.extend(
                self._split(seg, normalized, allowed_special) if isinstance(seg, str) else [seg]
            )
        ids: list[int] = []
        for seg in segments:
            ids.extend(self._ordinary(seg) if isinstance(seg, str) else [seg.id])
        return ids
