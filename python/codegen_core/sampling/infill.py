"""CodeGen2-style infilling: the model writes the middle between a prefix and a suffix.

Prompt (CodeGen2 / 2.5): ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``; the model
writes the middle and ends it with ``<eom>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import Params
from codegen_core.sampling.generate import SamplingParams, encode, generate


def _special(tokenizer: Any, token: str) -> int:
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise ValueError(f"tokenizer has no {token!r} token: infill needs a CodeGen2 tokenizer")
    return int(tid)


def infill_prompt(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """Token ids of ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``.

    Special tokens are inserted by id, the texts encoded separately (what a tokenizer that
    splits on added tokens does with the concatenated string).
    """
    mask1 = _special(tokenizer, "<mask_1>")
    return [
        *encode(tokenizer, prefix), mask1, *encode(tokenizer, suffix),
        _special(tokenizer, "<|endoftext|>"), _special(tokenizer, "<sep>"), mask1,
    ]  # fmt: skip


def cut_middle(ids: Sequence[int], eom_id: int, eos_id: int) -> list[int]:
    """The middle: generated ids up to (excluding) the first ``<eom>`` or EOS."""
    out = []
    for t in ids:
        if t in (eom_id, eos_id):
            break
        out.append(int(t))
    return out


def infill(
    params: Params,
    config: CodeGenConfig,
    tokenizer: Any,
    prefix: str | Sequence[str],
    suffix: str | Sequence[str],
    *,
    sampling: SamplingParams | None = None,
    num_samples: int = 1,
    seed: int | jax.Array | None = 0,
) -> list[str]:
    """Middles for one (prefix, suffix) pair or for parallel lists of them.

    Returns ``num_samples`` strings per pair, pair-major.
    """
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    suffixes = [suffix] if isinstance(suffix, str) else list(suffix)
    if len(prefixes) != len(suffixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
    prompts = [infill_prompt(tokenizer, p, s) for p, s in zip(prefixes, suffixes, strict=True)]
    eom = _special(tokenizer, "<eom>")
    eos = _special(tokenizer, "<|endoftext|>")
    out = generate(
        params, config, prompts, sampling=sampling, num_samples=num_samples, seed=seed,
        stop_token_ids=(eom, eos), tokenizer=tokenizer,  # only ids it can decode are sampled
    )  # fmt: skip
    return [tokenizer.decode(cut_middle(ids, eom, eos)) for ids in out.tokens]
