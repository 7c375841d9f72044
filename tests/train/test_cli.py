"""``codegen-core train`` / ``python -m codegen_core.train``: arguments, errors, signals,
export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import jax
import numpy as np
import pytest
import yaml

from codegen_core.model.hf_io import load_hf_checkpoint
from codegen_core.model.transformer import unstack_layers
from codegen_core.train import optim
from codegen_core.train import step as step_lib
from codegen_core.train.checkpoint import Checkpointer
from codegen_core.train.cli import main
from codegen_core.train.config import load_config
from codegen_core.train.distributed import make_mesh
from codegen_core.train.metrics import read_metrics
from tests.train.test_loop import TINY, byte_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return byte_shards(tmp_path_factory.mktemp("bytes"))


def test_help_and_print_config(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--config" in capsys.readouterr().out
    assert main(["--config", "tiny", "train.steps=7", "model.n_layer=3", "--print-config",
                 "--no-progress"]) == 0  # fmt: skip
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["train"]["steps"] == 7 and printed["model"]["n_layer"] == 3
    assert printed["model"]["preset"] == "codegen-350M" and printed["log"]["progress"] is False


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train.stepz=3"], "unknown key train.stepz"),
        (["--config", "nope"], "'nope' is neither a file nor a preset"),
        (["run.dir=/tmp/x", "data.dir=/nonexistent/data"], "data.dir=/nonexistent/data: no such"),
        (["data.dir=/tmp"], "cannot read /tmp/manifest.json"),
    ],
)
def test_bad_input_exits_1_with_a_message(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("codegen-core train: error:") and needle in err, err


def _train_cmd(data: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "codegen_core.train", "--no-progress",
            f"data.dir={data}", f"run.dir={run}", *TINY, *extra]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_a_checkpoint_and_exits_0(data: Path, tmp_path: Path, sig: int) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _train_cmd(data, run, "train.steps=100000", "checkpoint.every=100000", "log.plot=false"),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    metrics = run / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    name = signal.Signals(sig).name
    assert f"{name} received: saved checkpoint step" in err
    last = read_metrics(metrics)[-1]["step"]
    assert f"saved checkpoint step {last} and stopped" in err
    assert (run / "checkpoints" / str(last)).is_dir()

    # export the interrupted run's params: transformers layout, the same numbers
    hf = tmp_path / "hf"
    assert main(["export", "--run", str(run), "--out", str(hf)]) == 0
    model, params = load_hf_checkpoint(hf)
    assert (model.n_layer, model.d_model, model.vocab_size) == (1, 32, 256)
    cfg = load_config(run / "config.yaml")
    want_model = cfg.model.resolve()
    abstract = step_lib.abstract_state(
        want_model, optim.make_optimizer(cfg.optim, want_model), make_mesh(-1, 1, 1)
    )
    with Checkpointer(run / "checkpoints", async_save=False) as ckpt:
        assert ckpt.latest_step() == last
        state, _, _ = ckpt.restore(abstract)
    trained = unstack_layers(jax.device_get(state["params"]))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # exact: fp32 both ways


def test_tiny_preset_on_real_code_through_the_commands(tmp_path: Path) -> None:
    """The README's tiny recipe, cut to 2 steps: data prepare with the CodeGen tokenizer at
    sequence 256, then the ``tiny`` preset (51200-row vocabulary) on it."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    data, run = tmp_path / "data", tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    prep = [sys.executable, "-m", "codegen_core", "data", "prepare", str(stdlib / "bisect.py"),
            str(stdlib / "colorsys.py"), str(stdlib / "heapq.py"), "--seq-len", "256",
            "--out", str(data), "--no-progress"]  # fmt: skip
    subprocess.run(prep, cwd=REPO, env=env, check=True, capture_output=True)
    cmd = [sys.executable, "-m", "codegen_core", "train", "--config", "tiny", f"data.dir={data}",
           f"data.heldout_dir={data}", f"run.dir={run}", "train.steps=2", "eval.batches=1",
           "--no-progress"]  # fmt: skip
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "trained to step 2" in out.stderr and "bits/byte" in out.stderr
    losses = [r["loss"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert len(losses) == 2 and all(8.0 < x < 12.0 for x in losses)  # ~ln(51200) = 10.8


def test_micro_batches_must_give_every_device_whole_rows(data: Path, tmp_path: Path) -> None:
    """8 simulated devices on the data axis: 8 rows in 4 micro-batches is 2 rows each."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}  # fmt: skip
    cmd = _train_cmd(data, tmp_path / "run", "train.global_batch_size=8", "train.micro_batches=4")
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert out.returncode == 1
    assert "train.micro_batches=4 leaves 2 rows per micro-batch" in out.stderr, out.stderr
    assert "data x fsdp = 8 batch shards" in out.stderr
