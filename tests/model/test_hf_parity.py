"""Logit parity with transformers on tiny random models, checkpoint import/export."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hf_models import make_hf_model, save_hf

from codegen_core.model import forward, get_preset, init_cache, load_hf_checkpoint
from codegen_core.model.hf_io import read_safetensors, save_hf_checkpoint

torch = pytest.importorskip("torch", reason="torch is not installed: no transformers reference")
transformers = pytest.importorskip("transformers", reason="transformers is not installed")
save_file = pytest.importorskip("safetensors.torch").save_file

TOL = 1e-4


def hf_logits(model: Any, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    kw: dict[str, Any] = {}
    if mask is not None:  # transformers' rule for left padding: cumsum(mask) - 1
        m = torch.tensor(mask)
        kw = {"attention_mask": m, "position_ids": (m.cumsum(-1) - 1).clamp(min=0)}
    with torch.no_grad():
        return model(torch.tensor(ids), **kw).logits.float().numpy()


def ours(params: Any, config: Any, ids: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    mask = np.ones_like(ids) if mask is None else mask
    logits, _ = _forward(params, jnp.asarray(ids), config, token_mask=jnp.asarray(mask))
    return np.asarray(logits)


_forward = jax.jit(forward, static_argnames=("config",))


IDS = np.random.default_rng(0).integers(0, 95, size=(2, 24))


@pytest.mark.parametrize("which", ["codegen_hf", "llama_hf"])
def test_logits_match_transformers(which: str, request: pytest.FixtureRequest) -> None:
    model, path = request.getfixturevalue(which)
    config, params = load_hf_checkpoint(path)
    ref = hf_logits(model, IDS)
    assert np.abs(ref).max() > 1.0  # the random weights give non-trivial logits
    np.testing.assert_allclose(ours(params, config, IDS), ref, rtol=0, atol=TOL)


@pytest.mark.parametrize("which", ["codegen_hf", "llama_hf"])
def test_left_padded_batch(which: str, request: pytest.FixtureRequest) -> None:
    model, path = request.getfixturevalue(which)
    config, params = load_hf_checkpoint(path)
    mask = np.ones_like(IDS)
    mask[0, :7] = 0  # row 0 is left padded
    ids = np.where(mask == 1, IDS, 0)
    ref, got = hf_logits(model, ids, mask), ours(params, config, ids, mask)
    real = mask.astype(bool)
    np.testing.assert_allclose(got[real], ref[real], rtol=0, atol=TOL)
    # and the padded row equals that row alone, unpadded
    alone = ours(params, config, IDS[:1, 7:])
    np.testing.assert_allclose(got[0, 7:], alone[0], rtol=0, atol=TOL)


# empty_cache: the prompt self-attends (the generate path); dense: the CPU kernel or XLA's
@pytest.mark.parametrize(("empty", "dense"), [(False, "auto"), (True, "native"), (True, "xla")])
@pytest.mark.parametrize("which", ["codegen_hf", "llama_hf"])
def test_cache_prefill_decode_matches_full_forward(
    which: str, empty: bool, dense: str, request: pytest.FixtureRequest
) -> None:
    _, path = request.getfixturevalue(which)
    config, params = load_hf_checkpoint(path)
    mask = np.ones_like(IDS)
    mask[1, :5] = 0
    full = ours(params, config, IDS, mask)
    step = jax.jit(lambda p, t, m, c, e: forward(p, t, config, token_mask=m, cache=c,
                                                 empty_cache=e, dense_impl=dense),
                   static_argnums=4)  # fmt: skip
    cache = init_cache(config, 2, 32)
    logits, cache = step(params, jnp.asarray(IDS[:, :16]), jnp.asarray(mask[:, :16]), cache, empty)
    got = [np.asarray(logits)]
    for t in range(16, 24):  # one token at a time
        logits, cache = step(params, jnp.asarray(IDS[:, t : t + 1]), jnp.ones((2, 1), bool),
                             cache, False)  # fmt: skip
        got.append(np.asarray(logits))
    got_all = np.concatenate(got, axis=1)
    real = mask.astype(bool)
    np.testing.assert_allclose(got_all[real], full[real], rtol=0, atol=TOL)
    assert int(cache.index) == 24 and cache.lengths.tolist() == [24, 19]


def _qkv_mp8_from_mp4(w4: Any, n_head: int) -> Any:
    """Re-lay a transformers (mp_num=4) qkv_proj weight as an mp_num=8 checkpoint would,
    written from CODEGEN.md's rule [shard][Q, V, K][local head][head_dim], in torch."""
    e = w4.shape[1]
    hs = e // n_head
    parts = w4.view(4, 3, n_head // 4, hs, e)  # (shard, [q, v, k], local head, hs, E)
    logical = parts.permute(1, 0, 2, 3, 4).reshape(3, n_head, hs, e)  # ([q, v, k], head, ...)
    mp8 = logical.view(3, 8, n_head // 8, hs, e).permute(1, 0, 2, 3, 4)  # (shard, [q,v,k], ...)
    return mp8.reshape(3 * e, e).contiguous()


def test_mp_num_8_checkpoint(tmp_path: Path) -> None:
    config = get_preset("tiny-codegen-mp8")
    model = make_hf_model(config, seed=2)  # transformers computes with mp_num = 4
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    for i in range(config.n_layer):
        name = f"transformer.h.{i}.attn.qkv_proj.weight"
        sd[name] = _qkv_mp8_from_mp4(sd[name], config.n_head)
    save_file(sd, str(tmp_path / "model.safetensors"))
    hf = config.to_hf_config()
    (tmp_path / "config.json").write_text(json.dumps(hf))
    ref = hf_logits(model, IDS)
    cfg8, params8 = load_hf_checkpoint(tmp_path, qkv_mp_num=8)
    np.testing.assert_allclose(ours(params8, cfg8, IDS), ref, rtol=0, atol=TOL)
    # the same file read with the wrong layout is garbage: the check above can fail
    cfg4, params4 = load_hf_checkpoint(tmp_path, qkv_mp_num=4)
    assert np.abs(ours(params4, cfg4, IDS) - ref).max() > 0.1
    # mp_num from config.json
    (tmp_path / "config.json").write_text(json.dumps({**hf, "mp_num": 8}))
    cfg_key, params_key = load_hf_checkpoint(tmp_path)
    assert cfg_key.qkv_mp_num == 8
    np.testing.assert_allclose(ours(params_key, cfg_key, IDS), ref, rtol=0, atol=TOL)
    # export writes the mp_num=4 layout that stock transformers executes
    out = save_hf_checkpoint(tmp_path / "export", params8, cfg8)
    back = _hf_load(out, "codegen")
    np.testing.assert_allclose(hf_logits(back, IDS), ref, rtol=0, atol=TOL)


def _hf_load(path: Path, arch: str, **kw: Any) -> Any:
    cls = transformers.CodeGenForCausalLM if arch == "codegen" else transformers.LlamaForCausalLM
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(path, **kw).eval()


@pytest.mark.parametrize("which", ["codegen_hf", "llama_hf"])
def test_export_loads_in_transformers(which: str, request: pytest.FixtureRequest,
                                      tmp_path: Path) -> None:  # fmt: skip
    _, path = request.getfixturevalue(which)
    config, params = load_hf_checkpoint(path)
    mine = ours(params, config, IDS)
    back = _hf_load(save_hf_checkpoint(tmp_path / "fp32", params, config), config.arch)
    np.testing.assert_allclose(hf_logits(back, IDS), mine, rtol=0, atol=TOL)
    # sharded export round-trips through our reader and transformers
    sharded = save_hf_checkpoint(tmp_path / "sharded", params, config, max_shard_bytes=40_000)
    assert (sharded / "model.safetensors.index.json").exists()
    config2, params2 = load_hf_checkpoint(sharded)
    np.testing.assert_array_equal(ours(params2, config2, IDS), mine)
    back2 = _hf_load(sharded, config.arch)
    np.testing.assert_allclose(hf_logits(back2, IDS), mine, rtol=0, atol=TOL)


def test_bf16_load_and_export(codegen_hf: Any, tmp_path: Path) -> None:
    model, path = codegen_hf
    ref = hf_logits(model, IDS)
    config, params = load_hf_checkpoint(path, dtype=jnp.bfloat16)
    assert params["h"][0]["attn"]["qkv"].dtype == jnp.bfloat16
    got = ours(params, config, IDS)
    assert got.dtype == np.float32
    # bf16 weights and activations: ~3 significant digits; logits here span about +-10
    err = np.abs(got - ref).max()
    assert err < 0.02 * np.abs(ref).max(), err
    out = save_hf_checkpoint(tmp_path / "bf16", params, config)
    header = read_safetensors(out / "model.safetensors")
    assert header["lm_head.weight"].dtype == jnp.bfloat16
    back = _hf_load(out, "codegen", dtype=torch.bfloat16)
    assert back.lm_head.weight.dtype == torch.bfloat16
    with torch.no_grad():
        w = back.transformer.h[0].attn.qkv_proj.weight.float().numpy()
    np.testing.assert_array_equal(w, model.transformer.h[0].attn.qkv_proj.weight.bfloat16()
                                  .float().detach().numpy())  # fmt: skip


def test_pytorch_bin_and_sharded_index(codegen_hf: Any, tmp_path: Path) -> None:
    model, path = codegen_hf
    ref = hf_logits(model, IDS)
    d = tmp_path / "bin"
    d.mkdir()
    torch.save(model.state_dict(), d / "pytorch_model.bin")
    (d / "config.json").write_text((path / "config.json").read_text())
    config, params = load_hf_checkpoint(d)
    np.testing.assert_allclose(ours(params, config, IDS), ref, rtol=0, atol=TOL)
    sharded = save_hf(model, tmp_path / "sharded", max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    config, params = load_hf_checkpoint(sharded)
    np.testing.assert_allclose(ours(params, config, IDS), ref, rtol=0, atol=TOL)


def test_mismatches_name_the_tensor(codegen_hf: Any, tmp_path: Path) -> None:
    model, path = codegen_hf
    cfg = json.loads((path / "config.json").read_text())
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}

    def write(state: dict[str, Any], config: dict[str, Any]) -> Path:
        d = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        save_file(state, str(d / "model.safetensors"))
        (d / "config.json").write_text(json.dumps(config))
        return d

    missing = {k: v for k, v in sd.items() if k != "transformer.h.1.mlp.fc_in.bias"}
    with pytest.raises(ValueError, match=r"lacks tensor 'transformer\.h\.1\.mlp\.fc_in\.bias'"):
        load_hf_checkpoint(write(missing, cfg))
    with pytest.raises(ValueError, match=r"'transformer\.wte\.weight' has shape \(96, 64\)"):
        load_hf_checkpoint(write(sd, {**cfg, "vocab_size": 100}))
    extra = {**sd, "transformer.h.9.attn.qkv_proj.weight": sd["lm_head.bias"].clone()}
    with pytest.raises(ValueError, match=r"unexpected tensor.*'transformer\.h\.9\.attn"):
        load_hf_checkpoint(write(extra, cfg))
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        load_hf_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_hf_checkpoint(tmp_path / "nowhere")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "junk" / "model.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_hf_checkpoint(tmp_path / "junk")


@pytest.mark.parametrize("which", ["codegen_hf", "llama_hf"])
def test_last_only_equals_the_full_forward(which: str, request: pytest.FixtureRequest) -> None:
    """last_only runs the final layer for the last position only; the logits must not move,
    without a cache, into an empty cache, and appended to a filled one."""
    _, path = request.getfixturevalue(which)
    config, params = load_hf_checkpoint(path)
    mask = np.ones_like(IDS)
    mask[1, :5] = 0
    full = ours(params, config, IDS, mask)[:, -1]  # (B, V)
    f = jax.jit(forward, static_argnames=("config", "last_only", "empty_cache"))
    ids, m = jnp.asarray(IDS), jnp.asarray(mask)
    no_cache, _ = f(params, ids, config, token_mask=m, last_only=True)
    empty, cache = f(params, ids, config, token_mask=m, cache=init_cache(config, 2, 32),
                     last_only=True, empty_cache=True)  # fmt: skip
    _, part = f(params, ids[:, :16], config, token_mask=m[:, :16],
                cache=init_cache(config, 2, 32))  # fmt: skip
    appended, part = f(params, ids[:, 16:], config, token_mask=m[:, 16:], cache=part,
                       last_only=True)  # fmt: skip
    for got in (no_cache, empty, appended):
        assert got.shape == (2, 1, config.vocab_size)
        np.testing.assert_allclose(np.asarray(got)[:, 0], full, rtol=0, atol=TOL)
    np.testing.assert_allclose(np.asarray(cache.k[0]), np.asarray(part.k[0]), rtol=0, atol=1e-5)
