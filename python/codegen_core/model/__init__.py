"""The JAX CodeGen-family model: config and presets, pure forward functions, KV cache,
attention dispatch and transformers checkpoint import/export."""

from __future__ import annotations

from codegen_core.model.attention import attention, pallas_ok, xla_attention
from codegen_core.model.config import PRESETS, TINY_PRESETS, CodeGenConfig, get_preset
from codegen_core.model.hf_io import load_hf_checkpoint, save_hf_checkpoint
from codegen_core.model.transformer import (
    KVCache,
    Params,
    count_params,
    forward,
    init,
    init_cache,
    param_axes,
    stack_layers,
    unstack_layers,
)

__all__ = [
    "PRESETS",
    "TINY_PRESETS",
    "CodeGenConfig",
    "KVCache",
    "Params",
    "attention",
    "count_params",
    "forward",
    "get_preset",
    "init",
    "init_cache",
    "load_hf_checkpoint",
    "pallas_ok",
    "param_axes",
    "save_hf_checkpoint",
    "stack_layers",
    "unstack_layers",
    "xla_attention",
]
