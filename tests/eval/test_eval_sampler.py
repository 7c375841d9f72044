"""The model adapter: JaxSampler drives codegen_core.sampling (faked here: no checkpoint)."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from codegen_core.eval.model_sampler import JaxSampler, length_bucket, load_sampler
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


class FakeConfig:
    n_ctx = 1024
    pad_id = 0


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    """JaxSampler without JAX: the loader and the compiled batch run are fakes that record
    each batch (rows, padded length, width)."""
    calls: list[dict[str, Any]] = []

    def run(self, rows, length, width, params):
        calls.append({"rows": [self.tokenizer.decode(r) for r in rows], "length": length,
                      "width": width, "params": params})  # fmt: skip
        self._calls += 1
        return [f"{self.tokenizer.decode(r)[-1]}|{params.seed + self._calls - 1}" for r in rows]

    hf_io = types.ModuleType("codegen_core.model.hf_io")
    hf_io.load_hf_checkpoint = lambda d, dtype: (FakeConfig(), {"dtype": dtype})  # type: ignore[attr-defined]
    jnp = types.ModuleType("jax.numpy")
    jnp.float32, jnp.bfloat16 = "f32", "bf16"  # type: ignore[attr-defined]
    for name in ("jax", "codegen_core.sampling.generate", "codegen_core.model.transformer"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "codegen_core.model.hf_io", hf_io)
    monkeypatch.setitem(sys.modules, "jax.numpy", jnp)
    monkeypatch.setattr(JaxSampler, "_run", run)
    return calls


def test_jax_sampler_batches_by_length_bucket(
    fake_model: list[dict[str, Any]], tmp_path: Path
) -> None:
    sampler = JaxSampler(tmp_path, dtype="bfloat16", batch_rows=4, smallest_bucket=4)
    assert isinstance(sampler, Sampler)
    assert sampler.params == {"dtype": "bf16"} and sampler.tokenizer.name == "codegen"
    params = SamplingParams(n=2, temperature=0.6, top_p=0.9, max_new_tokens=7, seed=5, stop=["^#"])
    prompts = ["a", "b", " x y z w v u t s", "c"]  # 1, 1, 8 and 1 tokens
    out = check_samples(prompts, params, sampler.sample(prompts, params))
    # rows of one bucket fill a batch of batch_rows; the 8-token prompt has its own bucket
    assert out == [["a|5", "a|5"], ["b|5", "b|5"], ["s|7", "s|7"], ["c|6", "c|6"]]
    assert [(c["length"], c["width"], len(c["rows"])) for c in fake_model] == [
        (4, 4, 4), (4, 4, 2), (8, 4, 2)
    ]  # fmt: skip
    assert fake_model[0]["params"] is params  # stop patterns are dropped by _run
    small = JaxSampler(tmp_path, batch_rows=16)
    small.sample(["a"], params)  # 2 rows: the batch is 2 wide, not 16
    assert fake_model[-1]["width"] == 2
    small.reserve_prompt_tokens(300)  # growing prompts: one padded length for all
    small.sample(["a", "b"], params)
    assert fake_model[-1]["length"] == 512
    small.reserve_prompt_tokens(0)
    small.sample(["a", "b"], params)
    assert fake_model[-1]["length"] == 128


def test_prompts_past_the_context_keep_their_tail(
    fake_model: list[dict[str, Any]], tmp_path: Path
) -> None:
    sampler = JaxSampler(tmp_path)  # FakeConfig: 1024-token context
    params = SamplingParams(max_new_tokens=1020)
    with pytest.warns(UserWarning, match="exceeds the model's context of 1024"):
        sampler.sample([" a" * 10], params)
    assert fake_model[-1]["rows"] == [" a" * 4] and fake_model[-1]["length"] == 4
    with pytest.raises(ValueError, match="max_new_tokens=1024 leaves no room"):
        sampler.sample(["a"], SamplingParams(max_new_tokens=1024))


def test_length_buckets() -> None:
    assert [length_bucket(n, 1000) for n in (1, 128, 129, 300, 600, 999)] == [
        128, 128, 256, 512, 1000, 1000
    ]  # fmt: skip


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
    again = load_sampler(model_dir, codegen2=True, batch_rows=4)
    assert again.sample(prompts, params) == out  # reproducible from the seed
    again.sample(["def h(a, b):\n    return a", "x"], params)  # other lengths, one bucket
    assert again.stats.programs == 1 and again.stats.batches == 2  # compiled once, reused
    assert again.stats.compile_seconds > 0 and again.stats.sample_seconds > 0


def test_mtpb_turns_share_one_compiled_program(tmp_path: Path) -> None:
    """Every turn of an MTPB problem (growing histories) runs at one padded length, so the
    whole problem compiles one program; its 5 histories go through each turn together."""
    import jax  # noqa: PLC0415

    from codegen_core.eval.mtpb import MTPBProblem  # noqa: PLC0415
    from codegen_core.eval.resume import mtpb_records  # noqa: PLC0415
    from codegen_core.model import get_preset, init  # noqa: PLC0415
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415

    config = get_preset("tiny-codegen").replace(vocab_size=51200, n_layer=1, d_model=32,
                                                n_head=4, rotary_dim=4, n_ctx=512)  # fmt: skip
    model_dir = save_hf_checkpoint(tmp_path / "m", init(config, jax.random.key(0)), config)
    problem = MTPBProblem(
        id=1, name="sum", description="", category="",
        prompts=("Assign {a} to a.", "Add one to a and call it b.", "Print b."),
        inputs=tuple({"a": i} for i in range(5)), outputs=tuple(range(1, 6)), max_gen_length=40,
    )  # fmt: skip
    sampler = load_sampler(model_dir)
    records, resumed = mtpb_records({1: problem}, sampler, SamplingParams(temperature=0.5))
    assert resumed == 0 and len(records) == 5
    assert all(len(r.completions) == 3 for r in records)
    assert sampler.stats.batches == 3 and sampler.stats.programs == 1  # one per turn, one shape
    assert sampler.stats.rows == 15
