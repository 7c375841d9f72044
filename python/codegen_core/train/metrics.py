"""What a user watches: metrics.jsonl, a TensorBoard event file, MFU and a loss-curve PNG.

MFU (model FLOPs utilisation) = achieved model FLOPs / peak FLOPs. Model FLOPs per trained
token are PaLM's ``6 * N + 12 * n_layer * d_model * seq_len``, with N the parameters that
take part in matmuls (all but the input embedding, a lookup); rematerialised recomputation
does not count. The peak is configured (``log.peak_tflops`` per device) or measured here by
timing a large fp32 matmul (:func:`measure_peak_flops`; a probe at start-up on a busy
machine reads low, so MFU then reads high: configure the peak for numbers to compare).

Per-step records: ``loss`` (mean over the counted targets), ``lr``, ``grad_norm`` (before
clipping), ``tokens`` (counted targets), ``z_loss``, ``tokens_per_s`` (every position of the
global batch per wall second of the step: data, transfer and, at the first step,
compilation included), ``mfu``, ``step_s``. Held-out records carry ``eval_loss``,
``eval_tokens`` and ``eval_bpb``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp

from codegen_core.model.config import CodeGenConfig


def flops_per_token(config: CodeGenConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) by PaLM's formula (module doc)."""
    n = config.num_params() - config.vocab_size * config.d_model  # not the embedding lookup
    return 6.0 * n + 12.0 * config.n_layer * config.d_model * seq_len


def measure_peak_flops(*, size: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of one device on a square fp32 matmul (best of ``repeats``).

    On CPU the "devices" of one process share its cores, so this is the peak of the whole
    process, not of each simulated device.
    """
    device = jax.local_devices()[0]
    a = jax.device_put(jnp.ones((size, size), jnp.float32), device)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def total_peak_flops(peak_tflops_per_device: float) -> float:
    """Peak FLOP/s of the whole run: configured per device, or measured (see above)."""
    if peak_tflops_per_device > 0:
        return peak_tflops_per_device * 1e12 * jax.device_count()
    measured = measure_peak_flops()
    if jax.default_backend() == "cpu":
        return measured * jax.process_count()
    return measured * jax.device_count()


class MetricsWriter:
    """Appends one JSON line per step to ``metrics.jsonl`` and mirrors scalars to
    TensorBoard (tensorboardX) under ``tensorboard/``. Only process 0 writes."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.active = jax.process_index() == 0
        self._jsonl: TextIO | None = None
        self._tb: Any = None
        if not self.active:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8")
        if tensorboard:
            from tensorboardX import SummaryWriter  # noqa: PLC0415 - only process 0 needs it

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))

    def write(self, step: int, values: Mapping[str, float], *, prefix: str = "") -> None:
        if not self.active:
            return
        record = {"step": int(step), **{f"{prefix}{k}": float(v) for k, v in values.items()}}
        assert self._jsonl is not None
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for key, value in values.items():
                if math.isfinite(float(value)):
                    self._tb.add_scalar(f"{prefix or 'train/'}{key}", float(value), step)

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl; for a step logged twice (a run resumed from an earlier
    checkpoint) the later record wins. Sorted by step, train and eval records merged."""
    by_step: dict[tuple[int, bool], dict[str, Any]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            by_step[(rec["step"], any(k.startswith("eval_") for k in rec))] = rec
    return [by_step[k] for k in sorted(by_step)]


def plot_loss(run_dir: str | Path) -> Path | None:
    """``<run_dir>/loss.png`` from metrics.jsonl; None (with nothing written) when matplotlib
    is not installed or there is nothing to plot."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    records = read_metrics(Path(run_dir) / "metrics.jsonl")
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    held = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not held:
        return None
    fig, axis = plt.subplots(figsize=(7, 4))
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss")
    if held:
        axis.plot(*zip(*held, strict=True), "o-", label="held-out loss")
    axis.set_xlabel("step")
    axis.set_ylabel("loss (nats / token)")
    axis.grid(alpha=0.3)
    axis.legend()
    out = Path(run_dir) / "loss.png"
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
