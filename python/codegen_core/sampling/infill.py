"""CodeGen2-style infilling: the model writes the middle between a prefix and a suffix.

Prompt (CodeGen2 / 2.5, built by :func:`codegen_core.tokenizer.fim.infill_prompt`):
``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``; the model writes the middle and
ends it with ``<eom>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax

from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import Params
from codegen_core.sampling.generate import generate
from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.fim import EOM, EOS, infill_prompt, special_id

__all__ = ["cut_middle", "infill", "infill_prompt"]


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
    num_samples: int | None = None,
    seed: int | jax.Array | None = None,
) -> list[str]:
    """Middles for one (prefix, suffix) pair or for parallel lists of them.

    Returns ``num_samples`` (default ``sampling.n``) strings per pair, pair-major. The
    prefix and suffix are text: control-token strings in them stay text.
    """
    prefixes = [prefix] if isinstance(prefix, str) else list(prefix)
    suffixes = [suffix] if isinstance(suffix, str) else list(suffix)
    if len(prefixes) != len(suffixes):
        raise ValueError(f"{len(prefixes)} prefixes but {len(suffixes)} suffixes")
    prompts = [infill_prompt(tokenizer, p, s) for p, s in zip(prefixes, suffixes, strict=True)]
    eom = special_id(tokenizer, EOM)
    eos = special_id(tokenizer, EOS)
    # tokenizer: only ids it can decode are sampled; the middle is cut from the ids
    out = generate(
        params, config, prompts, sampling=sampling, num_samples=num_samples, seed=seed,
        stop_token_ids=(eom, eos), tokenizer=tokenizer, stop_patterns=(),
    )  # fmt: skip
    return [tokenizer.decode(cut_middle(ids, eom, eos)) for ids in out.tokens]
