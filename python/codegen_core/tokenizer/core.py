"""``Tokenizer``: the public face of the native byte-level BPE tokenizer."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt

from codegen_core._core import BPETokenizer
from codegen_core.tokenizer.spec import (
    GPT2_EOS,
    TokenizerSpec,
    gpt2_files_spec,
    gpt2_spec,
    load_tokenizer_json,
)

#: Special tokens an encode call may turn into their ids: "all", a set (or tuple) of their
#: strings, or "none" (the same as an empty set).
AllowedSpecial = Literal["all", "none"] | AbstractSet[str] | tuple[str, ...]
#: Special tokens whose text makes an encode call raise ``ValueError`` unless allowed: "all"
#: (every special token not allowed) or a set of their strings; ``()`` = none.
DisallowedSpecial = Literal["all"] | AbstractSet[str] | tuple[str, ...]
_Policy = tuple[list[int] | None, list[int] | None]  # (allowed ids, disallowed ids); None = all
_NONE_ALLOWED: AbstractSet[str] = frozenset()  # the default allowed_special (identity-checked)
IdsLike = Sequence[int] | npt.NDArray[np.integer]


_NO_IDS: list[int] = []  # read-only: no special id allowed / disallowed


def _check_text(text: object, what: str = "text") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be str, got {type(text).__name__}")
    return text


def _surrogate_error(text: str, err: UnicodeEncodeError, what: str = "text") -> ValueError:
    return ValueError(
        f"{what} contains a lone surrogate {text[err.start]!r} at index {err.start}: it has no "
        "UTF-8 form (HF tokenizers refuses it too). Clean it with "
        "text.encode('utf-8', 'replace').decode('utf-8')"
    )


class Tokenizer:
    """A byte-level BPE tokenizer that gives exactly HF ``tokenizers``' ids, fast.

    >>> tok = Tokenizer.codegen()
    >>> tok.encode("    return x")
    [50284, 7783, 2124]
    >>> tok.decode([50284, 7783, 2124])
    '    return x'

    Build one from a Hugging Face ``tokenizer.json`` (:meth:`from_file`), from GPT-2's
    ``vocab.json`` + ``merges.txt`` (:meth:`from_gpt2_files`), or with a preset:
    :meth:`gpt2`, :meth:`codegen` (CodeGen1: GPT-2 + 38 whitespace tokens) or
    :meth:`codegen2` (the 51200-id CodeGen2 / 2.5 layout). Instances are immutable and safe
    to share between threads.
    """

    def __init__(self, spec: TokenizerSpec) -> None:
        if not isinstance(spec, TokenizerSpec):
            raise TypeError(f"spec must be a TokenizerSpec, got {type(spec).__name__}")
        self._spec = spec
        self._core = BPETokenizer(
            list(spec.vocab.items()),
            list(spec.merges),
            [
                (t.content, t.id, t.special, t.lstrip, t.rstrip, t.normalized)
                for t in spec.added_tokens
            ],
            add_prefix_space=spec.add_prefix_space,
            use_regex=spec.use_regex,
            ignore_merges=spec.ignore_merges,
        )
        self._special: dict[str, int] = {t.content: t.id for t in spec.added_tokens if t.special}
        # allowed_special=frozenset(), disallowed_special="all": nothing allowed, all rejected
        self._default_policy: _Policy = ([], None)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Load a Hugging Face ``tokenizer.json`` (BPE model, ByteLevel pre-tokenizer)."""
        return cls(load_tokenizer_json(path))

    @classmethod
    def from_gpt2_files(
        cls,
        vocab_path: str | os.PathLike[str],
        merges_path: str | os.PathLike[str],
        *,
        layout: Literal["gpt2", "codegen", "codegen2"] = "gpt2",
    ) -> Tokenizer:
        """GPT-2's ``vocab.json`` + ``merges.txt`` with the added tokens of ``layout``."""
        return cls(gpt2_files_spec(vocab_path, merges_path, layout))

    @classmethod
    def gpt2(cls, gpt2_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
        """Plain GPT-2 (CodeGen-nl models): 50257 ids, ``<|endoftext|>`` = 50256."""
        return cls(gpt2_spec(gpt2_dir, "gpt2"))

    @classmethod
    def codegen(cls, gpt2_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
        """CodeGen1 multi/mono: GPT-2 plus 38 whitespace-run tokens (ids 50257..50294)."""
        return cls(gpt2_spec(gpt2_dir, "codegen"))

    @classmethod
    def codegen2(cls, gpt2_dir: str | os.PathLike[str] | None = None) -> Tokenizer:
        """CodeGen2 / 2.5: CodeGen1 plus FIM, ``<sep>``, ``<eom>`` and ``<mask_k>`` up to 51199."""
        return cls(gpt2_spec(gpt2_dir, "codegen2"))

    @classmethod
    def for_checkpoint(
        cls,
        model_dir: str | os.PathLike[str],
        *,
        tokenizer_file: str | os.PathLike[str] | None = None,
        codegen2: bool = False,
    ) -> Tokenizer:
        """The tokenizer of a transformers checkpoint directory.

        ``tokenizer_file`` when given (it must exist), else ``model_dir/tokenizer.json`` when
        present, else the built-in CodeGen2 layout (``codegen2=True``: infill, CodeGen2.5) or
        CodeGen1: CodeGen checkpoints have 51200 embedding rows either way, so their config
        cannot tell which.
        """
        if tokenizer_file is not None:
            if not Path(tokenizer_file).is_file():
                raise FileNotFoundError(f"tokenizer file {tokenizer_file} does not exist")
            return cls.from_file(tokenizer_file)
        path = Path(model_dir) / "tokenizer.json"
        if path.is_file():
            return cls.from_file(path)
        return cls.codegen2() if codegen2 else cls.codegen()

    # ---- properties ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self._spec.name

    @property
    def spec(self) -> TokenizerSpec:
        return self._spec

    @property
    def vocab_size(self) -> int:
        """One more than the largest id (HF's ``get_vocab_size(with_added_tokens=True)``)."""
        return self._core.vocab_size

    @property
    def eos_token_id(self) -> int:
        eos = self.token_to_id(GPT2_EOS)
        if eos is None:
            raise AttributeError(f"tokenizer {self.name!r} has no {GPT2_EOS} token")
        return eos

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special added tokens, content -> id."""
        return dict(self._special)

    def token_to_id(self, token: str) -> int | None:
        """Id of a token as the vocabulary spells it (``"Ġthe"``) or of an added token."""
        return self._core.token_to_id(_check_text(token, "token"))

    def id_to_token(self, id: int) -> str | None:
        """The vocabulary spelling of ``id``, or None if no token has it."""
        if isinstance(id, bool) or not isinstance(id, int | np.integer):
            raise TypeError(f"id must be int, got {type(id).__name__}")
        return self._core.id_to_token(int(id)) if 0 <= id < 2**32 else None

    # ---- encoding -----------------------------------------------------------------------
    def _special_ids(self, names: AbstractSet[str] | tuple[str, ...], what: str) -> list[int]:
        if isinstance(names, str) or not isinstance(names, AbstractSet | tuple):
            raise TypeError(
                f"{what} must be 'all' or a set of special token strings, got {names!r}"
            )
        unknown = sorted(s for s in names if s not in self._special)
        if unknown:
            raise ValueError(f"{what} names tokens that are not special: {unknown}")
        return sorted(self._special[s] for s in names)

    def _policy(
        self, allowed_special: AllowedSpecial, disallowed_special: DisallowedSpecial
    ) -> _Policy:
        if allowed_special is _NONE_ALLOWED and disallowed_special == "all":
            return self._default_policy  # the common call: no per-call work
        if allowed_special == "all":
            return None, []
        if allowed_special == "none":
            allowed_special = frozenset()
        allowed = self._special_ids(allowed_special, "allowed_special")
        if disallowed_special == "all":
            return self._default_policy if not allowed else (allowed, None)
        disallowed = self._special_ids(disallowed_special, "disallowed_special")
        return allowed, [i for i in disallowed if i not in allowed]

    def encode(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = _NONE_ALLOWED,
        disallowed_special: DisallowedSpecial = "all",
    ) -> list[int]:
        """Token ids of ``text``; special-token text is never silently a control token.

        As in tiktoken: the text of a special token (``<|endoftext|>``, CodeGen2's
        ``<mask_1>``, ``<sep>``, ...) becomes that token's id only if ``allowed_special``
        names it (or is ``"all"``, which is what HF ``tokenizers`` does); if it is
        ``disallowed_special`` (default: every special token not allowed) encoding raises
        ``ValueError``; otherwise it is encoded as ordinary text. For untrusted text (files,
        user input) use :meth:`encode_ordinary`. Non-special added tokens, such as CodeGen's
        whitespace runs (ids 50257..50294), are ordinary vocabulary and always apply.

        >>> tok = Tokenizer.codegen()
        >>> tok.encode("<|endoftext|>", disallowed_special=())[:3]
        [27, 91, 437]
        >>> tok.encode("a<|endoftext|>", allowed_special={"<|endoftext|>"})
        [64, 50256]
        """
        _check_text(text)
        allowed, disallowed = self._policy(allowed_special, disallowed_special)
        try:
            return self._core.encode(text, allowed, disallowed)
        except UnicodeEncodeError as e:
            raise _surrogate_error(text, e) from None

    def encode_numpy(
        self,
        text: str,
        *,
        allowed_special: AllowedSpecial = _NONE_ALLOWED,
        disallowed_special: DisallowedSpecial = "all",
    ) -> npt.NDArray[np.uint32]:
        """:meth:`encode` as a ``uint32`` array: no Python int per token (the fast path for
        pipelines that store ids)."""
        _check_text(text)
        allowed, disallowed = self._policy(allowed_special, disallowed_special)
        try:
            return self._core.encode_numpy(text, allowed, disallowed)
        except UnicodeEncodeError as e:
            raise _surrogate_error(text, e) from None

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with every special token encoded as plain text (for untrusted text).

        >>> Tokenizer.codegen().encode_ordinary("<|endoftext|>")[:3]
        [27, 91, 437]
        """
        # encode(text, disallowed_special=()) without its per-call policy work (a stdlib
        # pass is 800 calls: ~3 us each through encode, ~0.5 us here).
        if not isinstance(text, str):
            raise TypeError(f"text must be str, got {type(text).__name__}")
        try:
            return self._core.encode(text, _NO_IDS, _NO_IDS)
        except UnicodeEncodeError as e:
            raise _surrogate_error(text, e) from None

    def _views(self, texts: Iterable[str]) -> list[str]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of str, not one str")
        texts = list(texts)
        for i, t in enumerate(texts):
            _check_text(t, f"texts[{i}]")
        return texts

    def _batch(self, texts: list[str], policy: _Policy, num_threads: int, flat: bool):
        if num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (0 = all cores), got {num_threads}")
        allowed, disallowed = policy
        try:
            return self._core.encode_batch(texts, allowed, disallowed, num_threads, flat)
        except UnicodeEncodeError as e:
            index = next(i for i, t in enumerate(texts) if e.object is t or e.object == t)
            raise _surrogate_error(texts[index], e, f"texts[{index}]") from None

    def encode_batch(
        self,
        texts: Iterable[str],
        *,
        allowed_special: AllowedSpecial = _NONE_ALLOWED,
        disallowed_special: DisallowedSpecial = "all",
        num_threads: int = 0,
    ) -> list[list[int]]:
        """:meth:`encode` for many texts on native threads (``num_threads=0``: one per
        core), GIL released. A disallowed special token raises ``ValueError`` naming
        ``texts[i]``."""
        policy = self._policy(allowed_special, disallowed_special)
        return self._batch(self._views(texts), policy, num_threads, False)

    def encode_ordinary_batch(
        self, texts: Iterable[str], *, num_threads: int = 0
    ) -> list[list[int]]:
        """:meth:`encode_ordinary` for many texts (special-token text is plain text)."""
        return self._batch(self._views(texts), ([], []), num_threads, False)

    def encode_batch_flat(
        self,
        texts: Iterable[str],
        *,
        allowed_special: AllowedSpecial = _NONE_ALLOWED,
        disallowed_special: DisallowedSpecial = "all",
        num_threads: int = 0,
    ) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
        """Like :meth:`encode_batch`, as numpy: ``ids[offsets[i]:offsets[i + 1]]`` is text i.

        The fast path for data pipelines: no Python int per token. (Pipelines that encode
        untrusted files pass ``disallowed_special=()`` so special-token text stays text.)
        """
        policy = self._policy(allowed_special, disallowed_special)
        return self._batch(self._views(texts), policy, num_threads, True)

    # ---- decoding -----------------------------------------------------------------------
    @staticmethod
    def _ids(ids: IdsLike) -> list[int] | tuple[int, ...] | npt.NDArray[np.integer]:
        """Lists, tuples and 1-D integer arrays go to the native code, which checks each id."""
        if isinstance(ids, list | tuple | np.ndarray):
            return ids
        if isinstance(ids, str | bytes):
            raise TypeError(f"ids must be a sequence of int, got {type(ids).__name__}")
        return list(ids)

    def decode(self, ids: IdsLike, *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD, as HF does.

        Unknown ids raise ``ValueError`` (HF drops them silently).
        """
        return self._core.decode(self._ids(ids), skip_special_tokens)

    def decode_bytes(self, ids: IdsLike, *, skip_special_tokens: bool = False) -> bytes:
        """The exact bytes ``ids`` stand for (no UTF-8 repair)."""
        return self._core.decode_bytes(self._ids(ids), skip_special_tokens)

    def decode_batch(
        self, batch: Iterable[IdsLike], *, skip_special_tokens: bool = False
    ) -> list[str]:
        return [self.decode(ids, skip_special_tokens=skip_special_tokens) for ids in batch]

    def pre_tokenize(self, text: str) -> list[str]:
        """The GPT-2 pre-tokenizer's pieces of ``text`` (ignores added tokens)."""
        _check_text(text)
        try:
            spans = self._core.pre_tokenize(text)
        except UnicodeEncodeError as e:
            raise _surrogate_error(text, e) from None
        data = text.encode("utf-8")
        return [data[b:e].decode("utf-8") for b, e in spans]

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size})"
