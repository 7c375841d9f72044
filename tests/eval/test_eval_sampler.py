"""The model adapter: JaxSampler drives codegen_core.sampling (faked here: no checkpoint)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import codegen_core
from codegen_core.eval.model_sampler import JaxSampler
from codegen_core.eval.sampler import Sampler, SamplingParams, check_samples, load_sampler


@dataclass(frozen=True)
class FakeParams:
    max_new_tokens: int
    temperature: float
    top_p: float


class FakeOutput:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def generate(params, config, prompts, *, sampling, num_samples, seed, tokenizer):
        calls.append(
            {"prompts": list(prompts), "sampling": sampling, "n": num_samples, "seed": seed}
        )
        return FakeOutput([f"{p}|{j}|{seed}" for p in prompts for j in range(num_samples)])

    sampling = types.ModuleType("codegen_core.sampling")
    sampling.SamplingParams = FakeParams  # type: ignore[attr-defined]
    sampling.generate = generate  # type: ignore[attr-defined]
    hf_io = types.ModuleType("codegen_core.model.hf_io")
    hf_io.load_hf_checkpoint = lambda d, dtype: ("config", {"dtype": dtype})  # type: ignore[attr-defined]
    jnp = types.ModuleType("jax.numpy")
    jnp.float32, jnp.bfloat16 = "f32", "bf16"  # type: ignore[attr-defined]

    class FakeTokenizer:
        @classmethod
        def codegen(cls) -> str:
            return "codegen1"

        @classmethod
        def codegen2(cls) -> str:
            return "codegen2"

    monkeypatch.setitem(sys.modules, "codegen_core.generate", None)
    monkeypatch.setitem(sys.modules, "codegen_core.sampling", sampling)
    monkeypatch.setitem(sys.modules, "codegen_core.model.hf_io", hf_io)
    monkeypatch.setitem(sys.modules, "jax.numpy", jnp)
    monkeypatch.setattr(codegen_core, "Tokenizer", FakeTokenizer, raising=False)
    return calls


def test_jax_sampler_batches_and_seeds(fake_model: list[dict[str, Any]], tmp_path: Path) -> None:
    sampler = JaxSampler(tmp_path, dtype="bfloat16", batch_rows=4)
    assert isinstance(sampler, Sampler)
    assert sampler.params == {"dtype": "bf16"} and sampler.tokenizer == "codegen1"
    params = SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=7, seed=5)
    out = check_samples(["a", "b", "c"], params, sampler.sample(["a", "b", "c"], params))
    assert out == [["a|0|5", "a|1|5"], ["b|0|5", "b|1|5"], ["c|0|6", "c|1|6"]]
    assert [c["prompts"] for c in fake_model] == [["a", "b"], ["c"]]
    assert fake_model[0]["sampling"] == FakeParams(7, 0.6, 0.9)
    greedy = SamplingParams(n=1, temperature=0.0, top_p=0.95)
    sampler.sample(["x"], greedy)
    assert fake_model[-1]["sampling"].top_p == 1.0 and fake_model[-1]["seed"] == 2


def test_load_sampler_falls_back_to_codegen_core_sampling(
    fake_model: list[dict[str, Any]], tmp_path: Path
) -> None:
    sampler = load_sampler(str(tmp_path), codegen2=True)
    assert isinstance(sampler, JaxSampler) and sampler.tokenizer == "codegen2"


def test_bad_model_arguments(fake_model: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        JaxSampler(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        JaxSampler(tmp_path, dtype="float16")


def test_check_samples_names_the_problem() -> None:
    params = SamplingParams(n=2)
    with pytest.raises(TypeError, match="2 prompts"):
        check_samples(["a", "b"], params, [["x", "y"]])
    with pytest.raises(TypeError, match="want 2"):
        check_samples(["a"], params, [["x"]])
    with pytest.raises(TypeError, match="int"):
        check_samples(["a"], params, [["x", 3]])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0)
