"""Read and write transformers-format CodeGen / LLaMA checkpoints.

Reads ``config.json`` plus ``model.safetensors`` (parsed here, no torch needed),
``pytorch_model.bin`` (needs torch), or a sharded ``*.index.json`` of either. Writes
``config.json`` + ``model.safetensors`` (optionally sharded with an index) that
``transformers.AutoModelForCausalLM.from_pretrained`` loads.

The qkv trap: CodeGen's fused ``qkv_proj.weight`` (3E, E) stores its output rows as
``[shard s < mp_num][Q, V, K][local head][head_dim]`` (global head = s * nh / mp_num + local).
transformers' ``CodeGenAttention`` hardcodes ``mp_num = 4``; checkpoints written with
``mp_num = 8`` (the Salesforce CodeGen2-1B / 3.7B release ships its own modelling code for
that) are read here with ``qkv_mp_num=8`` (argument, a ``qkv_mp_num``/``mp_num`` key in
config.json, or a preset of the same shape). Export always writes the layout that stock
transformers executes, 4, unless told otherwise.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

from codegen_core.model.config import CodeGenConfig
from codegen_core.model.transformer import Params

_ST_DTYPES: dict[str, Any] = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": ml_dtypes.bfloat16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
    "BOOL": np.bool_,
}  # fmt: skip
_ST_NAMES = {np.dtype(v): k for k, v in _ST_DTYPES.items()}

# buffers some checkpoints carry that are not parameters
_IGNORED = re.compile(
    r"(attn\.(causal_mask|masked_bias|bias)|embed_positions|rotary_emb\.inv_freq)$"
)


# ---- qkv permutation ----------------------------------------------------------------------
def qkv_from_hf(w: np.ndarray, n_head: int, mp_num: int) -> np.ndarray:
    """CodeGen ``qkv_proj.weight`` (3E, E) in the mp_num layout -> our (3, nh, hs, E) [q,k,v]."""
    three_e, e = w.shape
    if three_e != 3 * e or n_head % mp_num:
        raise ValueError(f"qkv_proj.weight shape {w.shape} / n_head={n_head} / mp_num={mp_num}")
    hs = e // n_head
    w = w.reshape(mp_num, 3, n_head // mp_num, hs, e)[:, [0, 2, 1]]  # (mp, [q,k,v], nh/mp, hs, E)
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3, 4).reshape(3, n_head, hs, e))


def qkv_to_hf(w: np.ndarray, mp_num: int) -> np.ndarray:
    """Inverse of :func:`qkv_from_hf`."""
    _, n_head, hs, e = w.shape
    w = w.reshape(3, mp_num, n_head // mp_num, hs, e).transpose(1, 0, 2, 3, 4)
    return np.ascontiguousarray(w[:, [0, 2, 1]].reshape(3 * e, e))  # (mp, [q,v,k], ...) rows


# ---- state dict <-> pytree --------------------------------------------------------------
def _expect(state: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
    if name not in state:
        raise ValueError(f"checkpoint lacks tensor {name!r} (expected shape {shape})")
    t = state[name]
    if tuple(t.shape) != shape:
        raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, config expects {shape}")
    return t


def params_from_state_dict(
    state: dict[str, np.ndarray],
    config: CodeGenConfig,
    *,
    qkv_mp_num: int | None = None,
    dtype: Any = jnp.float32,
    strict: bool = True,
) -> Params:
    """Convert a transformers state dict (numpy arrays) into our parameter pytree."""
    e, f, v, nh, hs = (config.d_model, config.mlp_dim, config.vocab_size, config.n_head,
                       config.head_dim)  # fmt: skip
    mp = qkv_mp_num or config.qkv_mp_num
    used: set[str] = set()

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        used.add(name)
        return np.asarray(_expect(state, name, shape))

    def out(x: np.ndarray) -> jax.Array:
        return jnp.asarray(x) if dtype is None else jnp.asarray(x, dtype=dtype)

    layers = []
    for i in range(config.n_layer):
        if config.arch == "codegen":
            p = f"transformer.h.{i}."
            layer = {
                "ln_1": {"scale": out(get(p + "ln_1.weight", (e,))),
                         "bias": out(get(p + "ln_1.bias", (e,)))},
                "attn": {
                    "qkv": out(qkv_from_hf(get(p + "attn.qkv_proj.weight", (3 * e, e)), nh, mp)),
                    "out": out(get(p + "attn.out_proj.weight", (e, e)).reshape(e, nh, hs)),
                },
                "mlp": {
                    "fc_in": {"kernel": out(get(p + "mlp.fc_in.weight", (f, e))),
                              "bias": out(get(p + "mlp.fc_in.bias", (f,)))},
                    "fc_out": {"kernel": out(get(p + "mlp.fc_out.weight", (e, f))),
                               "bias": out(get(p + "mlp.fc_out.bias", (e,)))},
                },
            }  # fmt: skip
        else:
            p = f"model.layers.{i}."
            q, k, vv = (get(p + f"self_attn.{x}_proj.weight", (e, e)) for x in "qkv")
            qkv = np.stack([q, k, vv]).reshape(3, nh, hs, e)
            gate = get(p + "mlp.gate_proj.weight", (f, e))
            up = get(p + "mlp.up_proj.weight", (f, e))
            layer = {
                "input_norm": {"scale": out(get(p + "input_layernorm.weight", (e,)))},
                "attn": {
                    "qkv": out(qkv),
                    "out": out(get(p + "self_attn.o_proj.weight", (e, e)).reshape(e, nh, hs)),
                },
                "post_attention_norm": {
                    "scale": out(get(p + "post_attention_layernorm.weight", (e,)))
                },
                "mlp": {
                    "gate_up": out(np.stack([gate, up])),
                    "down": out(get(p + "mlp.down_proj.weight", (e, f))),
                },
            }
        layers.append(layer)
    if config.arch == "codegen":
        params: Params = {
            "wte": {"embedding": out(get("transformer.wte.weight", (v, e)))},
            "h": layers,
            "ln_f": {"scale": out(get("transformer.ln_f.weight", (e,))),
                     "bias": out(get("transformer.ln_f.bias", (e,)))},
            "lm_head": {"kernel": out(get("lm_head.weight", (v, e))),
                        "bias": out(get("lm_head.bias", (v,)))},
        }  # fmt: skip
    else:
        params = {
            "wte": {"embedding": out(get("model.embed_tokens.weight", (v, e)))},
            "h": layers,
            "norm": {"scale": out(get("model.norm.weight", (e,)))},
            "lm_head": {"kernel": out(get("lm_head.weight", (v, e)))},
        }
    unexpected = sorted(k for k in state if k not in used and not _IGNORED.search(k))
    if strict and unexpected:
        shown = ", ".join(repr(k) for k in unexpected[:8])
        raise ValueError(f"checkpoint has {len(unexpected)} unexpected tensor(s): {shown}")
    return params


def state_dict_from_params(
    params: Params, config: CodeGenConfig, *, qkv_mp_num: int = 4, dtype: Any = None
) -> dict[str, np.ndarray]:
    """Our pytree -> transformers state dict (numpy; both store matrices (out, in))."""

    def arr(x: jax.Array) -> np.ndarray:
        a = np.asarray(jax.device_get(x))
        return a if dtype is None else a.astype(dtype)

    e = config.d_model
    sd: dict[str, np.ndarray] = {}
    layers = params["h"]
    if not isinstance(layers, list | tuple):
        n = jax.tree.leaves(layers)[0].shape[0]
        layers = [jax.tree.map(lambda x, i=i: x[i], layers) for i in range(n)]
    for i, lp in enumerate(layers):
        if config.arch == "codegen":
            p = f"transformer.h.{i}."
            sd[p + "ln_1.weight"] = arr(lp["ln_1"]["scale"])
            sd[p + "ln_1.bias"] = arr(lp["ln_1"]["bias"])
            sd[p + "attn.qkv_proj.weight"] = qkv_to_hf(arr(lp["attn"]["qkv"]), qkv_mp_num)
            sd[p + "attn.out_proj.weight"] = arr(lp["attn"]["out"]).reshape(e, e)
            sd[p + "mlp.fc_in.weight"] = arr(lp["mlp"]["fc_in"]["kernel"])
            sd[p + "mlp.fc_in.bias"] = arr(lp["mlp"]["fc_in"]["bias"])
            sd[p + "mlp.fc_out.weight"] = arr(lp["mlp"]["fc_out"]["kernel"])
            sd[p + "mlp.fc_out.bias"] = arr(lp["mlp"]["fc_out"]["bias"])
        else:
            p = f"model.layers.{i}."
            qkv = arr(lp["attn"]["qkv"]).reshape(3, e, e)
            for j, name in enumerate("qkv"):
                sd[p + f"self_attn.{name}_proj.weight"] = qkv[j]
            sd[p + "self_attn.o_proj.weight"] = arr(lp["attn"]["out"]).reshape(e, e)
            sd[p + "input_layernorm.weight"] = arr(lp["input_norm"]["scale"])
            sd[p + "post_attention_layernorm.weight"] = arr(lp["post_attention_norm"]["scale"])
            gate_up = arr(lp["mlp"]["gate_up"])
            sd[p + "mlp.gate_proj.weight"] = gate_up[0]
            sd[p + "mlp.up_proj.weight"] = gate_up[1]
            sd[p + "mlp.down_proj.weight"] = arr(lp["mlp"]["down"])
    if config.arch == "codegen":
        sd["transformer.wte.weight"] = arr(params["wte"]["embedding"])
        sd["transformer.ln_f.weight"] = arr(params["ln_f"]["scale"])
        sd["transformer.ln_f.bias"] = arr(params["ln_f"]["bias"])
        sd["lm_head.bias"] = arr(params["lm_head"]["bias"])
    else:
        sd["model.embed_tokens.weight"] = arr(params["wte"]["embedding"])
        sd["model.norm.weight"] = arr(params["norm"]["scale"])
    sd["lm_head.weight"] = arr(params["lm_head"]["kernel"])
    return {k: np.ascontiguousarray(x) for k, x in sd.items()}


# ---- safetensors (the format is a u64 header length, a JSON header, raw bytes) --------------
def read_safetensors(path: str | Path) -> dict[str, np.ndarray]:
    """Memory-mapped numpy views of every tensor in a .safetensors file (bf16 included)."""
    path = Path(path)
    with path.open("rb") as fh:
        raw = fh.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: corrupt safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt safetensors header (not a JSON object)")  # noqa: TRY004
    size = path.stat().st_size - 8 - n
    try:
        need = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"),
                   default=0)  # fmt: skip
    except (KeyError, TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: corrupt safetensors header ({err!r})") from None
    if size < need:
        raise ValueError(
            f"{path}: truncated safetensors file ({size} data bytes, the header needs {need})"
        )
    data = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if need else np.zeros(0, np.uint8)
    )
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = _ST_DTYPES.get(info["dtype"])
        if dt is None:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        try:
            out[name] = data[begin:end].view(dt).reshape(info["shape"])
        except ValueError as err:
            raise ValueError(f"{path}: tensor {name!r} does not match its header ({err})") from None
    return out


def write_safetensors(
    path: str | Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None
) -> None:
    header: dict[str, Any] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if t.dtype not in _ST_NAMES:
            raise ValueError(f"tensor {name!r}: dtype {t.dtype} cannot be written to safetensors")
        header[name] = {
            "dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }  # fmt: skip
        offset += t.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # data must start 8-byte aligned
    with Path(path).open("wb") as fh:
        fh.write(struct.pack("<Q", len(blob)))
        fh.write(blob)
        for name in sorted(tensors):
            fh.write(np.ascontiguousarray(tensors[name]).tobytes())


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # noqa: PLC0415 - optional: only .bin checkpoints need it
    except ImportError as err:
        raise ImportError(f"{path} is a PyTorch checkpoint: reading it needs torch") from err
    sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    out = {}
    for name, tensor in sd.items():
        t = tensor.detach()
        if t.dtype == torch.bfloat16:
            out[name] = t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[name] = t.numpy()
    return out


def read_state_dict(model_dir: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a transformers checkpoint directory (safetensors preferred)."""
    d = Path(model_dir)
    for index_name, reader in (
        ("model.safetensors.index.json", read_safetensors),
        ("pytorch_model.bin.index.json", _read_torch_bin),
    ):
        index = d / index_name
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            state: dict[str, np.ndarray] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(reader(d / shard))
            missing = sorted(set(weight_map) - set(state))
            if missing:
                raise ValueError(f"{index}: tensor {missing[0]!r} is not in its shard file")
            return state
    if (d / "model.safetensors").exists():
        return read_safetensors(d / "model.safetensors")
    if (d / "pytorch_model.bin").exists():
        return _read_torch_bin(d / "pytorch_model.bin")
    raise FileNotFoundError(
        f"{d}: no model.safetensors, pytorch_model.bin or sharded index file found"
    )


def load_hf_checkpoint(
    model_dir: str | Path, *, dtype: Any = jnp.float32, qkv_mp_num: int | None = None
) -> tuple[CodeGenConfig, Params]:
    """(config, params) from a transformers CodeGenForCausalLM / LlamaForCausalLM directory.

    dtype: parameter dtype (fp32 default, bf16 for half the memory). qkv_mp_num: CodeGen
    qkv layout (None: from config.json or the matching preset, else 4).
    """
    d = Path(model_dir)
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{d}: no config.json (is this a transformers checkpoint?)")
    try:
        hf_config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{cfg_path}: not UTF-8 text ({err.reason})") from None
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{cfg_path}: not valid JSON ({err.msg} at line {err.lineno}); truncated?"
        ) from None
    if not isinstance(hf_config, dict):
        raise ValueError(f"{cfg_path}: expected a JSON object, got {type(hf_config).__name__}")  # noqa: TRY004
    try:
        config = CodeGenConfig.from_hf_config(hf_config, qkv_mp_num=qkv_mp_num)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{cfg_path}: not a usable CodeGen/LLaMA config ({err})") from None
    params = params_from_state_dict(read_state_dict(d), config, dtype=dtype)
    return config, params


def save_hf_checkpoint(
    model_dir: str | Path,
    params: Params,
    config: CodeGenConfig,
    *,
    dtype: Any = None,
    qkv_mp_num: int = 4,
    max_shard_bytes: int | None = None,
) -> Path:
    """Write config.json + safetensors that transformers loads; returns the directory.

    dtype: dtype of the written tensors (None: as in params). qkv_mp_num: layout of the
    CodeGen qkv rows (4 is what transformers executes). max_shard_bytes: split into
    ``model-0000k-of-0000n.safetensors`` files with an index when the tensors exceed it.
    """
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    np_dtype = None if dtype is None else np.dtype(jnp.dtype(dtype))
    sd = state_dict_from_params(params, config, qkv_mp_num=qkv_mp_num, dtype=np_dtype)
    hf = config.to_hf_config()
    hf["dtype"] = {np.dtype(np.float32): "float32", np.dtype(ml_dtypes.bfloat16): "bfloat16",
                   np.dtype(np.float16): "float16"}.get(next(iter(sd.values())).dtype, "float32")  # fmt: skip
    (d / "config.json").write_text(json.dumps(hf, indent=2) + "\n")
    shards = _split(sd, max_shard_bytes)
    if len(shards) == 1:
        write_safetensors(d / "model.safetensors", sd)
        return d
    weight_map = {}
    for k, shard in enumerate(shards, 1):
        fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
        write_safetensors(d / fname, shard)
        weight_map.update(dict.fromkeys(shard, fname))
    total = sum(x.nbytes for x in sd.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (d / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return d


def _split(sd: dict[str, np.ndarray], limit: int | None) -> list[dict[str, np.ndarray]]:
    if limit is None:
        return [sd]
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name in _natural(sd):
        if shards[-1] and size + sd[name].nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = sd[name]
        size += sd[name].nbytes
    return shards


def _natural(names: Iterable[str]) -> list[str]:
    return sorted(
        names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
    )
