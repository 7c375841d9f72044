"""Multi-turn sampling that keeps its KV cache between turns (MTPB-style).

Each turn re-tokenizes the whole context (so the tokens are what a fresh ``generate`` on
the full text would see), finds the longest prefix already in the cache, rolls the cache
back to it and only prefills the rest. The cache has a fixed capacity (``max_len``), so
every turn reuses the same compiled programs for its shape bucket.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import KVCache, Params, cache_dtype, init_cache
from codegen_core.sampling.generate import (
    _knobs,
    _stop_array,
    decodable_ids,
    left_pad,
    make_key,
    prefill_and_decode,
    truncate_text,
)
from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.fim import encode_text


@functools.partial(jax.jit, donate_argnames=("cache",))
def _rollback(cache: KVCache, keep_slots: jax.Array, keep_tokens: jax.Array) -> KVCache:
    """Forget every slot >= keep_slots; the row then holds keep_tokens real tokens."""
    slots = jnp.arange(cache.mask.shape[1])[None, :]
    return cache._replace(
        mask=cache.mask & (slots < keep_slots),
        index=keep_slots.astype(jnp.int32),
        lengths=jnp.full_like(cache.lengths, keep_tokens),
    )


class Session:
    """A growing single-row context: ``send`` appends text (or ids) and samples a reply.

    >>> s = Session(params, config, tokenizer, max_len=2048)  # doctest: +SKIP
    >>> s.send("# Import libraries.\\n\\nimport numpy as np\\n\\n# Print hello\\n")  # doctest: +SKIP
    """

    def __init__(
        self,
        params: Params,
        config: CodeGenConfig,
        tokenizer: Any = None,
        *,
        max_len: int | None = None,
        sampling: SamplingParams | None = None,
        stop_token_ids: Sequence[int] | None = None,
        stop_patterns: Sequence[str] | None = None,
        seed: int | jax.Array | None = None,
        chunk_multiple: int = 16,
    ) -> None:
        """``stop_patterns`` and ``seed`` default to ``sampling.stop`` and ``sampling.seed``;
        text is encoded as text (special-token strings are not control tokens)."""
        self.params, self.config, self.tokenizer = params, config, tokenizer
        self.max_len = max_len or config.n_ctx
        self.sampling = sampling or SamplingParams()
        self.stop_token_ids = stop_token_ids
        self.stop_patterns = self.sampling.stop if stop_patterns is None else stop_patterns
        self.chunk_multiple = chunk_multiple
        self._key = make_key(self.sampling.seed if seed is None else seed)
        self.text = ""  # the context as text (text mode)
        self.ids: list[int] = []  # the context as tokens
        self._cached: list[int] = []  # tokens whose keys/values are in the cache, in order
        self._slots: list[int] = []  # cache slot of each cached token
        self._cache = init_cache(config, 1, self.max_len, cache_dtype(params))

    def send(self, text: str, *, sampling: SamplingParams | None = None) -> str:
        """Append ``text`` to the context, sample a completion, append it (truncated at the
        stop patterns) to the context and return it."""
        if self.tokenizer is None:
            raise ValueError("Session.send needs a tokenizer; use send_ids for token ids")
        context = self.text + text
        new_ids = self._run(encode_text(self.tokenizer, context), sampling)
        completion = truncate_text(self.tokenizer.decode(new_ids), self.stop_patterns)
        self.text = context + completion
        self.ids = encode_text(self.tokenizer, self.text)
        return completion

    def send_ids(self, ids: Sequence[int], *, sampling: SamplingParams | None = None) -> list[int]:
        """Token-level turn: append ``ids``, sample, append the sampled ids; return them."""
        context = [*self.ids, *map(int, ids)]
        new_ids = self._run(context, sampling)
        self.ids = context + new_ids
        return new_ids

    # ---- internals -----------------------------------------------------------------------
    def _run(self, context: list[int], sampling: SamplingParams | None) -> list[int]:
        sp = sampling or self.sampling
        if not context:
            raise ValueError("the context is empty: send at least one token")
        bad = [t for t in context if not 0 <= t < self.config.vocab_size]
        if bad:
            raise ValueError(f"token id {bad[0]} outside [0, {self.config.vocab_size})")
        # longest prefix already cached (keep >= 1 token to prefill so we have logits)
        common = 0
        for a, b in zip(self._cached, context[:-1], strict=False):
            if a != b:
                break
            common += 1
        keep_slots = self._slots[common - 1] + 1 if common else 0
        self._cache = _rollback(self._cache, jnp.int32(keep_slots), jnp.int32(common))
        del self._cached[common:], self._slots[common:]
        chunk = context[common:]
        tokens, mask = left_pad([chunk], self.config.pad_id, self.chunk_multiple)
        need = keep_slots + tokens.shape[1] + sp.max_new_tokens
        if need > self.max_len:
            raise ValueError(
                f"context of {len(context)} tokens + {sp.max_new_tokens} new tokens does not fit "
                f"the session cache (max_len={self.max_len}); start a new Session"
            )
        self._key, sub = jax.random.split(self._key)
        knobs, flags = _knobs(sp)
        out, n_gen, done, self._cache = prefill_and_decode(
            self.params, self._cache, jnp.asarray(tokens), jnp.asarray(mask), sub,
            knobs=knobs, stop_ids=_stop_array(self.config, self.stop_token_ids),
            config=self.config, max_new_tokens=sp.max_new_tokens, flags=flags,
            vocab_limit=decodable_ids(self.tokenizer), empty_cache=keep_slots == 0,
        )  # fmt: skip
        n = int(n_gen[0])
        generated = np.asarray(out)[0, :n].tolist()
        first = keep_slots + tokens.shape[1] - len(chunk)
        self._slots += list(range(first, first + len(chunk) + n))
        self._cached += chunk + generated
        stopped = bool(done[0])
        return generated[: n - 1] if stopped else generated
