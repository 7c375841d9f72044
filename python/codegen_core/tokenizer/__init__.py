"""The CodeGen tokenizers: byte-level BPE with a native core (``Tokenizer``), the specs they
are built from, a slow pure-Python reference, and CodeGen's stop-pattern truncation."""

from __future__ import annotations

from codegen_core.tokenizer.core import Tokenizer
from codegen_core.tokenizer.spec import (
    AddedToken,
    TokenizerFileError,
    TokenizerSpec,
    find_gpt2_files,
)
from codegen_core.tokenizer.stop import DEFAULT_STOP_PATTERNS, truncate_before_pattern

__all__ = [
    "DEFAULT_STOP_PATTERNS",
    "AddedToken",
    "Tokenizer",
    "TokenizerFileError",
    "TokenizerSpec",
    "find_gpt2_files",
    "truncate_before_pattern",
]
