"""The model's real paths through the Pallas kernels (interpret mode on CPU) against XLA.

``attention_impl="pallas", rotary_impl="pallas", interpret=True`` runs the TPU flash-attention
and rotary kernels' code in interpret mode. For a CodeGen config with head_dim 80 and rotary
64 of 80 (GPT-J interleaved, partial) and a LLaMA-shaped config (NeoX halves, full rotary):
the forward, the train step's gradient on packed documents with prefix-LM, and a greedy
generation (KV-cache steps through the decode kernel) equal the XLA paths; the same on a 2x2 mesh of simulated CPU devices, where the
kernels run inside ``shard_map``.

Tolerances: fp32 logits 1e-4 absolute and gradients 1e-4 relative to the largest gradient
entry (the kernels and XLA differ only by fp32 summation order: online vs one-shot softmax,
fp32 rotary formula as a lane rotation). bf16 parameters: 2e-2 of the largest |logit| of the
bf16 XLA reference. Generation: the same greedy tokens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codegen_core.model.attention import kernel_backend
from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import forward, init, init_cache, kernels_for, stack_layers
from codegen_core.sampling.generate import generate
from codegen_core.sampling_params import SamplingParams
from codegen_core.train.step import StepOptions, grads_and_sums

ROOT = Path(__file__).resolve().parents[2]

# head_dim 80 with 64 rotary features (CodeGen2-style partial interleaved rotary)
CODEGEN = CodeGenConfig(
    name="pallas-codegen", vocab_size=96, n_layer=2, d_model=160, n_head=2, rotary_dim=64,
    n_ctx=64, qkv_mp_num=2, eos_token_id=95, bos_token_id=95,
)  # fmt: skip
# LLaMA-shaped (CodeGen2.5): RMSNorm, SwiGLU, full NeoX rotary, head_dim 64
LLAMA = CodeGenConfig(
    name="pallas-llama", arch="llama", vocab_size=96, n_layer=2, d_model=128, n_head=2,
    d_ff=96, rotary_dim=None, n_ctx=64, qkv_mp_num=1, norm_eps=1e-6, eos_token_id=95,
    bos_token_id=1,
)  # fmt: skip
CONFIGS = {"codegen": CODEGEN, "llama": LLAMA}

FP32_ATOL = 1e-4
GRAD_RTOL = 1e-4
BF16_REL = 2e-2


def pallas(config: CodeGenConfig) -> CodeGenConfig:
    return config.replace(attention_impl="pallas", rotary_impl="pallas", interpret=True)


def xla(config: CodeGenConfig) -> CodeGenConfig:
    return config.replace(attention_impl="xla", rotary_impl="xla")


def packed_batch(batch: int = 2, t: int = 16) -> dict[str, jax.Array]:
    """Rows of packed documents (ids 1.., padding 0) with per-document positions and a
    prefix-LM mask over the first 2 tokens of every document."""
    lengths = [[5, 7], [3, 13], [9, 7], [16]]
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, 90, size=(batch, t))
    seg = np.zeros((batch, t), np.int32)
    pos = np.zeros((batch, t), np.int32)
    prefix = np.zeros((batch, t), bool)
    for r in range(batch):
        start = 0
        for d, n in enumerate(lengths[r % len(lengths)]):
            seg[r, start : start + n] = d + 1
            pos[r, start : start + n] = np.arange(n)
            prefix[r, start : start + 2] = True
            start += n
    return {"tokens": jnp.asarray(tokens, jnp.int32), "segment_ids": jnp.asarray(seg),
            "positions": jnp.asarray(pos), "prefix_mask": jnp.asarray(prefix)}  # fmt: skip


# ---- checks shared by the single-device tests and the 2x2 mesh subprocess -----------------
def check_forward(config: CodeGenConfig, params: Any, batch: int = 2) -> None:
    ids = jax.random.randint(jax.random.key(1), (batch, 12), 0, config.vocab_size)
    mask = jnp.ones((batch, 12), bool).at[1, :4].set(False)  # a left-padded row
    fwd = jax.jit(lambda p, i, m, c: forward(p, i, c, token_mask=m)[0], static_argnums=3)
    want = np.asarray(fwd(params, ids, mask, xla(config)))
    got = np.asarray(fwd(params, ids, mask, pallas(config)))
    real = np.asarray(mask)
    np.testing.assert_allclose(got[real], want[real], atol=FP32_ATOL)
    # the kernels really ran: both pallas_calls are in the program, and none on the XLA path
    jaxpr = str(jax.make_jaxpr(lambda p, i: forward(p, i, pallas(config))[0])(params, ids))
    assert "pallas_call" in jaxpr and "rotary" in jaxpr and "flash" in jaxpr, jaxpr[:1000]
    jaxpr = str(jax.make_jaxpr(lambda p, i: forward(p, i, xla(config))[0])(params, ids))
    assert "pallas_call" not in jaxpr


def check_train_gradient(config: CodeGenConfig, params: Any, batch: int = 2) -> None:
    """The train step's gradient (stacked params, scanned layers) on packed documents with
    prefix-LM: Pallas flash forward + backward kernels and the rotary kernel's VJP."""
    data = packed_batch(batch)
    opts = StepOptions()
    step = jax.jit(lambda p, b, c: grads_and_sums(p, b, c, opts), static_argnums=2)
    g_want, s_want = step(params, data, xla(config))
    g_got, s_got = step(params, data, pallas(config))
    np.testing.assert_allclose(float(s_got["ce"]), float(s_want["ce"]), rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(g_want))
    for path, a, b in zip(jax.tree_util.tree_leaves_with_path(g_got), jax.tree.leaves(g_got),
                          jax.tree.leaves(g_want), strict=True):  # fmt: skip
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=GRAD_RTOL * scale,
                                   err_msg=jax.tree_util.keystr(path[0]))  # fmt: skip


def check_generation(config: CodeGenConfig, params: Any, n_prompts: int = 2) -> None:
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13, 14], [3], [20, 21, 22, 23]][:n_prompts]
    sp = SamplingParams(max_new_tokens=6)
    want = generate(params, xla(config), prompts, sampling=sp, stop_token_ids=[-1])
    got = generate(params, pallas(config), prompts, sampling=sp, stop_token_ids=[-1])
    assert got.tokens == want.tokens
    assert all(len(t) == 6 for t in got.tokens)
    # a decode step runs the decode kernel (and the rotary kernel), the XLA config neither
    cache = init_cache(config, n_prompts, 16)
    one = jnp.zeros((n_prompts, 1), jnp.int32)
    step = lambda p, c, cfg: forward(p, one, cfg, cache=c)[0]
    jaxpr = str(jax.make_jaxpr(lambda p, c: step(p, c, pallas(config)))(params, cache))
    assert "decode_attention" in jaxpr and "rotary" in jaxpr
    assert "pallas_call" not in str(
        jax.make_jaxpr(lambda p, c: step(p, c, xla(config)))(params, cache)
    )


# ---- the dispatch rule --------------------------------------------------------------------
def test_config_fields_stay_out_of_config_json() -> None:
    cfg = pallas(CODEGEN)
    # (from_hf_config builds CodeGen with qkv_mp_num 4 first: 4 heads)
    for base in (CODEGEN.replace(d_model=320, n_head=4, qkv_mp_num=4), LLAMA):
        hf = base.replace(attention_impl="xla", rotary_impl="pallas", interpret=True).to_hf_config()
        assert not {"attention_impl", "rotary_impl", "interpret"} & set(hf)
        back = CodeGenConfig.from_hf_config(hf, qkv_mp_num=base.qkv_mp_num)
        assert back.replace(name=base.name) == base  # the defaults: "auto", no interpret
    with pytest.raises(ValueError, match="attention_impl must be 'auto', 'pallas' or 'xla'"):
        cfg.replace(attention_impl="triton")
    with pytest.raises(ValueError, match="rotary_impl must be"):
        cfg.replace(rotary_impl="cuda")
    with pytest.raises(TypeError, match="interpret must be a bool"):
        cfg.replace(interpret="yes")


def test_dispatch_rule() -> None:
    # auto: the kernel where the backend has a lowering, XLA elsewhere
    assert kernel_backend("attention", "auto", platform="tpu") == "tpu"
    assert kernel_backend("attention", "auto", platform="gpu") == "gpu"
    assert kernel_backend("attention", "auto", platform="cpu") == "xla"
    assert kernel_backend("rotary", "auto", platform="tpu") == "tpu"
    assert kernel_backend("rotary", "auto", platform="gpu") == "xla"  # Mosaic kernel only
    assert kernel_backend("rotary", "xla", platform="tpu") == "xla"
    # interpret: the TPU kernels interpreted, anywhere
    assert kernel_backend("attention", "auto", interpret=True, platform="cpu") == "tpu"
    assert kernel_backend("rotary", "pallas", interpret=True, platform="gpu") == "tpu"
    # pallas where it cannot run: an error that says why
    with pytest.raises(ValueError, match="only on TPU and GPU, and the backend here is 'cpu'"):
        kernel_backend("attention", "pallas", platform="cpu")
    with pytest.raises(ValueError, match="only on TPU, and the backend here is 'gpu'"):
        kernel_backend("rotary", "pallas", platform="gpu")
    with pytest.raises(ValueError, match="attention_impl must be"):
        kernel_backend("attention", "pallas-interpret")
    if jax.default_backend() == "cpu":
        params = init(CODEGEN, jax.random.key(0))
        ids = jnp.zeros((1, 4), jnp.int32)
        with pytest.raises(ValueError, match=r"rotary_impl='pallas'.*interpret=True"):
            forward(params, ids, CODEGEN.replace(rotary_impl="pallas"))
        with pytest.raises(ValueError, match="attention_impl='pallas'"):
            forward(params, ids, CODEGEN.replace(attention_impl="pallas"))
    # the forward's attn_impl overrides only when it names an implementation
    assert kernels_for(pallas(CODEGEN), "auto").attention == "tpu"
    assert kernels_for(pallas(CODEGEN), "xla").attention == "xla"
    k = kernels_for(CODEGEN, "pallas-interpret")
    assert (k.attention, k.rotary, k.interpret) == ("tpu", kernels_for(CODEGEN).rotary, True)
    # decode steps take the decode kernel where attention_impl asks for it and it runs
    assert kernel_backend("decode", "auto", platform="tpu") == "tpu"
    assert kernel_backend("decode", "auto", platform="gpu") == "xla"
    with pytest.raises(ValueError, match="decode kernel has a compiled lowering only on TPU"):
        kernel_backend("decode", "pallas", platform="gpu")


_BROKEN_IMPORT = textwrap.dedent(
    """
    import importlib.abc, sys

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == sys.argv[1]:
                raise RuntimeError("kernel module is broken")
            return None

    sys.meta_path.insert(0, Broken())
    import codegen_core.model.transformer
    print("IMPORTED")
    """
)


@pytest.mark.parametrize("module", ["flash_attention", "rotary"])
def test_broken_kernel_module_fails_the_model_import(module: str) -> None:
    """No try/except ImportError fallback: a broken kernel module breaks the model import."""
    name = f"codegen_core.pallas_kernels.{module}"
    proc = subprocess.run([sys.executable, "-c", _BROKEN_IMPORT, name], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and "IMPORTED" not in proc.stdout, proc.stdout + proc.stderr
    assert "kernel module is broken" in proc.stderr, proc.stderr[-2000:]


# ---- the model through the kernels, one device --------------------------------------------
@pytest.fixture(scope="module", params=["codegen", "llama"])
def model(request: pytest.FixtureRequest) -> tuple[CodeGenConfig, Any]:
    config = CONFIGS[request.param]
    return config, init(config, jax.random.key(0))


def test_forward_matches_xla(model: tuple[CodeGenConfig, Any]) -> None:
    check_forward(*model)


def test_forward_bf16_matches_bf16_xla(model: tuple[CodeGenConfig, Any]) -> None:
    config, params = model
    params = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
    ids = jax.random.randint(jax.random.key(2), (2, 12), 0, config.vocab_size)
    fwd = jax.jit(lambda p, i, c: forward(p, i, c)[0], static_argnums=2)
    want = np.asarray(fwd(params, ids, xla(config)))
    got = np.asarray(fwd(params, ids, pallas(config)))
    np.testing.assert_allclose(got, want, atol=BF16_REL * np.abs(want).max())


def test_train_gradient_matches_xla(model: tuple[CodeGenConfig, Any]) -> None:
    config, params = model
    check_train_gradient(config, stack_layers(params))


def test_greedy_generation_matches_xla(model: tuple[CodeGenConfig, Any]) -> None:
    check_generation(*model)


# ---- the same on a 2x2 mesh (shard_map) ---------------------------------------------------
_MESH_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, "tests/model")
    import jax, numpy as np
    from jax.sharding import Mesh
    from codegen_core.model import axes as ax
    from codegen_core.model.transformer import init, stack_layers
    import test_pallas_paths as t

    assert jax.device_count() == 4, jax.devices()
    mesh = Mesh(np.array(jax.devices()).reshape(2, 1, 2), ax.MESH_AXES)  # data 2, tensor 2
    for name, config in t.CONFIGS.items():
        params = init(config, jax.random.key(0))
        with ax.axis_rules(mesh):
            t.check_forward(config, params, batch=4)
            t.check_train_gradient(config, stack_layers(params), batch=4)
            if name == "codegen":  # (CI time: the decode loop is the slow part interpreted)
                t.check_generation(config, params, n_prompts=4)
            # the kernels really run in shard_map
            f = jax.jit(lambda p, i: t.forward(p, i, t.pallas(config))[0])
            text = f.lower(params, np.zeros((4, 8), np.int32)).as_text()
            assert "shard_map" in text or "sdy.manual_computation" in text, text[:2000]
        print(name, "OK")
    """
)


def test_kernels_under_a_2x2_mesh() -> None:
    """4 simulated CPU devices, mesh (data=2, fsdp=1, tensor=2): batch and heads split; the
    forward and the train gradient (both configs) and greedy generation (CodeGen) equal the
    XLA paths."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", _MESH_SCRIPT], check=False, env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "llama OK" in proc.stdout, out[-4000:]
