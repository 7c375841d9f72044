"""Sampling from the JAX model: ``generate`` (one compiled decode loop), CodeGen2 ``infill``
and a multi-turn ``Session`` that reuses its KV cache across turns."""

from __future__ import annotations

from codegen_core.sampling.generate import GenerationOutput, generate
from codegen_core.sampling.infill import infill
from codegen_core.sampling.logits import sample_next, top_k_filter, top_p_filter
from codegen_core.sampling.session import Session
from codegen_core.sampling_params import SamplingParams
from codegen_core.tokenizer.fim import infill_prompt

__all__ = [
    "GenerationOutput",
    "SamplingParams",
    "Session",
    "generate",
    "infill",
    "infill_prompt",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
]
