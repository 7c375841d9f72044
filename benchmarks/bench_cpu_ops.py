"""The native CPU sum-of-squares, transpose and row log-sum-exp kernels (model/cpu_ops.py)
against XLA.

    python benchmarks/bench_cpu_ops.py

Times, under ``jit`` with the training step's CPU compiler options, the median of
``BENCH_REPS`` (default 7) calls of each op on the 350M model's shapes: the gradient sum of
squares of a stacked (20, 4096, 1024) MLP kernel and of the (51200, 1024) LM head, the
transpose of the (512, 51200) logits gradient, and the LM head's log-sum-exp of the
(512, 51200) logits plus the (51200,) bias (XLA: ``jax.nn.logsumexp(logits + bias, -1)`` as
one jitted function). Native and XLA runs alternate round by round,
so load on the machine hits both alike; the script prints the load average and checks that
both give the same result. About 12 s on the 2-core dev machine.

Both sides allocate their result (and XLA its ``x * x`` temporary) in fresh memory on every
call, as inside the training step, so page faults are part of the times; run with
``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc >= 2.35: huge pages for malloc's large
blocks) to see the times with them mostly gone.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from codegen_core.model import cpu_ops
from codegen_core.train.step import compiler_options

REPS = int(os.environ.get("BENCH_REPS", "7"))


def _time(fn: Callable[..., jax.Array], args: tuple[jax.Array, ...]) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def compare(
    name: str,
    native: Callable,
    xla: Callable,
    x: jax.Array | tuple[jax.Array, ...],
    nbytes: int,
    *,
    rtol: float | None = None,
) -> tuple[float, float]:
    """Medians of both jitted ops on the argument(s) x (seconds: native, XLA); results equal
    (within rtol if given, else exactly; scalars within 1e-4)."""
    args = x if isinstance(x, tuple) else (x,)
    opts = compiler_options("cpu")
    f_native = jax.jit(native, compiler_options=opts)
    f_xla = jax.jit(xla, compiler_options=opts)
    a, b = np.asarray(f_native(*args)), np.asarray(f_xla(*args))  # compile, warm up, check
    if a.ndim == 0 or rtol is not None:
        np.testing.assert_allclose(a, b, rtol=1e-4 if rtol is None else rtol)
    else:
        np.testing.assert_array_equal(a, b)
    t_native, t_xla = [], []
    for _ in range(REPS):
        t_native.append(_time(f_native, args))
        t_xla.append(_time(f_xla, args))
    n, q = statistics.median(t_native), statistics.median(t_xla)
    print(
        f"{name:34s} native {1e3 * n:7.1f} ms ({nbytes / n / 1e9:5.1f} GB/s)   "
        f"xla {1e3 * q:7.1f} ms ({nbytes / q / 1e9:5.1f} GB/s)   xla/native {q / n:5.2f}x"
    )
    return n, q


def main() -> None:
    if not cpu_ops.use_native_ops():
        raise SystemExit("bench_cpu_ops: needs the CPU backend, one device and the built _core")
    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    print(f"median of {REPS} calls each; GB/s counts bytes read (+ written for the transpose)")
    rng = np.random.default_rng(0)
    times: dict[str, tuple[float, float]] = {}
    for shape in [(20, 4096, 1024), (51200, 1024)]:
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        times[f"sum of squares {shape}"] = compare(
            f"sum_squares {shape}",
            cpu_ops._native_sum_squares,
            cpu_ops._xla_sum_squares,
            x,
            x.size * 4,
        )
        del x
    for shape in [(512, 51200), (51200, 512)]:
        x = jnp.asarray(rng.standard_normal(shape, np.float32))
        times[f"transpose {shape}"] = compare(
            f"transpose {shape}", cpu_ops._native_transpose, jnp.transpose, x, x.size * 8
        )
        del x
    # the LM head's log-sum-exp: (N, V) logits of the 350M step (N = 512 tokens per device
    # step) plus the (V,) bias; XLA as one jitted jax.nn.logsumexp(logits + bias, -1)
    logits = jnp.asarray(4.0 * rng.standard_normal((512, 51200), np.float32))
    bias = jnp.asarray(rng.standard_normal((51200,), np.float32))
    times["row logsumexp (512, 51200) + bias"] = compare(
        "row_logsumexp (512, 51200) + bias",
        cpu_ops._native_row_logsumexp,
        cpu_ops._xla_row_logsumexp,
        (logits, bias),
        (logits.size + bias.size) * 4,
        rtol=1e-5,
    )
    from _record import record, row  # noqa: PLC0415 (benchmarks/ is on sys.path)

    record("cpu_ops", [
        row(f"native CPU kernel: {name}, fp32, median of {REPS}", 1e3 * n, 1e3 * q, unit="ms",
            peer="XLA:CPU (same op, jitted, the train step's options)", ratio=q / n)
        for name, (n, q) in times.items()
    ])  # fmt: skip


if __name__ == "__main__":
    main()
