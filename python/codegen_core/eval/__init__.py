"""Evaluation: sandboxed execution, HumanEval pass@k, MTPB and HumanEval-Infilling.

Submodules load nothing heavy at import time (no JAX, no torch): the model is reached only
through the :class:`codegen_core.eval.sampler.Sampler` protocol.
"""

from __future__ import annotations

from codegen_core.eval.passk import estimate_pass_at_k, pass_at_k
from codegen_core.eval.sandbox import ExecResult, Limits, Program, SandboxPool, Status, run_program

__all__ = [
    "ExecResult",
    "Limits",
    "Program",
    "SandboxPool",
    "Status",
    "estimate_pass_at_k",
    "pass_at_k",
    "run_program",
]
