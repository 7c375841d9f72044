"""Tiny random transformers reference models for the model tests.

Weights are created in transformers with a fixed seed, then re-drawn with larger scales
than transformers' default init (std 0.02 makes all logits nearly equal, which would let a
wrong rotary or qkv layout slip under a 1e-4 tolerance).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

from codegen_core.model import CodeGenConfig


def hf_classes(arch: str) -> tuple[Any, Any]:
    """(config class, model class) from transformers; skips the test when unavailable."""
    pytest.importorskip("torch", reason="torch is not installed: no transformers reference")
    transformers = pytest.importorskip(
        "transformers", reason="transformers is not installed: no reference model"
    )
    if arch == "codegen":
        return transformers.CodeGenConfig, transformers.CodeGenForCausalLM
    return transformers.LlamaConfig, transformers.LlamaForCausalLM


def hf_config(config: CodeGenConfig) -> Any:
    cfg_cls, _ = hf_classes(config.arch)
    d = {k: v for k, v in config.to_hf_config().items() if k not in ("model_type", "architectures")}
    return cfg_cls(**d)


def make_hf_model(config: CodeGenConfig, seed: int = 0) -> Any:
    import torch  # noqa: PLC0415 - hf_classes skipped the test if it is missing

    _, model_cls = hf_classes(config.arch)
    torch.manual_seed(seed)
    model = model_cls(hf_config(config))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2:
                p.normal_(0.0, 0.5 / p.shape[1] ** 0.5 if "wte" not in name else 1.0)
                if "embed_tokens" in name:
                    p.normal_(0.0, 1.0)
            elif name.endswith("weight"):  # norm scales
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.2)
    return model.eval()


def save_hf(model: Any, path: Path, **kw: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' own deprecation chatter
        model.save_pretrained(path, **kw)
    return path
