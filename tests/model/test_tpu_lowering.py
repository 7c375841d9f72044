"""A train step and a decode step of the whole model lower for TPU without TPU hardware.

``jax.jit(f).trace(*abstract args).lower(lowering_platforms=("tpu",))`` with
``kernel_platform="tpu"`` (the dispatch rule targets TPU from this CPU host) must contain the
Pallas kernels as ``tpu_custom_call``s: flash attention forward and backward (dq, dk/dv) and
the rotary kernel and its inverse in the train step; decode attention and rotary in the
decode step. Shapes are the real presets (350M, 2B with head_dim 80 and rotary 64, CodeGen2.5
7B) with default block sizes at their training context (2048); params are
``jax.ShapeDtypeStruct``s (no memory) and 2 layers (the layers are one scanned step in the
train step, so depth does not change what lowers). Nothing here is compiled or run.
"""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import optax
import pytest

from codegen_core.model import transformer
from codegen_core.model.config import CodeGenConfig, get_preset
from codegen_core.train.step import StepOptions, train_step

PRESETS = ["codegen-350M", "codegen-2B", "codegen25-7B"]


def _config(name: str) -> CodeGenConfig:
    return get_preset(name).replace(n_layer=2, kernel_platform="tpu")


def _kernels(lowered: Any) -> set[str]:
    text = lowered.as_text()
    assert "tpu_custom_call" in text
    return set(re.findall(r'kernel_name = "(\w+)"', text))


@pytest.mark.parametrize("name", PRESETS)
def test_train_step_lowers_for_tpu(name: str) -> None:
    config = _config(name)
    params = jax.eval_shape(
        lambda: transformer.init_unjitted(config, jax.random.key(0), stacked=True)
    )
    opt = optax.adamw(1e-4)
    state = {"params": params, "opt_state": jax.eval_shape(opt.init, params),
             "step": jax.ShapeDtypeStruct((), jnp.int32)}  # fmt: skip
    b, t = 1, config.n_ctx
    ids = jax.ShapeDtypeStruct((b, t), jnp.int32)
    batch = {"tokens": ids, "segment_ids": ids, "positions": ids,
             "prefix_mask": jax.ShapeDtypeStruct((b, t), bool)}  # fmt: skip
    opts = StepOptions(compute_dtype="bfloat16", remat="full")

    def step(state: Any, batch: Any) -> Any:
        return train_step(state, batch, config=config, optimizer=opt,
                          schedule=lambda s: 1e-4, opts=opts)  # fmt: skip

    lowered = jax.jit(step).trace(state, batch).lower(lowering_platforms=("tpu",))
    want = {"flash_attention_fwd", "flash_attention_bwd_dq", "flash_attention_bwd_dkv",
            "rotary", "rotary_inverse"}  # fmt: skip
    assert want <= _kernels(lowered)


@pytest.mark.parametrize("name", PRESETS)
def test_decode_step_lowers_for_tpu(name: str) -> None:
    config = _config(name)
    params = jax.eval_shape(
        lambda: transformer.init_unjitted(config, jax.random.key(0), dtype=jnp.bfloat16)
    )
    batch, slots = 8, config.n_ctx
    cache = jax.eval_shape(lambda: transformer.init_cache(config, batch, slots, jnp.bfloat16))
    tok = jax.ShapeDtypeStruct((batch, 1), jnp.int32)
    live = jax.ShapeDtypeStruct((batch, 1), bool)

    def step(params: Any, cache: Any, tok: Any, live: Any) -> Any:
        return transformer.forward(params, tok, config, token_mask=live, cache=cache,
                                   dense_impl="xla")  # fmt: skip

    lowered = jax.jit(step).trace(params, cache, tok, live).lower(lowering_platforms=("tpu",))
    assert {"decode_attention", "rotary"} <= _kernels(lowered)
    # a prefill into an empty cache (the sampler's first call) takes the flash kernel
    prompt = jax.ShapeDtypeStruct((batch, 256), jnp.int32)
    mask = jax.ShapeDtypeStruct((batch, 256), bool)

    def prefill(params: Any, cache: Any, tok: Any, mask: Any) -> Any:
        return transformer.forward(params, tok, config, token_mask=mask, cache=cache,
                                   last_only=True, empty_cache=True, dense_impl="xla")  # fmt: skip

    lowered = jax.jit(prefill).trace(params, cache, prompt, mask).lower(lowering_platforms=("tpu",))
    assert {"flash_attention_fwd", "rotary"} <= _kernels(lowered)
