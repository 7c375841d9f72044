"""Greedy generation with a 350M-shaped CodeGen: codegen-core (JAX, XLA CPU) vs transformers.

One run measures both on the same random weights (drawn in transformers, converted in
memory), prompt 64 tokens, 128 new tokens, batch 1 and 8, plus bf16 weights at batch 1 and
a 512-token prefill, and prints the memory-bandwidth ceiling measured in the same run.

    python benchmarks/bench_generate.py            # full run (several minutes on 2 cores)
    pytest benchmarks/bench_generate.py -m slow    # the same through pytest-benchmark

torch runs at its best CPU settings: 2 threads, OMP_WAIT_POLICY=PASSIVE (set before torch
is imported; without it torch slows down several times when anything else runs).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from codegen_core.model import get_preset, init_cache
from codegen_core.model.hf_io import params_from_state_dict
from codegen_core.model.transformer import cache_dtype, cast_params, forward
from codegen_core.sampling.generate import (
    SamplingParams,
    _knobs,
    prefill_and_decode,
)

PROMPT, NEW = 64, 128
# bf16 weights vs fp32: the largest logit difference we accept (random 350M weights give
# logits with a standard deviation of about 0.64)
BF16_LOGIT_TOL = 0.05


def _median_time(fn: Callable[[], Any], reps: int) -> float:
    fn()  # warm-up / compile
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _alternating_medians(
    a: Callable[[], Any], b: Callable[[], Any], reps: int
) -> tuple[float, float]:
    """Median times of a and b run in turns (a, b, a, b, ...) after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def bandwidth_gbs(n_bytes: int = 1 << 30, reps: int = 5) -> float:
    """Bytes of a large numpy copy per second (bytes read = bytes written = n_bytes)."""
    a = np.ones(n_bytes // 4, np.float32)
    b = np.empty_like(a)
    return n_bytes / _median_time(lambda: np.copyto(b, a), reps) / 1e9


def ours_generate(params: Any, config: Any, batch: int, new: int) -> Callable[[], Any]:
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50000, (batch, PROMPT)), jnp.int32)
    mask = jnp.ones((batch, PROMPT), jnp.int32)
    knobs, flags = _knobs(SamplingParams(max_new_tokens=new))
    dtype = cache_dtype(params)
    stop = jnp.asarray([-1], jnp.int32)  # never stop early: always `new` tokens

    def run() -> Any:
        cache = init_cache(config, batch, PROMPT + new, dtype)
        out = prefill_and_decode(params, cache, tokens, mask, jax.random.key(0), knobs=knobs,
                                 stop_ids=stop, config=config, max_new_tokens=new, flags=flags,
                                 empty_cache=True)  # fmt: skip
        return jax.block_until_ready(out[0])

    return run


def torch_generate(model: Any, batch: int, new: int) -> Callable[[], Any]:
    import torch  # noqa: PLC0415

    ids = torch.tensor(np.random.default_rng(0).integers(0, 50000, (batch, PROMPT)))

    def run() -> Any:
        with torch.inference_mode():
            return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                                  min_new_tokens=new, do_sample=False, pad_token_id=0)  # fmt: skip

    return run


def run_benchmark(reps: int = 2, log: Callable[[str], None] = print) -> dict[str, float]:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    torch.set_num_threads(2)
    config = get_preset("codegen-350M")
    hf_cfg = {
        k: v for k, v in config.to_hf_config().items() if k not in ("model_type", "architectures")
    }
    torch.manual_seed(0)
    model = transformers.CodeGenForCausalLM(transformers.CodeGenConfig(**hf_cfg)).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = params_from_state_dict(state, config)
    del state
    load = os.getloadavg()[0]
    bw = bandwidth_gbs()
    weight_bytes = (config.num_params() - config.vocab_size * config.d_model) * 4  # no embedding
    ceiling = bw * 1e9 / weight_bytes
    r: dict[str, float] = {"bandwidth_gbs": bw, "ceiling_fp32_tok_s": ceiling,
                           "ceiling_bf16_tok_s": 2 * ceiling, "loadavg_start": load}  # fmt: skip
    log(f"load average {load:.2f}; copy bandwidth {bw:.1f} GB/s; weights read per token "
        f"{weight_bytes / 1e9:.2f} GB fp32 -> ceiling {ceiling:.1f} tok/s fp32, "
        f"{2 * ceiling:.1f} bf16 (batch 1)")  # fmt: skip

    def decode_rate(make: Callable[[int], Callable[[], Any]], batch: int) -> tuple[float, float]:
        """(end-to-end tokens/s incl. prefill, decode-only tokens/s) for NEW new tokens."""
        t_full = _median_time(make(NEW), reps)
        t_one = _median_time(make(1), reps)
        return batch * NEW / t_full, batch * (NEW - 1) / (t_full - t_one)

    for batch in (1, 8):
        ours = decode_rate(lambda n, b=batch: ours_generate(params, config, b, n), batch)
        peer = decode_rate(lambda n, b=batch: torch_generate(model, b, n), batch)
        r[f"ours_b{batch}"], r[f"ours_b{batch}_decode"] = ours
        r[f"torch_b{batch}"], r[f"torch_b{batch}_decode"] = peer
        log(f"batch {batch}: ours {ours[0]:.2f} tok/s (decode {ours[1]:.2f}), transformers "
            f"{peer[0]:.2f} (decode {peer[1]:.2f}); ratio {ours[0] / peer[0]:.2f}x")  # fmt: skip
    log(f"batch 1 fp32 decode at {r['ours_b1_decode'] / ceiling:.0%} of the bandwidth ceiling")

    # bf16 weights, batch 1, against transformers fp32
    params16 = cast_params(params, jnp.bfloat16)
    ours16 = decode_rate(lambda n: ours_generate(params16, config, 1, n), 1)
    r["ours_bf16_b1"], r["ours_bf16_b1_decode"] = ours16
    f = jax.jit(forward, static_argnames="config")
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50000, (1, PROMPT)), jnp.int32)
    l32, l16 = np.asarray(f(params, ids, config)[0]), np.asarray(f(params16, ids, config)[0])
    r["bf16_logit_max_abs_diff"] = float(np.abs(l32 - l16).max())
    r["bf16_logit_std"] = float(l32.std())
    log(f"bf16 batch 1: ours {ours16[0]:.2f} tok/s (decode {ours16[1]:.2f}); vs transformers fp32 "
        f"{ours16[0] / r['torch_b1']:.2f}x; logits max |bf16 - fp32| {r['bf16_logit_max_abs_diff']:.3f}"
        f" (logit std {r['bf16_logit_std']:.3f}; within {BF16_LOGIT_TOL}: "
        f"{'yes' if r['bf16_logit_max_abs_diff'] <= BF16_LOGIT_TOL else 'NO'})")  # fmt: skip

    # 512-token prefill (next-token logits only, as generate needs), alternating the two
    # runs so that load from other jobs hits both alike
    long_ids = np.random.default_rng(2).integers(0, 50000, (1, 512))
    pre = jax.jit(
        lambda p, t, c: forward(p, t, config, cache=c, last_only=True, empty_cache=True)[0]
    )
    ids512 = jnp.asarray(long_ids, jnp.int32)
    t_ids = torch.tensor(long_ids)

    def ours_prefill() -> Any:
        return jax.block_until_ready(pre(params, ids512, init_cache(config, 1, 512)))

    def torch_prefill() -> Any:
        with torch.inference_mode():
            return model(t_ids, use_cache=True, logits_to_keep=1).logits

    ours_t, peer_t = _alternating_medians(ours_prefill, torch_prefill, 2 * reps + 1)
    r["prefill512_ours_s"], r["prefill512_torch_s"] = ours_t, peer_t
    log(f"512-token prefill: ours {ours_t * 1e3:.0f} ms, transformers {peer_t * 1e3:.0f} ms; "
        f"ratio {peer_t / ours_t:.2f}x")  # fmt: skip
    r["loadavg_end"] = os.getloadavg()[0]
    log(f"load average at the end {r['loadavg_end']:.2f}")
    return r


@pytest.mark.slow
def test_bench_generate(benchmark: Any) -> None:
    pytest.importorskip("torch", reason="torch is not installed: no peer to compare with")
    pytest.importorskip("transformers", reason="transformers is not installed")
    result = benchmark.pedantic(run_benchmark, kwargs={"reps": 1}, rounds=1, iterations=1)
    benchmark.extra_info.update(result)


if __name__ == "__main__":
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    run_benchmark()
