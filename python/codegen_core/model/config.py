"""Model configuration: one frozen dataclass for every CodeGen-family model, plus presets.

Two architectures share the config:

* ``"codegen"``: CodeGen1 / CodeGen2 (GPT-J style: one LayerNorm per layer, attention and
  MLP in parallel, partial interleaved rotary, biased MLP/LayerNorm/lm_head, no attention bias).
* ``"llama"``: CodeGen2.5 (pre-norm RMSNorm, SwiGLU MLP, full NeoX-style rotary, no biases).

Presets follow ``shared/docs/CODEGEN.md`` section 1. ``from_hf_config`` / ``to_hf_config``
convert to and from the ``config.json`` dictionaries of transformers' ``CodeGenConfig`` and
``LlamaConfig``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

Arch = Literal["codegen", "llama"]
KernelImpl = Literal["auto", "pallas", "xla"]

_ACTIVATIONS = {"codegen": "gelu_new", "llama": "silu"}


@dataclass(frozen=True)
class CodeGenConfig:
    """Shape and numerics of one model. All presets only override what differs."""

    arch: Arch = "codegen"
    vocab_size: int = 51200  # rows of the embedding and lm_head (tokenizers use fewer ids)
    n_layer: int = 20
    d_model: int = 1024
    n_head: int = 16
    d_ff: int | None = None  # MLP inner width; None means 4 * d_model (CodeGen)
    rotary_dim: int | None = 32  # leading features per head that rotate; None = whole head
    n_ctx: int = 2048  # longest sequence the model was trained on (cache size default)
    # The original Salesforce checkpoints store qkv_proj rows as [shard][Q,V,K][head][dim]
    # for mp_num model-parallel shards. Used only by checkpoint import/export.
    qkv_mp_num: int = 4
    norm_eps: float = 1e-5  # LayerNorm eps (CodeGen) / RMSNorm eps (LLaMA, 1e-6)
    rope_base: float = 10000.0
    initializer_range: float = 0.02  # only written to config.json; init() uses jaxformer's rule
    bos_token_id: int | None = 50256
    eos_token_id: int = 50256
    pad_token_id: int | None = None  # None: pad with eos_token_id (CodeGen has no pad token)
    name: str = "custom"
    # Which kernels run (``model.attention.kernel_backend`` is the rule; every model path
    # asks it): "auto" = Pallas where the backend has a lowering (TPU; GPU for attention),
    # XLA elsewhere; "pallas" = the Pallas kernel or a clear error; "xla" = never Pallas.
    # ``interpret`` runs the Pallas kernels in interpret mode (CPU tests). Runtime choices,
    # not shape: config.json (to_hf_config) never carries them.
    attention_impl: KernelImpl = "auto"
    rotary_impl: KernelImpl = "auto"
    interpret: bool = False
    # The platform the dispatch rule targets (None: ``jax.default_backend()``); "tpu" lowers
    # the TPU kernels from a CPU host (``.lower(lowering_platforms=("tpu",))``, AOT checks).
    kernel_platform: str | None = None

    def __post_init__(self) -> None:
        if self.arch not in _ACTIVATIONS:
            raise ValueError(f"arch must be 'codegen' or 'llama', got {self.arch!r}")
        for field in ("attention_impl", "rotary_impl"):
            if getattr(self, field) not in ("auto", "pallas", "xla"):
                raise ValueError(
                    f"{field} must be 'auto', 'pallas' or 'xla', got {getattr(self, field)!r}"
                )
        if not isinstance(self.interpret, bool):
            raise TypeError(f"interpret must be a bool, got {self.interpret!r}")
        if self.kernel_platform not in (None, "tpu", "gpu", "cuda", "rocm", "cpu"):
            raise ValueError(f"kernel_platform must be None, 'tpu', 'gpu', 'cuda', 'rocm' or "
                             f"'cpu', got {self.kernel_platform!r}")  # fmt: skip
        for field in ("vocab_size", "n_layer", "d_model", "n_head", "n_ctx", "qkv_mp_num"):
            value = getattr(self, field)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if self.d_model % self.n_head:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_head={self.n_head}")
        rot = self.rotary_dim
        if rot is not None and (rot <= 0 or rot % 2 or rot > self.head_dim):
            raise ValueError(
                f"rotary_dim={rot} must be a positive even number <= head_dim={self.head_dim}"
            )
        if self.n_head % self.qkv_mp_num:
            raise ValueError(
                f"n_head={self.n_head} must be divisible by qkv_mp_num={self.qkv_mp_num}"
            )

    # ---- derived sizes -------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def mlp_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def rot_dim(self) -> int:
        """Number of rotated features per head (the whole head when rotary_dim is None)."""
        return self.rotary_dim if self.rotary_dim is not None else self.head_dim

    @property
    def activation(self) -> str:
        return _ACTIVATIONS[self.arch]

    @property
    def pad_id(self) -> int:
        return self.pad_token_id if self.pad_token_id is not None else self.eos_token_id

    def replace(self, **changes: Any) -> CodeGenConfig:
        return dataclasses.replace(self, **changes)

    def num_params(self) -> int:
        """Parameter count by formula (checked against transformers in the tests)."""
        e, f, v, n = self.d_model, self.mlp_dim, self.vocab_size, self.n_layer
        if self.arch == "codegen":
            per_layer = 2 * e + 3 * e * e + e * e + (e * f + f) + (f * e + e)
            return v * e + n * per_layer + 2 * e + (e * v + v)
        per_layer = 2 * e + 4 * e * e + 3 * e * f
        return v * e + n * per_layer + e + e * v

    # ---- transformers config.json --------------------------------------------------------
    @classmethod
    def from_hf_config(
        cls, hf: dict[str, Any] | Any, *, qkv_mp_num: int | None = None
    ) -> CodeGenConfig:
        """Build from a transformers config (a ``config.json`` dict or a config object).

        ``qkv_mp_num`` (CodeGen only) wins over a ``qkv_mp_num``/``mp_num`` key in the dict;
        without either, a preset with the same shape supplies it, else 4 (what transformers'
        CodeGen code hardcodes).
        """
        d = hf if isinstance(hf, dict) else hf.to_dict()
        model_type = d.get("model_type")
        try:
            if model_type == "codegen":
                cfg = cls(
                    arch="codegen",
                    vocab_size=int(d["vocab_size"]),
                    n_layer=int(d["n_layer"]),
                    d_model=int(d["n_embd"]),
                    n_head=int(d["n_head"]),
                    d_ff=d.get("n_inner"),
                    rotary_dim=d.get("rotary_dim"),
                    n_ctx=int(d.get("n_positions", 2048)),
                    norm_eps=float(d.get("layer_norm_epsilon", 1e-5)),
                    initializer_range=float(d.get("initializer_range", 0.02)),
                    bos_token_id=d.get("bos_token_id"),
                    eos_token_id=_first_id(d.get("eos_token_id"), 50256),
                    pad_token_id=d.get("pad_token_id"),
                    name=str(d.get("_name_or_path") or "custom"),
                )
                act = d.get("activation_function", "gelu_new")
                if act != "gelu_new":
                    raise ValueError(f"activation_function={act!r} unsupported (gelu_new only)")
                mp = qkv_mp_num or d.get("qkv_mp_num") or d.get("mp_num")
                if mp is None:
                    mp = _preset_mp_num(cfg)
                return cfg.replace(qkv_mp_num=int(mp))
            if model_type == "llama":
                n_head = int(d["num_attention_heads"])
                n_kv = int(d.get("num_key_value_heads") or n_head)
                if n_kv != n_head:
                    raise ValueError(f"num_key_value_heads={n_kv} != num_attention_heads (GQA)")
                if d.get("tie_word_embeddings"):
                    raise ValueError("tie_word_embeddings=True is not supported for llama")
                act = d.get("hidden_act", "silu")
                if act != "silu":
                    raise ValueError(f"hidden_act={act!r} unsupported (silu only)")
                rope = d.get("rope_parameters") or d.get("rope_scaling") or {}
                rope_type = rope.get("rope_type", rope.get("type", "default"))
                if rope_type not in ("default", None):
                    raise ValueError(f"rope_type={rope_type!r} unsupported (default only)")
                base = rope.get("rope_theta", d.get("rope_theta", 10000.0))
                e = int(d["hidden_size"])
                head_dim = d.get("head_dim") or e // n_head
                if head_dim != e // n_head:
                    raise ValueError(f"head_dim={head_dim} != hidden_size / num_attention_heads")
                return cls(
                    arch="llama",
                    vocab_size=int(d["vocab_size"]),
                    n_layer=int(d["num_hidden_layers"]),
                    d_model=e,
                    n_head=n_head,
                    d_ff=int(d["intermediate_size"]),
                    rotary_dim=None,
                    n_ctx=int(d.get("max_position_embeddings", 2048)),
                    qkv_mp_num=1,
                    norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                    rope_base=float(base),
                    initializer_range=float(d.get("initializer_range", 0.02)),
                    bos_token_id=d.get("bos_token_id"),
                    eos_token_id=_first_id(d.get("eos_token_id"), 50256),
                    pad_token_id=d.get("pad_token_id"),
                    name=str(d.get("_name_or_path") or "custom"),
                )
        except KeyError as err:
            raise ValueError(f"config.json of model_type {model_type!r} lacks key {err}") from err
        raise ValueError(f"model_type={model_type!r} unsupported (expected 'codegen' or 'llama')")

    def to_hf_config(self) -> dict[str, Any]:
        """The ``config.json`` dict transformers loads (CodeGenConfig or LlamaConfig)."""
        common = {
            "vocab_size": self.vocab_size,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "initializer_range": self.initializer_range,
            "tie_word_embeddings": False,
            "use_cache": True,
        }
        if self.arch == "codegen":
            return {
                "model_type": "codegen",
                "architectures": ["CodeGenForCausalLM"],
                "n_layer": self.n_layer,
                "n_embd": self.d_model,
                "n_head": self.n_head,
                "n_inner": self.d_ff,
                "rotary_dim": self.rotary_dim,
                "n_positions": self.n_ctx,
                "n_ctx": self.n_ctx,
                "activation_function": "gelu_new",
                "layer_norm_epsilon": self.norm_eps,
                "resid_pdrop": 0.0,
                "embd_pdrop": 0.0,
                "attn_pdrop": 0.0,
                **common,
            }
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "num_hidden_layers": self.n_layer,
            "hidden_size": self.d_model,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_head,
            "head_dim": self.head_dim,
            "intermediate_size": self.mlp_dim,
            "max_position_embeddings": self.n_ctx,
            "hidden_act": "silu",
            "rms_norm_eps": self.norm_eps,
            "rope_theta": self.rope_base,
            "attention_bias": False,
            "mlp_bias": False,
            **common,
        }


def _first_id(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, list | tuple):
        return int(value[0])
    return int(value)


def _preset_mp_num(cfg: CodeGenConfig) -> int:
    """mp_num of the preset with the same shape as ``cfg`` (4 when none matches)."""
    key = (cfg.arch, cfg.n_layer, cfg.d_model, cfg.n_head, cfg.vocab_size)
    for preset in PRESETS.values():
        if (preset.arch, preset.n_layer, preset.d_model, preset.n_head, preset.vocab_size) == key:
            return preset.qkv_mp_num
    return 4


def _codegen(name: str, *dims: int) -> CodeGenConfig:
    n_layer, d_model, n_head, rot, mp = dims
    return CodeGenConfig(
        name=name, n_layer=n_layer, d_model=d_model, n_head=n_head, rotary_dim=rot, qkv_mp_num=mp
    )


PRESETS: dict[str, CodeGenConfig] = {
    c.name: c
    for c in (
        _codegen("codegen-350M", 20, 1024, 16, 32, 4),
        _codegen("codegen-2B", 32, 2560, 32, 64, 4),
        _codegen("codegen-6B", 33, 4096, 16, 64, 4),
        _codegen("codegen-16B", 34, 6144, 24, 64, 4),
        _codegen("codegen2-1B", 16, 2048, 16, 64, 8),
        _codegen("codegen2-3_7B", 16, 4096, 16, 64, 8),
        _codegen("codegen2-7B", 32, 4096, 16, 64, 4),
        _codegen("codegen2-16B", 34, 6144, 24, 64, 4),
        CodeGenConfig(
            name="codegen25-7B",
            arch="llama",
            n_layer=32,
            d_model=4096,
            n_head=32,
            d_ff=11008,
            rotary_dim=None,
            qkv_mp_num=1,
            norm_eps=1e-6,
        ),
    )
}

# Tiny shapes for tests: a few thousand parameters, compile in a second.
TINY_PRESETS: dict[str, CodeGenConfig] = {
    c.name: c
    for c in (
        CodeGenConfig(
            name="tiny-codegen", vocab_size=96, n_layer=2, d_model=64, n_head=4,
            rotary_dim=8, n_ctx=128, qkv_mp_num=4, eos_token_id=95, bos_token_id=95,
        ),
        CodeGenConfig(
            name="tiny-codegen-mp8", vocab_size=96, n_layer=2, d_model=64, n_head=8,
            rotary_dim=4, n_ctx=128, qkv_mp_num=8, eos_token_id=95, bos_token_id=95,
        ),
        CodeGenConfig(
            name="tiny-llama", arch="llama", vocab_size=96, n_layer=2, d_model=64, n_head=4,
            d_ff=172, rotary_dim=None, n_ctx=128, qkv_mp_num=1, norm_eps=1e-6,
            eos_token_id=95, bos_token_id=1,
        ),
    )
}  # fmt: skip


def get_preset(name: str) -> CodeGenConfig:
    """A preset by name (``codegen-350M``, ..., ``codegen25-7B``, ``tiny-codegen``, ...)."""
    config = PRESETS.get(name) or TINY_PRESETS.get(name)
    if config is None:
        known = ", ".join([*PRESETS, *TINY_PRESETS])
        raise ValueError(f"unknown preset {name!r}; known presets: {known}")
    return config
