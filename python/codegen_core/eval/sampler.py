"""How evaluation talks to a model: the :class:`Sampler` protocol and CodeGen's truncation.

Evaluation never imports JAX. A model plugs in by implementing :class:`Sampler`: the JAX
model's is :class:`codegen_core.eval.model_sampler.JaxSampler`; tests and users can pass any
object with a ``sample`` method. The settings are the library's one
:class:`~codegen_core.sampling_params.SamplingParams`, and the truncation CodeGen's rule,
:func:`codegen_core.tokenizer.stop.truncate_before_pattern` (re-exported here under the
names the evaluation modules use).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.stop import DEFAULT_STOP_PATTERNS as STOP_PATTERNS
from codegen_core.tokenizer.stop import truncate_before_pattern as truncate_completion

__all__ = [
    "STOP_PATTERNS",
    "Sampler",
    "SamplingParams",
    "check_samples",
    "truncate_completion",
]


@runtime_checkable
class Sampler(Protocol):
    """Anything that continues prompts.

    ``sample(prompts, params)`` returns, for each prompt, ``params.n`` raw completions (text
    after the prompt, untruncated; the evaluation applies :func:`truncate_completion`). A
    sampler may stop a sequence early once any ``params.stop`` pattern has matched - that
    only saves time, since truncation cuts there anyway - and must not stop before
    ``max_new_tokens`` otherwise. Temperature 0 means greedy.

    Prompts are built by the evaluation harness. The control tokens of CodeGen2's infill
    format (:data:`codegen_core.tokenizer.fim.INFILL_CONTROL_TOKENS`: ``<mask_1>``,
    ``<|endoftext|>``, ``<sep>``) written in a prompt stand for those tokens (so a text
    prompt cannot hold those three strings as text); any other special-token text is
    ordinary text.
    """

    def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]: ...


def check_samples(prompts: Sequence[str], params: SamplingParams, out: object) -> list[list[str]]:
    """Validate a sampler's answer shape, naming what is wrong."""
    if not isinstance(out, list) or len(out) != len(prompts):
        raise TypeError(
            f"sampler returned {type(out).__name__} of length "
            f"{len(out) if isinstance(out, list) else '?'} for {len(prompts)} prompts"
        )
    for i, row in enumerate(out):
        if not isinstance(row, list) or len(row) != params.n:
            raise TypeError(f"sampler returned {row!r:.80} for prompt {i}; want {params.n} strs")
        for text in row:
            if not isinstance(text, str):
                raise TypeError(f"sampler returned a {type(text).__name__} for prompt {i}")
    return out  # type: ignore[return-value]
