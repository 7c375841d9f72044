"""The model adapter: JaxSampler drives codegen_core.sampling (faked here: no checkpoint)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from codegen_core.eval.model_sampler import JaxSampler, load_sampler
from codegen_core.eval.sampler import (
    Sampler,
    SamplingParams,
    check_samples,
    truncate_completion,
)
from codegen_core.sampling_params import SamplingParams as LibrarySamplingParams
from codegen_core.tokenizer.fim import infill_prompt, infill_prompt_text
from codegen_core.tokenizer.stop import truncate_before_pattern


class FakeOutput:
    def __init__(self, texts: list[str]) -> None:
        self.texts = texts


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def generate(params, config, prompts, *, sampling, seed, tokenizer):
        calls.append({"prompts": list(prompts), "sampling": sampling, "seed": seed})
        texts = [tokenizer.decode(p)[-1] for p in prompts]
        return FakeOutput([f"{t}|{j}|{seed}" for t in texts for j in range(sampling.n)])

    generate_module = types.ModuleType("codegen_core.sampling.generate")
    generate_module.generate = generate  # type: ignore[attr-defined]
    hf_io = types.ModuleType("codegen_core.model.hf_io")
    hf_io.load_hf_checkpoint = lambda d, dtype: ("config", {"dtype": dtype})  # type: ignore[attr-defined]
    jnp = types.ModuleType("jax.numpy")
    jnp.float32, jnp.bfloat16 = "f32", "bf16"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "codegen_core.sampling.generate", generate_module)
    monkeypatch.setitem(sys.modules, "codegen_core.model.hf_io", hf_io)
    monkeypatch.setitem(sys.modules, "jax.numpy", jnp)
    return calls


def test_jax_sampler_batches_and_seeds(fake_model: list[dict[str, Any]], tmp_path: Path) -> None:
    sampler = JaxSampler(tmp_path, dtype="bfloat16", batch_rows=4)
    assert isinstance(sampler, Sampler)
    assert sampler.params == {"dtype": "bf16"} and sampler.tokenizer.name == "codegen"
    params = SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=7, seed=5, stop=["^#"])
    out = check_samples(["a", "b", "c"], params, sampler.sample(["a", "b", "c"], params))
    assert out == [["a|0|5", "a|1|5"], ["b|0|5", "b|1|5"], ["c|0|6", "c|1|6"]]
    assert [len(c["prompts"]) for c in fake_model] == [2, 1]
    sent = fake_model[0]["sampling"]
    assert (sent.max_new_tokens, sent.temperature, sent.top_p, sent.n) == (7, 0.6, 0.9, 2)
    assert sent.stop == ()  # completions come back raw: the evaluation truncates


def test_jax_sampler_encodes_only_the_infill_control_tokens(
    fake_model: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Prompt text is text except the infill format's own control tokens."""
    sampler = load_sampler(tmp_path, codegen2=True)
    assert isinstance(sampler, JaxSampler) and sampler.tokenizer.name == "codegen2"
    tok = sampler.tokenizer
    prefix, suffix = "s = '<eom><fim_prefix>'\n", "    return '<mask_2>'\n"
    ids = sampler.encode_prompt(infill_prompt_text(prefix, suffix))
    assert ids == infill_prompt(tok, prefix, suffix)
    assert [i for i in ids if i in tok.special_tokens.values()] == [51199, 50256, 50317, 51199]
    # The limit of a text prompt: the format's own tokens written in the prefix cannot be
    # told apart from the format (infill_prompt, built from ids, keeps them text).
    tricky = sampler.encode_prompt(infill_prompt_text("'<sep>'", ""))
    assert tricky.count(50317) == 2 and infill_prompt(tok, "'<sep>'", "").count(50317) == 1
    plain = JaxSampler(tmp_path)  # CodeGen1: <|endoftext|> only; other markup is plain text
    assert plain.encode_prompt("x<mask_1>") == plain.tokenizer.encode_ordinary("x<mask_1>")


def test_bad_model_arguments(fake_model: list[dict[str, Any]], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        JaxSampler(tmp_path / "missing")
    with pytest.raises(ValueError, match="dtype"):
        JaxSampler(tmp_path, dtype="float16")


def test_missing_model_code_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "codegen_core.sampling.generate", None)  # not importable
    with pytest.raises(RuntimeError, match="cannot load the JAX model"):
        JaxSampler(tmp_path)


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


def test_one_sampling_params_and_one_truncation() -> None:
    """Evaluation uses the library's settings object and CodeGen truncation, not copies."""
    assert SamplingParams is LibrarySamplingParams
    assert truncate_completion is truncate_before_pattern
    assert SamplingParams().temperature == 0.0  # one default: greedy
    assert SamplingParams(stop=["a"]).stop == ("a",)


def test_evaluation_imports_neither_jax_nor_a_loop() -> None:
    """Evaluation modules and the settings load without JAX; the model sampler does not
    import the protocol module (no sampler <-> model_sampler loop)."""
    code = (
        "import sys\n"
        "import codegen_core.eval.model_sampler\n"
        "assert 'codegen_core.eval.sampler' not in sys.modules, 'model_sampler imports sampler'\n"
        "import codegen_core.eval.cli, codegen_core.eval.sampler, codegen_core.eval.infilling\n"
        "import codegen_core\n"
        "codegen_core.SamplingParams\n"
        "assert 'jax' not in sys.modules, 'jax was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_jax_sampler_end_to_end_on_a_tiny_checkpoint(tmp_path: Path) -> None:
    """The real generate, a saved checkpoint and the CodeGen2 tokenizer: shapes and seeds."""
    import jax  # noqa: PLC0415

    from codegen_core.model import get_preset, init  # noqa: PLC0415
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415

    config = get_preset("tiny-codegen").replace(vocab_size=51200, n_layer=1, d_model=32,
                                                n_head=4, rotary_dim=4)  # fmt: skip
    model_dir = save_hf_checkpoint(tmp_path / "m", init(config, jax.random.key(0)), config)
    sampler = load_sampler(model_dir, codegen2=True, batch_rows=4)
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=3, seed=1)
    prompts = [infill_prompt_text("def f(x):\n    ", "\n"), "def g():"]
    out = check_samples(prompts, params, sampler.sample(prompts, params))
    assert len(out) == 2 and all(len(row) == 2 for row in out)
    again = load_sampler(model_dir, codegen2=True, batch_rows=4).sample(prompts, params)
    assert again == out  # reproducible from the seed
