"""Run Python in fresh processes with N simulated CPU devices, or as a multi-process group.

JAX fixes its device count when it first initialises, and the pytest process has one CPU
device; tests that need 8 devices (``--xla_force_host_platform_device_count=8``) or several
``jax.distributed`` processes run their work in subprocesses through these helpers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for a coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def jax_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """The environment of a child: CPU JAX with ``devices`` simulated devices."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
    flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONUNBUFFERED"] = "1"
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"  # keep XLA's C++ chatter out of the captured output
    env.update(extra)
    return env


def _describe(cmd: Sequence[str], proc: subprocess.CompletedProcess[str]) -> str:
    return (
        f"command {' '.join(map(str, cmd))} exited with {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )


def run_python(
    args: Sequence[str | Path],
    *,
    devices: int = 1,
    timeout: float = 240,
    check: bool = True,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python args...`` with ``devices`` simulated CPU devices; output captured.

    With ``check`` a non-zero exit fails with the child's output in the message.
    """
    cmd = [sys.executable, *map(str, args)]
    proc = subprocess.run(
        cmd,
        env=env or jax_env(devices),
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(_describe(cmd, proc))
    return proc


def run_group(
    args_for: Callable[[str, int], Sequence[str | Path]],
    num_processes: int,
    *,
    devices: int = 1,
    timeout: float = 240,
    cwd: str | Path | None = None,
) -> list[subprocess.CompletedProcess[str]]:
    """Start ``num_processes`` children ``python *args_for(coordinator, i)`` and wait for all.

    ``coordinator`` is ``127.0.0.1:<free port>``; each child has ``devices`` devices. If one
    fails or the group runs past ``timeout``, the others are killed and the test fails with
    every child's output.
    """
    coordinator = f"127.0.0.1:{free_port()}"
    cmds = [[sys.executable, *map(str, args_for(coordinator, i))] for i in range(num_processes)]
    procs = [
        subprocess.Popen(
            cmd,
            env=jax_env(devices),
            cwd=cwd or REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cmd in cmds
    ]
    deadline = time.monotonic() + timeout
    failed = False
    while any(p.poll() is None for p in procs):
        if time.monotonic() > deadline or any(p.returncode not in (None, 0) for p in procs):
            failed = True
            break
        time.sleep(0.1)
    if failed:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
    results = []
    for cmd, p in zip(cmds, procs, strict=True):
        out, err = p.communicate()
        results.append(subprocess.CompletedProcess(cmd, p.returncode, out, err))
    if failed or any(r.returncode != 0 for r in results):
        why = "timed out" if time.monotonic() > deadline else "a process failed"
        raise AssertionError(
            f"process group {why}:\n" + "\n".join(_describe(r.args, r) for r in results)
        )
    return results
