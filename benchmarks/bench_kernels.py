"""The Pallas kernels (flash attention fwd / fwd+bwd, decode attention, rotary) per model shape:
FLOPs and bytes moved, and on an accelerator their time against XLA and the vendor's fused
attention as a fraction of peak.

For every kernel and shape (350M: 16 heads x 64, 2B: 32 x 80 with rotary 64, CodeGen2.5 7B:
32 x 128; training sequence 2048, decode over a 2048-slot cache) the script prints the
model FLOPs (causal attention counts the visible half: fwd 2 * 2 * B * H * T^2 / 2 * D, the
backward 2.5x that, as FlashAttention-2 counts) and the minimum bytes moved (each input read
once, each output written once).

On a TPU or GPU it then times (median of ``--iters`` after warm-up, bf16):
- the Pallas kernel (``flash_attention`` / ``decode_attention`` / ``apply_rotary``),
- XLA: the kernels' plain-jnp references compiled by XLA,
- ``jax.nn.dot_product_attention`` (``implementation="cudnn"`` on GPU; XLA's on TPU),
and reports TFLOP/s and GB/s as fractions of the peaks measured in the same run (a bf16
8192^2 matmul; a large bf16 copy). The decode kernel and rotary are memory-bound: their
figure is the bandwidth fraction. Rotary and decode have TPU kernels only (on GPU they are
timed as XLA only).

On CPU (no accelerator) there is no timing: the kernels run in interpret mode at small
shapes and are checked against their references (``--check`` does only that anywhere).

    python benchmarks/bench_kernels.py            # accelerator: timings; CPU: checks only
    python benchmarks/bench_kernels.py --check    # interpret-mode correctness only
    pytest benchmarks/bench_kernels.py -m slow
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from codegen_core.pallas_kernels.decode_attention import (
    decode_attention,
    decode_attention_reference,
)
from codegen_core.pallas_kernels.flash_attention import attention_reference, flash_attention
from codegen_core.pallas_kernels.rotary import apply_rotary, rotary_reference

from _record import record, row


@dataclass(frozen=True)
class Shape:
    name: str
    heads: int
    head_dim: int
    rotary_dim: int
    interleaved: bool  # GPT-J pairs (CodeGen) or NeoX halves (LLaMA)
    batch: int = 4
    seq: int = 2048
    decode_batch: int = 8


SHAPES = [
    Shape("codegen-350M", 16, 64, 32, True),
    Shape("codegen-2B", 32, 80, 64, True),
    Shape("codegen25-7B", 32, 128, 128, False),
]


# ---- FLOPs and bytes -----------------------------------------------------------------------
def flash_cost(s: Shape, bwd: bool, itemsize: int = 2) -> tuple[float, float]:
    """(FLOPs, bytes) of causal flash attention, forward or forward + backward."""
    b, h, t, d = s.batch, s.heads, s.seq, s.head_dim
    fwd = 4.0 * b * h * t * t * d / 2  # q k^T and p v over the visible (causal) half
    elems = b * h * t * d
    if not bwd:
        return fwd, 4.0 * elems * itemsize + b * h * t * 4  # q k v in, o out, lse (fp32)
    # backward: q k v o do in, dq dk dv out, lse and delta (fp32)
    return 3.5 * fwd, (4.0 + 8.0) * elems * itemsize + 3 * b * h * t * 4


def decode_cost(s: Shape, itemsize: int = 2) -> tuple[float, float]:
    """(FLOPs, bytes) of one decode step over a full cache of ``seq`` slots."""
    rows = s.decode_batch * s.heads
    flops = 4.0 * rows * s.seq * s.head_dim
    return flops, 2.0 * rows * s.seq * s.head_dim * itemsize + s.decode_batch * s.seq * 4


def rotary_cost(s: Shape, itemsize: int = 2) -> tuple[float, float]:
    """(FLOPs, bytes) of rotating q (or k) of a training batch (~6 flops per feature)."""
    elems = s.batch * s.seq * s.heads * s.head_dim
    return 6.0 * elems, 2.0 * elems * itemsize + s.batch * s.seq * 4


# ---- timing ---------------------------------------------------------------------------------
def _time(fn: Callable[..., Any], *args: Any, iters: int) -> float:
    """Median seconds of ``fn(*args)`` (compiled, after 2 warm-up calls)."""
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measured_peaks(iters: int) -> tuple[float, float]:
    """(bf16 matmul FLOP/s, copy bytes/s) measured on the default device."""
    n = 8192
    a = jnp.ones((n, n), jnp.bfloat16)
    mm = jax.jit(lambda a: a @ a)
    flops = 2.0 * n**3 / _time(mm, a, iters=iters)
    x = jnp.ones((1 << 28,), jnp.bfloat16)  # 512 MiB
    cp = jax.jit(lambda x: x + 1)
    bw = 2.0 * x.size * 2 / _time(cp, x, iters=iters)
    return flops, bw


def _row(
    kernel: str,
    shape: str,
    impl: str,
    *,
    sec: float,
    cost: tuple[float, float],
    peaks: tuple[float, float],
) -> str:
    flops, nbytes = cost
    tf, gb = flops / sec / 1e12, nbytes / sec / 1e9
    frac = f"{flops / sec / peaks[0]:.0%} / {nbytes / sec / peaks[1]:.0%}"
    return (f"| {kernel} | {shape} | {impl} | {flops / 1e9:.1f} | {nbytes / 1e6:.1f} | "
            f"{sec * 1e3:.3f} | {tf:.1f} TF/s, {gb:.0f} GB/s | {frac} |")  # fmt: skip


def _dpa(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """jax.nn.dot_product_attention (cuDNN on GPU, XLA elsewhere) in the kernels' layout."""
    impl = "cudnn" if jax.default_backend() == "gpu" else None
    bthd = lambda x: x.transpose(0, 2, 1, 3)  # (B, H, T, D) <-> (B, T, H, D)
    out = jax.nn.dot_product_attention(bthd(q), bthd(k), bthd(v), is_causal=True,
                                       implementation=impl)  # fmt: skip
    return bthd(out)


def bench_accelerator(iters: int) -> list[str]:
    platform = jax.default_backend()
    peaks = measured_peaks(iters)
    rows = [
        (
            f"device: {jax.devices()[0].device_kind} ({platform}); measured peaks "
            f"{peaks[0] / 1e12:.0f} TFLOP/s bf16 matmul, {peaks[1] / 1e9:.0f} GB/s copy"
        ),
        "",
        "| kernel | shape | impl | GFLOP | MB moved | ms | rate | of peak (flops / bw) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    key = jax.random.key(0)
    times: dict[tuple[str, str, str], float] = {}  # (kernel, shape, impl) -> seconds
    for s in SHAPES:
        q, k, v = (jax.random.normal(kk, (s.batch, s.heads, s.seq, s.head_dim), jnp.bfloat16)
                   for kk in jax.random.split(key, 3))  # fmt: skip

        impls = {"pallas": lambda q, k, v: flash_attention(q, k, v, causal=True),
                 "xla": lambda q, k, v: attention_reference(q, k, v, causal=True),
                 "dot_product_attention": _dpa}  # fmt: skip
        for bwd in (False, True):
            kernel = "flash fwd+bwd" if bwd else "flash fwd"
            for impl, f in impls.items():
                if bwd:
                    loss = lambda q, k, v, f=f: f(q, k, v).astype(jnp.float32).sum()
                    g = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                else:
                    g = jax.jit(f)
                try:
                    sec = _time(g, q, k, v, iters=iters)
                except Exception as e:  # noqa: BLE001 - report, go on with the other impls
                    rows.append(f"| {kernel} | {s.name} | {impl} | failed: {type(e).__name__} |")
                    continue
                times[kernel, s.name, impl] = sec
                rows.append(
                    _row(kernel, s.name, impl, sec=sec, cost=flash_cost(s, bwd), peaks=peaks)
                )
        # decode: one new token per row over a full cache
        r = s.decode_batch * s.heads
        qd = jax.random.normal(key, (r, 1, s.head_dim), jnp.bfloat16)
        kc, vc = (jax.random.normal(kk, (r, s.seq, s.head_dim), jnp.bfloat16)
                  for kk in jax.random.split(key, 2))  # fmt: skip
        mask = jnp.ones((s.decode_batch, s.seq), bool)
        off = jnp.int32(s.seq - 1)
        dec = {"xla": jax.jit(decode_attention_reference)}
        if platform == "tpu":
            dec = {"pallas": jax.jit(decode_attention), **dec}
        for impl, f in dec.items():
            sec = times["decode", s.name, impl] = _time(f, qd, kc, vc, mask, off, iters=iters)
            rows.append(_row("decode", s.name, impl, sec=sec, cost=decode_cost(s), peaks=peaks))
        # rotary on q of a training batch
        x = jax.random.normal(key, (s.batch, s.seq, s.heads, s.head_dim), jnp.bfloat16)
        pos = jnp.broadcast_to(jnp.arange(s.seq, dtype=jnp.int32), (s.batch, s.seq))
        kw = {"rotary_dim": s.rotary_dim, "interleaved": s.interleaved}
        rot = {"xla": jax.jit(functools.partial(rotary_reference, **kw))}
        if platform == "tpu":
            rot = {"pallas": jax.jit(functools.partial(apply_rotary, backend="tpu", **kw)), **rot}
        for impl, f in rot.items():
            sec = times["rotary", s.name, impl] = _time(f, x, pos, iters=iters)
            rows.append(_row("rotary", s.name, impl, sec=sec, cost=rotary_cost(s), peaks=peaks))
    _record_kernels(times)
    return rows


def _record_kernels(times: dict[tuple[str, str, str], float]) -> None:
    """benchmarks/results/kernels.json: each Pallas kernel's time against each peer (ms;
    ratio = peer time / ours, no target set by the issue)."""
    out = []
    for (kernel, shape, impl), sec in times.items():
        ours = times.get((kernel, shape, "pallas"))
        if impl == "pallas" or ours is None:
            continue
        out.append(row(f"{kernel}, {shape}", ours * 1e3, sec * 1e3, unit="ms", peer=impl,
                       ratio=sec / ours))  # fmt: skip
    if out:
        record("kernels", out, extra={"backend": jax.default_backend()})


# ---- interpret-mode correctness (any machine) -----------------------------------------------
def _sum_of(q: jax.Array, k: jax.Array, v: jax.Array, f: Callable[..., jax.Array]) -> jax.Array:
    return f(q, k, v).sum()


def check_interpret() -> list[str]:
    """Each kernel in interpret mode at a small version of every shape vs its reference."""
    out = []
    key = jax.random.key(1)
    for s in SHAPES:
        b, h, t, d = 1, 2, 256, s.head_dim
        q, k, v = (jax.random.normal(kk, (b, h, t, d), jnp.float32)
                   for kk in jax.random.split(key, 3))  # fmt: skip
        seg = jnp.asarray(np.repeat([[1] * 100 + [2] * 156], b, 0), jnp.int32)
        got = flash_attention(q, k, v, segment_ids=seg, interpret=True, backend="tpu")
        want = attention_reference(q, k, v, segment_ids=seg)
        err_f = float(jnp.abs(got - want).max())
        kernel = functools.partial(flash_attention, segment_ids=seg, interpret=True, backend="tpu")
        gk = jax.grad(_sum_of, argnums=(0, 1, 2))(q, k, v, kernel)
        ref = functools.partial(attention_reference, segment_ids=seg)
        gr = jax.grad(_sum_of, argnums=(0, 1, 2))(q, k, v, ref)
        err_b = max(float(jnp.abs(x - y).max()) for x, y in zip(gk, gr, strict=True))
        qd = q.reshape(b * h, t, d)[:, -2:]
        kc, vc = k.reshape(b * h, t, d), v.reshape(b * h, t, d)
        mask = jnp.ones((b, t), bool).at[:, :7].set(False)
        off = jnp.int32(t - 2)
        got = decode_attention(qd, kc, vc, mask, off, interpret=True)
        err_d = float(jnp.abs(got - decode_attention_reference(qd, kc, vc, mask, off)).max())
        x = q.transpose(0, 2, 1, 3)  # (B, T, H, D)
        pos = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
        kw = {"rotary_dim": s.rotary_dim, "interleaved": s.interleaved}
        err_r = float(jnp.abs(apply_rotary(x, pos, interpret=True, **kw)
                              - rotary_reference(x, pos, **kw)).max())  # fmt: skip
        for name, err in (("flash fwd", err_f), ("flash bwd", err_b), ("decode", err_d),
                          ("rotary", err_r)):  # fmt: skip
            assert err < 1e-4, f"{name} {s.name}: max error {err}"
            out.append(f"| {name} | {s.name} (small) | interpret | max |err| {err:.1e} |")
    return out


def cost_table() -> list[str]:
    rows = ["| kernel | shape | GFLOP | MB moved (bf16) |", "|---|---|---|---|"]
    for s in SHAPES:
        for name, (f, nb) in (("flash fwd", flash_cost(s, False)),
                              ("flash fwd+bwd", flash_cost(s, True)),
                              ("decode", decode_cost(s)), ("rotary", rotary_cost(s))):  # fmt: skip
            rows.append(f"| {name} | {s.name} | {f / 1e9:.1f} | {nb / 1e6:.1f} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="interpret-mode checks only")
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args(argv)
    print(f"jax {jax.__version__}, backend {jax.default_backend()}")
    print("\n".join(cost_table()))
    print()
    if args.check or jax.default_backend() == "cpu":
        if jax.default_backend() == "cpu":
            print("no accelerator: timings skipped; interpret-mode correctness only")
        print("\n".join(check_interpret()))
        return
    print("\n".join(bench_accelerator(args.iters)))


def test_bench_kernels_check() -> None:
    main(["--check"])


if __name__ == "__main__":
    main()
