"""codegen-core: build, train, sample and evaluate CodeGen-family code LLMs.

This is the public API. Heavy submodules (JAX model, evaluation) load on first use, so
``import codegen_core`` stays cheap and never needs JAX or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily on first attribute access)
_LAZY: dict[str, str] = {
    "Tokenizer": "codegen_core.tokenizer",
    "TokenizerSpec": "codegen_core.tokenizer",
    "AddedToken": "codegen_core.tokenizer",
    "TokenizerFileError": "codegen_core.tokenizer",
    "truncate_before_pattern": "codegen_core.tokenizer",
    "DEFAULT_STOP_PATTERNS": "codegen_core.tokenizer",
    "CodeGenConfig": "codegen_core.model",
    "load_hf_checkpoint": "codegen_core.model",
    "save_hf_checkpoint": "codegen_core.model",
    "generate": "codegen_core.sampling",
    "SamplingParams": "codegen_core.sampling_params",
    "infill": "codegen_core.sampling",
    "Session": "codegen_core.sampling",
}

if TYPE_CHECKING:  # pragma: no cover
    from codegen_core.model import (
        CodeGenConfig,
        load_hf_checkpoint,
        save_hf_checkpoint,
    )
    from codegen_core.sampling import Session, generate, infill
    from codegen_core.sampling_params import SamplingParams
    from codegen_core.tokenizer import (
        DEFAULT_STOP_PATTERNS,
        AddedToken,
        Tokenizer,
        TokenizerFileError,
        TokenizerSpec,
        truncate_before_pattern,
    )

__all__ = [  # noqa: RUF022 - the lazy names, in _LAZY's order
    "__version__",
    "AddedToken",
    "DEFAULT_STOP_PATTERNS",
    "Tokenizer",
    "TokenizerFileError",
    "TokenizerSpec",
    "truncate_before_pattern",
    "CodeGenConfig",
    "load_hf_checkpoint",
    "save_hf_checkpoint",
    "generate",
    "SamplingParams",
    "infill",
    "Session",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codegen_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
