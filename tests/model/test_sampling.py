"""Sampling: greedy parity with transformers, per-row stops, filters, seeds, sessions, infill."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codegen_core.model import get_preset, init, load_hf_checkpoint
from codegen_core.sampling import SamplingParams, Session, cli, generate, infill, infill_prompt
from codegen_core.sampling.generate import left_pad
from codegen_core.sampling.infill import cut_middle
from codegen_core.sampling.logits import sample_next, top_k_filter, top_p_filter

CONFIG = get_preset("tiny-codegen").replace(vocab_size=128, eos_token_id=127, bos_token_id=127)
PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12, 13], [20, 21, 22], [40, 41, 42, 43, 44]]


@pytest.fixture(scope="module")
def params() -> Any:
    p = jax.jit(init, static_argnums=0)(CONFIG, jax.random.key(0))
    # larger logits than the init gives, so greedy paths are not decided by rounding
    return {**p, "lm_head": {**p["lm_head"], "kernel": p["lm_head"]["kernel"] * 8}}


def test_greedy_matches_transformers_generate(codegen_hf: Any) -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    model, path = codegen_hf
    config, params = load_hf_checkpoint(path)
    prompts = [p[:] for p in PROMPTS]  # ids < 96 fit the tiny vocab
    out = generate(params, config, prompts, sampling=SamplingParams(max_new_tokens=16),
                   stop_token_ids=())  # fmt: skip
    tokens, mask = left_pad(prompts, 0)
    with torch.no_grad():
        ref = model.generate(torch.tensor(tokens, dtype=torch.long),
                             attention_mask=torch.tensor(mask, dtype=torch.long),
                             max_new_tokens=16, do_sample=False, eos_token_id=None,
                             pad_token_id=0)  # fmt: skip
    assert out.tokens == ref[:, tokens.shape[1] :].tolist()


def test_per_row_stop_and_lengths(params: Any) -> None:
    sp = SamplingParams(max_new_tokens=8)
    free = generate(params, CONFIG, PROMPTS, sampling=sp, stop_token_ids=())
    assert all(len(t) == 8 for t in free.tokens) and not any(free.finished)
    stop = free.tokens[0][3]  # row 0 meets this token at step 3 (or earlier)
    out = generate(params, CONFIG, PROMPTS, sampling=sp, stop_token_ids=[stop])
    for row, full in zip(out.tokens, free.tokens, strict=True):
        cut = full.index(stop) if stop in full else len(full)
        assert row == full[:cut]
    assert out.finished[0] and len(out.tokens[0]) <= 3


def test_rows_are_independent_of_batching(params: Any) -> None:
    sp = SamplingParams(max_new_tokens=8)
    batch = generate(params, CONFIG, PROMPTS, sampling=sp)
    for i, p in enumerate(PROMPTS):
        alone = generate(params, CONFIG, [p], sampling=sp)  # other padding than in the batch
        assert alone.tokens[0] == batch.tokens[i]


def test_seeds_and_num_samples(params: Any) -> None:
    sp = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.95, top_k=50)
    a = generate(params, CONFIG, PROMPTS[:2], sampling=sp, num_samples=3, seed=7)
    b = generate(params, CONFIG, PROMPTS[:2], sampling=sp, num_samples=3, seed=7)
    c = generate(params, CONFIG, PROMPTS[:2], sampling=sp, num_samples=3, seed=8)
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    assert a.prompt_index == [0, 0, 0, 1, 1, 1]
    assert len({tuple(t) for t in a.tokens[:3]}) > 1  # samples of one prompt differ


def test_stream_callback_sees_every_token(params: Any) -> None:
    seen: list[tuple[int, list[int]]] = []
    out = generate(params, CONFIG, PROMPTS[:2], sampling=SamplingParams(max_new_tokens=8),
                   stream=lambda i, toks: seen.append((int(i), np.asarray(toks).tolist())))  # fmt: skip
    assert [i for i, _ in seen] == list(range(8))
    assert [[t[r] for _, t in seen] for r in range(2)] == out.tokens


def _np_top_k(logits: np.ndarray, k: int) -> np.ndarray:
    kth = np.sort(logits, axis=-1)[:, -k][:, None]
    return np.where(logits < kth, -np.inf, logits)


def _np_top_p(logits: np.ndarray, p: float) -> np.ndarray:
    """transformers' TopPLogitsWarper, written out: ascending sort, drop mass <= 1 - p."""
    out = logits.copy()
    for r in range(logits.shape[0]):
        order = np.argsort(logits[r], kind="stable")
        probs = np.exp(logits[r, order] - logits[r].max())
        probs /= probs.sum()
        drop = np.cumsum(probs) <= 1 - p
        drop[-1] = False
        out[r, order[drop]] = -np.inf
    return out


@pytest.mark.parametrize("k", [1, 5, 40])
def test_top_k_filter(k: int) -> None:
    logits = np.random.default_rng(k).normal(size=(4, 40)).astype(np.float32) * 3
    got = np.asarray(top_k_filter(jnp.asarray(logits), jnp.int32(k)))
    np.testing.assert_array_equal(got, _np_top_k(logits, k))


@pytest.mark.parametrize("p", [0.05, 0.5, 0.9, 0.999])
def test_top_p_filter(p: float) -> None:
    logits = np.random.default_rng(int(p * 1000)).normal(size=(4, 50)).astype(np.float32) * 2
    got = np.isfinite(np.asarray(top_p_filter(jnp.asarray(logits), jnp.float32(p))))
    np.testing.assert_array_equal(got, np.isfinite(_np_top_p(logits, p)))


def test_filters_match_transformers_warpers() -> None:
    torch = pytest.importorskip("torch", reason="torch is not installed")
    lp = pytest.importorskip("transformers.generation.logits_process")
    logits = np.random.default_rng(3).normal(size=(3, 64)).astype(np.float32) * 2
    t = torch.tensor(logits)
    for p in (0.3, 0.9):
        ref = lp.TopPLogitsWarper(top_p=p)(None, t.clone()).numpy()
        got = np.asarray(top_p_filter(jnp.asarray(logits), jnp.float32(p)))
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))
    ref = lp.TopKLogitsWarper(top_k=7)(None, t.clone()).numpy()
    got = np.asarray(top_k_filter(jnp.asarray(logits), jnp.int32(7)))
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(ref))


def test_sampling_frequencies() -> None:
    """Temperature + top-k + top-p sampling draws from the renormalised filtered softmax."""
    logits = jnp.asarray([[2.0, 1.5, 1.0, 0.5, 0.0, -1.0]])
    n = 40000
    rows = jnp.broadcast_to(logits, (n, 6))
    toks = sample_next(rows, jax.random.key(0), greedy=False, temperature=0.7, top_k=4,
                       top_p=0.9, use_top_k=True, use_top_p=True)  # fmt: skip
    freq = np.bincount(np.asarray(toks), minlength=6) / n
    ref = _np_top_p(_np_top_k(np.asarray(logits) / 0.7, 4), 0.9)[0]
    ref = np.exp(ref - ref.max())
    ref /= ref.sum()
    np.testing.assert_allclose(freq, ref, atol=0.01)
    assert freq[4:].sum() == 0


def test_session_reuses_cache_and_matches_fresh_generation(params: Any) -> None:
    sp = SamplingParams(max_new_tokens=6)
    s = Session(params, CONFIG, max_len=96, sampling=sp, stop_token_ids=())
    first = s.send_ids(PROMPTS[0])
    second = s.send_ids([30, 31])
    fresh1 = generate(params, CONFIG, [PROMPTS[0]], sampling=sp, stop_token_ids=())
    fresh2 = generate(params, CONFIG, [[*PROMPTS[0], *first, 30, 31]], sampling=sp,
                      stop_token_ids=())  # fmt: skip
    assert first == fresh1.tokens[0]
    assert second == fresh2.tokens[0]
    assert s.ids == [*PROMPTS[0], *first, 30, 31, *second]
    # the cache holds the whole context: a third turn only prefills its 1 new token
    cached_before = len(s._cached)
    s.send_ids([50])
    assert cached_before == len(PROMPTS[0]) + 6 + 2 + 6
    with pytest.raises(ValueError, match="does not fit the session cache"):
        s.send_ids(list(range(60)))


class CharTokenizer:
    """A duck-typed character tokenizer with CodeGen2's special tokens (for infill tests)."""

    specials: ClassVar[dict[str, int]] = {
        "<|endoftext|>": 127,
        "<sep>": 126,
        "<eom>": 125,
        "<mask_1>": 124,
    }

    def encode(self, text: str) -> list[int]:
        return [ord(c) - 32 for c in text]

    def decode(self, ids: list[int]) -> str:
        inv = {v: k for k, v in self.specials.items()}
        return "".join(inv.get(i, chr(i + 32) if i < 95 else "?") for i in ids)

    def token_to_id(self, token: str) -> int | None:
        return self.specials.get(token)


def test_infill_prompt_and_cut(params: Any) -> None:
    tok = CharTokenizer()
    ids = infill_prompt(tok, "ab", "c")
    assert ids == [65, 66, 124, 67, 127, 126, 124]
    assert cut_middle([1, 2, 125, 3], eom_id=125, eos_id=127) == [1, 2]
    assert cut_middle([1, 2], eom_id=125, eos_id=127) == [1, 2]
    sp = SamplingParams(max_new_tokens=8)
    (middle,) = infill(params, CONFIG, tok, "def f(x):", "return y", sampling=sp)
    raw = generate(params, CONFIG, [infill_prompt(tok, "def f(x):", "return y")], sampling=sp,
                   stop_token_ids=())  # fmt: skip
    assert middle == tok.decode(cut_middle(raw.tokens[0], 125, 127))
    with pytest.raises(ValueError, match="no '<mask_1>' token"):
        infill(params, CONFIG, type("T", (), {"token_to_id": lambda s, t: None})(), "a", "b")


def test_text_prompts_and_stop_patterns(params: Any) -> None:
    tok = CharTokenizer()
    sp = SamplingParams(max_new_tokens=8)
    out = generate(params, CONFIG, ["def f", "x = 1"], sampling=sp, tokenizer=tok)
    ids_out = generate(params, CONFIG, [tok.encode("def f"), tok.encode("x = 1")], sampling=sp)
    assert out.tokens == ids_out.tokens
    assert out.texts == [tok.decode(t) for t in ids_out.tokens]
    text = out.texts[0]
    cut = generate(params, CONFIG, ["def f"], sampling=sp, tokenizer=tok,
                   stop_patterns=[re.escape(text[3:5])])  # fmt: skip
    assert cut.texts is not None and text.startswith(cut.texts[0])
    assert cut.texts[0] == text[: text.index(text[3:5])]
    # the same patterns given as SamplingParams.stop
    via_params = generate(params, CONFIG, ["def f"], tokenizer=tok,
                          sampling=SamplingParams(max_new_tokens=8, stop=(re.escape(text[3:5]),)))  # fmt: skip
    assert via_params.texts == cut.texts


def test_sampling_params_supply_n_and_seed(params: Any) -> None:
    sp = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=11)
    a = generate(params, CONFIG, PROMPTS[:1], sampling=sp)
    b = generate(params, CONFIG, PROMPTS[:1], sampling=sp, num_samples=2, seed=11)
    assert a.tokens == b.tokens and a.prompt_index == [0, 0]
    c = generate(params, CONFIG, PROMPTS[:1], sampling=sp, seed=12)  # explicit overrides
    assert c.tokens != a.tokens


class OrdinaryTokenizer:
    """A real Tokenizer's encode_ordinary is what text prompts use (never control ids)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def encode_ordinary(self, text: str) -> list[int]:
        self.calls.append(text)
        return [ord(c) - 32 for c in text]

    def encode(self, text: str) -> list[int]:
        raise AssertionError("text prompts must not go through encode (special text)")

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i + 32) for i in ids)


def test_text_prompts_are_encoded_as_text(params: Any) -> None:
    tok = OrdinaryTokenizer()
    out = generate(params, CONFIG, ["a<|endoftext|>"], tokenizer=tok,
                   sampling=SamplingParams(max_new_tokens=2))  # fmt: skip
    assert tok.calls == ["a<|endoftext|>"] and out.texts is not None


def test_bad_inputs_raise() -> None:
    p = jax.jit(init, static_argnums=0)(CONFIG, jax.random.key(1))
    with pytest.raises(ValueError, match="outside"):
        generate(p, CONFIG, [[1, 500]])
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        generate(p, CONFIG, [[1], []])
    with pytest.raises(ValueError, match="need a tokenizer"):
        generate(p, CONFIG, ["text"])
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)


def test_cli_registers_sample(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["sample", "--model", str(tmp_path), "--prompt", "def f():",
                              "--max-new-tokens", "4"])  # fmt: skip
    assert args.func is cli.run and args.max_new_tokens == 4 and not args.infill


SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"


def test_cli_sample_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`sample` loads a checkpoint directory and streams a greedy completion to stdout."""
    tok_file = SHARED / "tokenizers" / "codegen" / "tokenizer.json"
    if not tok_file.exists():
        pytest.skip(f"shared CodeGen tokenizer not found at {tok_file}")
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415

    config = get_preset("tiny-codegen").replace(vocab_size=51200, n_layer=1, d_model=32,
                                                n_head=4, rotary_dim=4)  # fmt: skip
    model_dir = save_hf_checkpoint(tmp_path / "m", init(config, jax.random.key(0)), config)
    (model_dir / "tokenizer.json").write_bytes(tok_file.read_bytes())
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["sample", "--model", str(model_dir), "--prompt", "def fib(n):",
                              "--max-new-tokens", "5"])  # fmt: skip
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("def fib(n):")
    assert len(out) > len("def fib(n):\n")


def test_sampling_never_emits_ids_the_tokenizer_cannot_decode() -> None:
    """CodeGen checkpoints have 51200 rows for 50295 CodeGen1 ids: the rest must not come out."""
    import jax  # noqa: PLC0415

    from codegen_core.model import get_preset, init  # noqa: PLC0415
    from codegen_core.sampling import SamplingParams, generate  # noqa: PLC0415

    class Tiny:  # a tokenizer over the first 40 ids
        vocab_size = 40

        def encode(self, text: str) -> list[int]:
            return [ord(c) % 40 for c in text]

        def decode(self, ids: list[int]) -> str:
            assert all(0 <= i < 40 for i in ids), ids
            return "".join(chr(65 + i % 26) for i in ids)

    config = get_preset("tiny-codegen")  # 96 rows
    params = init(config, jax.random.key(3))
    out = generate(
        params, config, ["abc", "hello"], tokenizer=Tiny(), num_samples=3, seed=1,
        sampling=SamplingParams(max_new_tokens=12, temperature=1.5),
    )  # fmt: skip
    assert all(t < 40 for row in out.tokens for t in row)
    assert out.texts is not None and len(out.texts) == 6


def test_infill_with_the_real_codegen2_tokenizer() -> None:
    """The infill prompt built id by id equals the CodeGen2 tokenizer's encoding of the whole
    prompt text, and a 51200-row model infills through it end to end."""
    import dataclasses  # noqa: PLC0415

    import jax  # noqa: PLC0415

    from codegen_core import Tokenizer  # noqa: PLC0415
    from codegen_core.model import get_preset, init  # noqa: PLC0415

    tok = Tokenizer.codegen2()
    prefix, suffix = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    ids = infill_prompt(tok, prefix, suffix)
    control = {"<mask_1>", "<|endoftext|>", "<sep>"}
    assert ids == tok.encode(
        f"{prefix}<mask_1>{suffix}<|endoftext|><sep><mask_1>", allowed_special=control
    )
    assert ids[-3:] == [50256, 50317, 51199]
    # control-token text inside the prefix or suffix stays text: the structure cannot change
    tricky = infill_prompt(tok, "s = '<mask_1><sep>'\n", "<eom>")
    specials = set(tok.special_tokens.values())
    assert [t for t in tricky if t in specials] == [51199, 50256, 50317, 51199]
    config = dataclasses.replace(get_preset("tiny-codegen"), vocab_size=51200)
    params = init(config, jax.random.key(0))
    sp = SamplingParams(max_new_tokens=6, temperature=1.0)
    middles = infill(params, config, tok, prefix, suffix, sampling=sp, num_samples=2)
    assert len(middles) == 2 and all(isinstance(m, str) for m in middles)


def test_session_with_the_real_codegen_tokenizer() -> None:
    """A multi-turn text session through the real CodeGen1 tokenizer on a 51200-row model:
    each turn's completion is what a fresh generate on the whole context samples, the
    context text round-trips through the tokenizer, and later turns reuse the cache."""
    import dataclasses  # noqa: PLC0415

    from codegen_core import Tokenizer  # noqa: PLC0415
    from codegen_core.model import get_preset, init  # noqa: PLC0415

    tok = Tokenizer.codegen()
    config = dataclasses.replace(get_preset("tiny-codegen"), vocab_size=51200, n_ctx=512,
                                 eos_token_id=50256, bos_token_id=50256)  # fmt: skip
    params = init(config, jax.random.key(5))
    # larger logits than the init gives, so greedy paths are not decided by rounding
    params = {**params, "lm_head": {**params["lm_head"], "kernel": params["lm_head"]["kernel"] * 8}}
    sp = SamplingParams(max_new_tokens=8)  # greedy: turns are deterministic
    s = Session(params, config, tok, max_len=256, sampling=sp, stop_patterns=None)
    turn1 = "# Import libraries.\n\nimport numpy as np\n\n"
    first = s.send(turn1)
    fresh = generate(params, config, [turn1], tokenizer=tok, sampling=sp)
    assert fresh.texts is not None and first == fresh.texts[0]
    assert s.text == turn1 + first
    assert s.ids == tok.encode_ordinary(s.text)
    assert all(t < tok.vocab_size for t in s.ids)  # never an id the tokenizer cannot decode
    cached = len(s._cached)
    turn2 = "\n    # Print hello\n"
    second = s.send(turn2)
    fresh2 = generate(params, config, [turn1 + first + turn2], tokenizer=tok, sampling=sp)
    assert fresh2.texts is not None and second == fresh2.texts[0]
    assert cached > 0 and len(s._cached) > cached  # the second turn extended the cache
