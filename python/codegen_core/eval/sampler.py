"""How evaluation talks to a model: the :class:`Sampler` protocol and CodeGen's truncation.

Evaluation never imports JAX. A model plugs in by implementing :class:`Sampler` (the JAX
generator in ``codegen_core.generate`` is expected to provide ``load_sampler(model_dir)``
returning one); tests and users can pass any object with a ``sample`` method.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "STOP_PATTERNS",
    "Sampler",
    "SamplingParams",
    "load_sampler",
    "truncate_completion",
]

# CodeGen's terminals (mtpb_sample.py ``truncate``): multiline regexes, the earliest match cuts.
STOP_PATTERNS: tuple[str, ...] = (r"^#", re.escape("<|endoftext|>"), r"^'''", r'^"""', r"\n\n\n")
_TERMINALS = tuple(re.compile(p, re.MULTILINE) for p in STOP_PATTERNS)
_PRINT = re.compile(r"^print", re.MULTILINE)
_DEF = re.compile(r"^def", re.MULTILINE)


def truncate_completion(completion: str) -> str:
    """CodeGen's completion truncation, rule for rule (idempotent).

    Cut before the second top-level ``print``, then before the second top-level ``def``, then
    at the earliest of the terminals ``^#``, ``<|endoftext|>``, ``^'''``, ``^\"\"\"``,
    ``\\n\\n\\n``.
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str, got {type(completion).__name__}")
    prints = list(_PRINT.finditer(completion))
    if len(prints) > 1:
        completion = completion[: prints[1].start()]
    defs = list(_DEF.finditer(completion))
    if len(defs) > 1:
        completion = completion[: defs[1].start()]
    cuts = [m.start() for m in (t.search(completion) for t in _TERMINALS) if m]
    return completion[: min(cuts)] if cuts else completion


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings for one batch of prompts (CodeGen's HumanEval defaults)."""

    n: int = 1  # completions per prompt
    temperature: float = 0.2
    top_p: float = 0.95
    max_new_tokens: int = 128
    stop: tuple[str, ...] = STOP_PATTERNS  # regexes (re.MULTILINE); a sampler may stop early
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"SamplingParams.n must be a positive int, got {self.n!r}")
        if not self.temperature >= 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature!r}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(
                f"SamplingParams.max_new_tokens must be a positive int, got {self.max_new_tokens!r}"
            )


@runtime_checkable
class Sampler(Protocol):
    """Anything that continues prompts.

    ``sample(prompts, params)`` returns, for each prompt, ``params.n`` raw completions (text
    after the prompt, untruncated; the evaluation applies :func:`truncate_completion`). A
    sampler may stop a sequence early once any ``params.stop`` pattern has matched - that
    only saves time, since truncation cuts there anyway - and must not stop before
    ``max_new_tokens`` otherwise. Temperature 0 means greedy.
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


def load_sampler(model_dir: str, **options: Any) -> Sampler:
    """A sampler for a checkpoint directory (imports JAX only now).

    Uses ``codegen_core.generate.load_sampler(model_dir, **options)`` when that module
    exists, else :class:`codegen_core.eval.model_sampler.JaxSampler` over
    ``codegen_core.sampling``; raises ``RuntimeError`` naming what is missing otherwise.
    """
    try:
        generate = importlib.import_module("codegen_core.generate")
    except ImportError:
        generate = None
    factory = getattr(generate, "load_sampler", None)
    if factory is None:
        try:
            importlib.import_module("codegen_core.sampling")
        except ImportError as exc:
            raise RuntimeError(
                f"cannot sample from --model {model_dir!r}: neither codegen_core.generate nor "
                f"codegen_core.sampling is available ({exc}). Score an existing samples file "
                "instead (--samples)."
            ) from exc
        from codegen_core.eval.model_sampler import JaxSampler  # noqa: PLC0415 - heavy

        factory = JaxSampler
    sampler = factory(model_dir, **options)
    if not isinstance(sampler, Sampler):
        raise TypeError(f"load_sampler({model_dir!r}) returned {sampler!r}, not a Sampler")
    return sampler
