"""Greedy generation with a 350M-shaped CodeGen: codegen-core (JAX, XLA CPU) vs transformers.

One run measures both on the same random weights (drawn in transformers, converted in
memory), prompt 64 tokens, 128 new tokens: batch 1 and 8 in fp32, batch 1 with bf16 weights
on both sides (transformers cast with ``.to(torch.bfloat16)``, what loading with
``dtype=torch.bfloat16`` gives), and a 512-token prefill.

Decoding at batch 1 reads every weight once per token, so its ceiling is the machine's read
bandwidth: measured in the same run by ``_core.stream_read`` (csrc/linalg/stream.cc), a
STREAM-style pass that reads a weight-sized buffer with all cores, before and after the
generation runs. Decode is reported as (weight bytes per token x decode tokens/s) / that
bandwidth, for fp32 and bf16 weights (bf16 reads half the bytes); the target is >= 90%.

    python benchmarks/bench_generate.py            # full run (about 10 minutes on 2 cores)
    BENCH_REPS=1 python benchmarks/bench_generate.py   # quicker, noisier
    BENCH_PARTS=b1,bf16 python benchmarks/bench_generate.py  # some parts: b1 b8 bf16 prefill
    BENCH_PARTS=read python benchmarks/bench_generate.py     # read bandwidth by thread count
    pytest benchmarks/bench_generate.py -m slow    # the same through pytest-benchmark

torch runs at its best CPU settings: 2 threads, OMP_WAIT_POLICY=PASSIVE (set before torch
is imported; without it torch slows down several times when anything else runs).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _record import record, row
from codegen_core import _core
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
# Decode at batch 1 as a fraction of the read-bandwidth ceiling (issue 9): the target.
CEILING_TARGET = 0.90
REPS = int(os.environ.get("BENCH_REPS", "2"))
# Which measurements to run (a full run takes over 10 minutes on 2 cores; split it in two).
# "read": the read bandwidth alone, by thread count, with and without huge pages.
ALL_PARTS = ("b1", "b8", "bf16", "prefill", "read")
PARTS = tuple(p for p in os.environ.get("BENCH_PARTS", ",".join(ALL_PARTS)).split(",") if p)


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


def read_bandwidth(n_bytes: int, reps: int = 7) -> dict[str, float]:
    """Bytes read per second (GB/s) by the native STREAM-style read of an n_bytes buffer
    with all cores: best and median of ``reps`` passes (one untimed pass first touches it)."""
    buf = np.ones(n_bytes // 8, np.uint64)
    _core.stream_read(buf, 0, 1)
    _, seconds = _core.stream_read(buf, 0, reps)
    return {"best": buf.nbytes / min(seconds) / 1e9,
            "median": buf.nbytes / statistics.median(seconds) / 1e9}  # fmt: skip


def read_table(n_bytes: int, log: Callable[[str], None]) -> dict[str, float]:
    """Read bandwidth of an n_bytes buffer for 1..all threads, with numpy's huge-page advice
    (its default for large arrays) and without it (4 KiB pages, as most allocators give)."""
    from numpy._core import multiarray  # noqa: PLC0415

    out: dict[str, float] = {}
    for huge in (True, False):
        previous = multiarray._set_madvise_hugepage(huge)
        try:
            for threads in range(1, (os.cpu_count() or 1) + 1):
                buf = np.ones(n_bytes // 8, np.uint64)
                _core.stream_read(buf, threads, 1)
                _, seconds = _core.stream_read(buf, threads, 7)
                best, median = (
                    buf.nbytes / min(seconds) / 1e9,
                    buf.nbytes / statistics.median(seconds) / 1e9,
                )
                out[f"read_gbs_{'huge' if huge else '4k'}_t{threads}_best"] = best
                log(f"read {n_bytes / 1e9:.2f} GB, {threads} thread(s), "
                    f"{'huge pages advised' if huge else '4 KiB pages'}: best {best:.1f} GB/s, "
                    f"median {median:.1f} (load average {os.getloadavg()[0]:.2f})")  # fmt: skip
                del buf
        finally:
            multiarray._set_madvise_hugepage(previous)
    return out


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


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def run_benchmark(reps: int = REPS, log: Callable[[str], None] = print) -> dict[str, float]:
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    unknown = set(PARTS) - set(ALL_PARTS)
    if unknown:
        raise ValueError(f"BENCH_PARTS: unknown parts {sorted(unknown)}; known: {ALL_PARTS}")
    config = get_preset("codegen-350M")
    # Weights read per decoded token: all but the embedding table (a row lookup).
    n_read = config.num_params() - config.vocab_size * config.d_model
    wbytes = {"fp32": 4 * n_read, "bf16": 2 * n_read}
    r: dict[str, float] = {"loadavg_start": os.getloadavg()[0], "threads": float(os.cpu_count())}
    if "read" in PARTS:
        r.update(read_table(wbytes["fp32"], log))
        if set(PARTS) == {"read"}:
            return r
    torch.set_num_threads(2)
    hf_cfg = {
        k: v for k, v in config.to_hf_config().items() if k not in ("model_type", "architectures")
    }
    torch.manual_seed(0)
    model = transformers.CodeGenForCausalLM(transformers.CodeGenConfig(**hf_cfg)).eval()
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = params_from_state_dict(state, config)
    del state
    bw_start = {dt: read_bandwidth(b) for dt, b in wbytes.items()}
    log(f"load average {r['loadavg_start']:.2f}; weights read per token {wbytes['fp32'] / 1e9:.3f}"
        f" GB fp32, {wbytes['bf16'] / 1e9:.3f} GB bf16; read bandwidth ({os.cpu_count()} threads,"
        f" weight-sized buffers, best/median of 7): fp32 {bw_start['fp32']['best']:.1f}/"
        f"{bw_start['fp32']['median']:.1f} GB/s, bf16 {bw_start['bf16']['best']:.1f}/"
        f"{bw_start['bf16']['median']:.1f} GB/s")  # fmt: skip

    def decode_rate(make: Callable[[int], Callable[[], Any]], batch: int) -> tuple[float, float]:
        """(end-to-end tokens/s incl. prefill, decode-only tokens/s) for NEW new tokens."""
        t_full = _median_time(make(NEW), reps)
        t_one = _median_time(make(1), reps)
        return batch * NEW / t_full, batch * (NEW - 1) / (t_full - t_one)

    for batch in [b for b, part in ((1, "b1"), (8, "b8")) if part in PARTS]:
        ours = decode_rate(lambda n, b=batch: ours_generate(params, config, b, n), batch)
        peer = decode_rate(lambda n, b=batch: torch_generate(model, b, n), batch)
        r[f"ours_b{batch}"], r[f"ours_b{batch}_decode"] = ours
        r[f"torch_b{batch}"], r[f"torch_b{batch}_decode"] = peer
        log(f"batch {batch} fp32: ours {ours[0]:.2f} tok/s (decode {ours[1]:.2f}), transformers "
            f"{peer[0]:.2f} (decode {peer[1]:.2f}); ratio {ours[0] / peer[0]:.2f}x")  # fmt: skip

    if "bf16" in PARTS:
        _bf16_part(r, params, model, config, decode_rate=decode_rate, log=log)
    if "prefill" in PARTS:
        _prefill_part(r, params, model, config, reps=reps, log=log)

    # The ceiling: the best read pass of the run (start and end), as STREAM reports.
    bw_end = {dt: read_bandwidth(b) for dt, b in wbytes.items()}
    r["loadavg_end"] = os.getloadavg()[0]
    for dt, key in (("fp32", "ours_b1_decode"), ("bf16", "ours_bf16_b1_decode")):
        best = max(bw_start[dt]["best"], bw_end[dt]["best"])
        r[f"read_gbs_{dt}_best"] = best
        r[f"read_gbs_{dt}_median_start"] = bw_start[dt]["median"]
        r[f"read_gbs_{dt}_median_end"] = bw_end[dt]["median"]
        r[f"ceiling_{dt}_tok_s"] = best * 1e9 / wbytes[dt]
        if key not in r:
            continue
        r[f"decode_gbs_{dt}"] = wbytes[dt] * r[key] / 1e9
        r[f"ceiling_fraction_{dt}"] = r[f"decode_gbs_{dt}"] / best
        log(f"batch 1 {dt} decode reads {r[f'decode_gbs_{dt}']:.1f} GB/s = "
            f"{r[f'ceiling_fraction_{dt}']:.0%} of the read bandwidth {best:.1f} GB/s (ceiling "
            f"{r[f'ceiling_{dt}_tok_s']:.1f} tok/s; medians {bw_start[dt]['median']:.1f} at the "
            f"start, {bw_end[dt]['median']:.1f} at the end); target >= {CEILING_TARGET:.0%}: "
            f"{_met(r[f'ceiling_fraction_{dt}'] >= CEILING_TARGET)}")  # fmt: skip
    log(f"load average at the end {r['loadavg_end']:.2f}")
    _record_generate(r)
    return r


def _record_generate(r: dict[str, float]) -> None:
    """benchmarks/results/generate[-<parts>].json for ``python -m benchmarks.report``."""
    rows = []
    for key, name, target in (
        ("b1", "generation batch 1 fp32, end to end", 1.2),
        ("b8", "generation batch 8 fp32, end to end", 1.5),
        ("bf16_b1", "generation batch 1 bf16 both sides, end to end", 2.0),
    ):
        if f"ours_{key}" in r:
            rows.append(
                row(
                    name,
                    r[f"ours_{key}"],
                    r[f"torch_{key}"],
                    unit="tok/s",
                    peer="transformers",
                    ratio=r[f"ours_{key}"] / r[f"torch_{key}"],
                    target=target,
                )
            )
    if "prefill512_ours_s" in r:
        ours, peer = r["prefill512_ours_s"], r["prefill512_torch_s"]
        rows.append(
            row(
                "512-token prefill",
                ours,
                peer,
                unit="s",
                peer="transformers",
                ratio=peer / ours,
                target=1.2,
            )
        )
    for dt in ("fp32", "bf16"):
        if f"ceiling_fraction_{dt}" in r:
            rows.append(
                row(
                    f"batch 1 {dt} decode, fraction of the read bandwidth",
                    r[f"ceiling_fraction_{dt}"],
                    unit="",
                    target=CEILING_TARGET,
                    compare="figure",
                )
            )
    if rows:
        record(
            "generate" if set(PARTS) == set(ALL_PARTS) else "generate-" + "-".join(PARTS),
            rows,
            load_start=r["loadavg_start"],
        )


def _bf16_part(
    r: dict[str, float],
    params: Any,
    model: Any,
    config: Any,
    *,
    decode_rate: Callable[[Callable[[int], Callable[[], Any]], int], tuple[float, float]],
    log: Callable[[str], None],
) -> None:
    """bf16 weights at batch 1 on both sides, and the logit error of our bf16 weights."""
    import torch  # noqa: PLC0415

    params16 = cast_params(params, jnp.bfloat16)
    ours16 = decode_rate(lambda n: ours_generate(params16, config, 1, n), 1)
    r["ours_bf16_b1"], r["ours_bf16_b1_decode"] = ours16
    model16 = copy.deepcopy(model).to(torch.bfloat16)  # the same weights, rounded to bf16
    peer16 = decode_rate(lambda n: torch_generate(model16, 1, n), 1)
    r["torch_bf16_b1"], r["torch_bf16_b1_decode"] = peer16
    log(f"batch 1 bf16: ours {ours16[0]:.2f} tok/s (decode {ours16[1]:.2f}), transformers bf16 "
        f"{peer16[0]:.2f} (decode {peer16[1]:.2f}); ratio {ours16[0] / peer16[0]:.2f}x")  # fmt: skip
    f = jax.jit(forward, static_argnames="config")
    ids = jnp.asarray(np.random.default_rng(1).integers(0, 50000, (1, PROMPT)), jnp.int32)
    l32, l16 = np.asarray(f(params, ids, config)[0]), np.asarray(f(params16, ids, config)[0])
    r["bf16_logit_max_abs_diff"] = float(np.abs(l32 - l16).max())
    r["bf16_logit_std"] = float(l32.std())
    log(f"bf16 logits: max |bf16 - fp32| {r['bf16_logit_max_abs_diff']:.3f} (logit std "
        f"{r['bf16_logit_std']:.3f}; within {BF16_LOGIT_TOL}: "
        f"{'yes' if r['bf16_logit_max_abs_diff'] <= BF16_LOGIT_TOL else 'NO'})")  # fmt: skip


def _prefill_part(
    r: dict[str, float], params: Any, model: Any, config: Any, *, reps: int,
    log: Callable[[str], None],
) -> None:  # fmt: skip
    """512-token prefill (next-token logits only, as generate needs), alternating the two
    runs so that load from other jobs hits both alike."""
    import torch  # noqa: PLC0415

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


def test_bench_generate(benchmark: Any) -> None:
    pytest.importorskip("torch", reason="torch is not installed: no peer to compare with")
    pytest.importorskip("transformers", reason="transformers is not installed")
    result = benchmark.pedantic(run_benchmark, rounds=1, iterations=1)
    benchmark.extra_info.update(result)


if __name__ == "__main__":
    print(f"jax {jax.__version__}, devices {jax.devices()}")
    run_benchmark()
