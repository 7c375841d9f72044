"""End-to-end: the same losses on 1 device, 8 simulated devices and 2 processes; exact resume
after SIGKILL during training and during a checkpoint save; a checkpoint written on 8 devices
continues on 1 device and on 2 processes.

All runs are tiny (``runs.TINY``: one layer of width 32, bytes as tokens, 8 x 32 tokens a
step) and go through ``python -m codegen_core.train`` in child processes.

Tolerance across device layouts: ``rtol = 1e-5`` on the loss. One device, a (2, 2, 2) mesh
and two processes run the same fp32 math, but XLA splits the batch and the matrix products
differently, so sums (the loss over 256 targets, gradients over the batch, the global grad
norm, the all-reduces) are added in another order: each step differs by a few ulps (fp32
eps = 1.2e-7), and 20 AdamW steps carry that forward without amplifying it much (measured:
at most 3.3e-7 relative here). 1e-5 is 30x that and still far below a real error (a wrong
shard or a skipped batch moves the loss by > 1e-2). On the same layout the run is
deterministic, so resuming on the same mesh must reproduce the losses exactly.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from codegen_core.train.checkpoint import Checkpointer

from . import runs
from .procs import jax_env, run_group, run_python

STEPS = 20
RTOL = 1e-5
MESH_222 = ("mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return runs.make_byte_shards(tmp_path_factory.mktemp("data") / "shards")


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Losses of an uninterrupted 20-step run on one device."""
    run = tmp_path_factory.mktemp("reference") / "run"
    run_python(runs.train_args(data, run, f"train.steps={STEPS}", "checkpoint.every=5"))
    return runs.loss_array(run, range(1, STEPS + 1))


@pytest.fixture(scope="module")
def run8(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same run on 8 simulated devices, (data, fsdp, tensor) = (2, 2, 2); keeps all
    checkpoints (5, 10, 15, 20)."""
    run = tmp_path_factory.mktemp("eight") / "run"
    args = runs.train_args(
        data, run, f"train.steps={STEPS}", "checkpoint.every=5", "checkpoint.keep=4", *MESH_222
    )
    run_python(args, devices=8)
    return run


def test_same_losses_on_1_device_8_devices_and_2_processes(
    data: Path, reference: np.ndarray, run8: Path, tmp_path: Path
) -> None:
    steps = range(1, STEPS + 1)
    np.testing.assert_allclose(runs.loss_array(run8, steps), reference, rtol=RTOL)
    # two processes of four devices each, the same (2, 2, 2) mesh across them
    run2 = tmp_path / "two"
    run_group(
        lambda c, i: runs.train_args(
            data, run2, f"train.steps={STEPS}", *MESH_222, *runs.dist_overrides(c, 2, i)
        ),
        2,
        devices=4,
    )
    np.testing.assert_allclose(runs.loss_array(run2, steps), reference, rtol=RTOL)
    assert reference[-1] < reference[0] - 1.0  # it trained: the comparison is not vacuous


def _resume_from(run8: Path, step: int, dest: Path) -> Path:
    """A copy of the 8-device run with only its checkpoints up to ``step``."""
    shutil.copytree(run8, dest)
    for ckpt in (dest / "checkpoints").iterdir():
        if ckpt.name.isdigit() and int(ckpt.name) > step:
            shutil.rmtree(ckpt)
    with Checkpointer(dest / "checkpoints") as c:
        assert c.latest_step() == step
    return dest


def test_checkpoint_from_8_devices_continues_on_1_device(
    data: Path, reference: np.ndarray, run8: Path, tmp_path: Path
) -> None:
    run = _resume_from(run8, 10, tmp_path / "run")
    out = run_python(runs.train_args(data, run, f"train.steps={STEPS}"))
    assert "resumed from" in out.stderr and "(step 10)" in out.stderr, out.stderr[-2000:]
    np.testing.assert_allclose(runs.loss_array(run, range(11, STEPS + 1)), reference[10:], RTOL)


def test_checkpoint_from_8_devices_continues_on_2_processes(
    data: Path, reference: np.ndarray, run8: Path, tmp_path: Path
) -> None:
    run = _resume_from(run8, 15, tmp_path / "run")
    outs = run_group(
        lambda c, i: runs.train_args(
            data, run, f"train.steps={STEPS}", *runs.dist_overrides(c, 2, i)
        ),
        2,
    )
    assert any("(step 15)" in o.stderr for o in outs), outs[0].stderr[-2000:]  # process 0 says
    np.testing.assert_allclose(runs.loss_array(run, range(16, STEPS + 1)), reference[15:], RTOL)


def _start(data: Path, run: Path, *overrides: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, *runs.train_args(data, run, *overrides)],
        env=jax_env(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_when(child: subprocess.Popen[str], ready: callable, what: str) -> None:
    deadline = time.monotonic() + 180
    try:
        while not ready():
            if child.poll() is not None:
                _, err = child.communicate()
                raise AssertionError(f"the run ended before {what}:\n{err[-3000:]}")
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.communicate()
    assert child.returncode == -signal.SIGKILL


def _last_step(run: Path) -> int:
    try:
        return max(runs.losses(run), default=0)
    except (OSError, ValueError):  # not written yet, or a line half-written
        return 0


def _finish_and_compare(data: Path, run: Path, reference: np.ndarray) -> int:
    """Restart the killed run to step 20; the losses after the resume point equal the
    uninterrupted run's exactly (same single-device layout: deterministic)."""
    with Checkpointer(run / "checkpoints") as c:
        latest = c.latest_step()
    assert latest is not None and latest < STEPS
    out = run_python(runs.train_args(data, run, f"train.steps={STEPS}"))
    assert f"(step {latest})" in out.stderr, out.stderr[-2000:]
    resumed = runs.loss_array(run, range(latest + 1, STEPS + 1))
    np.testing.assert_array_equal(resumed, reference[latest:])
    return latest


def test_sigkill_during_training_resumes_from_the_last_checkpoint_exactly(
    data: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # a long run (same schedule: the learning rate depends on warmup/decay steps only),
    # killed at step 12 or a little later: the last complete checkpoint is step 10, or 5
    # when step 10's asynchronous save had not finished yet
    child = _start(data, run, "train.steps=100000", "checkpoint.every=5")
    _kill_when(child, lambda: _last_step(run) >= 12, "step 12")
    latest = _finish_and_compare(data, run, reference)
    assert latest in (5, 10)


def _saving(run: Path) -> bool:
    ckpts = run / "checkpoints"
    return ckpts.is_dir() and any("tmp" in p.name for p in ckpts.iterdir())


def test_sigkill_during_a_checkpoint_save_resumes_from_the_last_complete_one(
    data: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    # a checkpoint every step: killed while one is being written (its temporary directory
    # exists), after a few complete ones
    child = _start(data, run, "train.steps=100000", "checkpoint.every=1", "checkpoint.keep=2")
    _kill_when(child, lambda: _last_step(run) >= 6 and _saving(run), "a save in flight")
    _finish_and_compare(data, run, reference)
