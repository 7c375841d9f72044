"""Presets, parameter counts, config.json round trips and bad-config errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from hf_models import hf_classes, hf_config

from codegen_core.model import (
    PRESETS,
    TINY_PRESETS,
    CodeGenConfig,
    count_params,
    get_preset,
    init,
    param_axes,
)

# Published sizes (parameter names in the model card / paper), as a loose sanity anchor.
_PUBLISHED = {"codegen-350M": 356.7e6, "codegen-2B": 2.78e9, "codegen-6B": 6.86e9,
              "codegen-16B": 16.1e9, "codegen25-7B": 6.9e9}  # fmt: skip


@pytest.mark.parametrize("name", [*PRESETS, *TINY_PRESETS])
def test_preset_shapes_and_count(name: str) -> None:
    config = get_preset(name)
    shapes = jax.eval_shape(lambda k: init(config, k), jax.random.key(0))
    assert count_params(shapes) == config.num_params()
    # every parameter has one logical axis name per dimension
    axes = param_axes(config)
    names = jax.tree.leaves(axes, is_leaf=lambda x: isinstance(x, tuple))
    arrays = jax.tree.leaves(shapes)
    assert len(names) == len(arrays)
    assert all(len(n) == a.ndim for n, a in zip(names, arrays, strict=True))
    if name in _PUBLISHED:
        assert abs(config.num_params() / _PUBLISHED[name] - 1) < 0.03


@pytest.mark.parametrize("name", list(PRESETS))
def test_param_count_matches_transformers(name: str) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    config = get_preset(name)
    _, model_cls = hf_classes(config.arch)
    with torch.device("meta"):
        model = model_cls(hf_config(config))
    assert sum(p.numel() for p in model.parameters()) == config.num_params()


@pytest.mark.parametrize("name", [*PRESETS, *TINY_PRESETS])
def test_hf_config_round_trip(name: str) -> None:
    config = get_preset(name)
    back = CodeGenConfig.from_hf_config(config.to_hf_config())
    keep = {"name": back.name}
    if config.arch == "codegen" and name not in PRESETS:
        keep["qkv_mp_num"] = back.qkv_mp_num  # tiny shapes match no published preset
    assert back == config.replace(**keep)


def test_mp_num_sources() -> None:
    hf = get_preset("codegen2-1B").to_hf_config()
    assert CodeGenConfig.from_hf_config(hf).qkv_mp_num == 8  # from the preset shape
    assert CodeGenConfig.from_hf_config(hf, qkv_mp_num=4).qkv_mp_num == 4  # argument wins
    assert CodeGenConfig.from_hf_config({**hf, "n_layer": 3}).qkv_mp_num == 4  # default
    assert CodeGenConfig.from_hf_config({**hf, "n_layer": 3, "mp_num": 8}).qkv_mp_num == 8


def test_bad_configs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="divisible by n_head"):
        CodeGenConfig(d_model=100, n_head=16)
    with pytest.raises(ValueError, match="rotary_dim"):
        CodeGenConfig(rotary_dim=65)
    with pytest.raises(ValueError, match="qkv_mp_num"):
        CodeGenConfig(n_head=6, d_model=96, rotary_dim=8)
    with pytest.raises(ValueError, match="unknown preset 'codegen-1T'"):
        get_preset("codegen-1T")
    with pytest.raises(ValueError, match="model_type='gpt2'"):
        CodeGenConfig.from_hf_config({"model_type": "gpt2"})
    with pytest.raises(ValueError, match="lacks key 'n_embd'"):
        CodeGenConfig.from_hf_config({"model_type": "codegen", "vocab_size": 10, "n_layer": 1,
                                      "n_head": 1})  # fmt: skip
    llama = get_preset("codegen25-7B").to_hf_config()
    with pytest.raises(ValueError, match="GQA"):
        CodeGenConfig.from_hf_config({**llama, "num_key_value_heads": 8})


def test_init_statistics() -> None:
    """jaxformer's init: fan-in scaled matrices, residual writers scaled by 2/n_layer."""
    config = get_preset("tiny-codegen").replace(d_model=256, n_head=4, rotary_dim=16)
    params = init(config, jax.random.key(0))
    layer = params["h"][0]
    std = lambda x: float(jnp.std(x))
    assert std(layer["attn"]["qkv"]) == pytest.approx(256**-0.5, rel=0.05)
    assert std(layer["mlp"]["fc_out"]["kernel"]) == pytest.approx(256**-0.5, rel=0.05)  # 2/L = 1
    assert float(jnp.abs(layer["attn"]["qkv"]).max()) <= 2 * 256**-0.5 / 0.8796 + 1e-6
    assert float(jnp.abs(layer["ln_1"]["bias"]).max()) == 0.0
    assert params["wte"]["embedding"].dtype == jnp.float32
