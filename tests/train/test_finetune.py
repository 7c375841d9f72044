"""Fine-tune round trip: a transformers checkpoint in, a few training steps, exported back;
transformers' logits of the export equal our forward on the trained checkpoint within 1e-4."""

from __future__ import annotations

from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp

from codegen_core.model import transformer
from codegen_core.model.config import CodeGenConfig
from codegen_core.train.checkpoint import Checkpointer

from ..model.hf_models import make_hf_model, save_hf
from . import runs
from .procs import run_python

STEPS = 3


def _hf_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch  # noqa: PLC0415 - make_hf_model skipped the test if it is missing

    with torch.no_grad():
        return model(torch.from_numpy(tokens.astype(np.int64))).logits.float().numpy()


def test_import_train_export_load_with_transformers(tmp_path: Path) -> None:
    from transformers import CodeGenForCausalLM  # noqa: PLC0415 - after the skip in make_hf_model

    config = CodeGenConfig(**runs.MODEL, name="tiny-finetune")
    hf_init = make_hf_model(config, seed=0)
    init_dir = save_hf(hf_init, tmp_path / "init")
    data = runs.make_byte_shards(tmp_path / "data")
    run = tmp_path / "run"
    run_python(
        [
            *runs.train_args(data, run, f"train.steps={STEPS}", model=False),
            "--init-from",
            init_dir,
        ]
    )
    out = tmp_path / "export"
    run_python(["-m", "codegen_core.train", "export", "--run", run, "--out", out])

    # ours: the forward on the params of the run's last checkpoint, read straight from it
    with Checkpointer(run / "checkpoints") as ckpt:
        assert ckpt.latest_step() == STEPS
    state = ocp.StandardCheckpointer().restore(run / "checkpoints" / str(STEPS) / "state")
    assert int(state["step"]) == STEPS
    params = jax.tree.map(np.asarray, state["params"])

    rng = np.random.default_rng(0)
    tokens = rng.integers(1, runs.VOCAB, size=(2, runs.SEQ_LEN), dtype=np.int32)
    ours, _ = transformer.forward(
        transformer.unstack_layers(params), jax.numpy.asarray(tokens), config
    )
    ours = np.asarray(ours)

    hf_trained = CodeGenForCausalLM.from_pretrained(out).eval()
    theirs = _hf_logits(hf_trained, tokens)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4)

    # not vacuous: training moved the model away from the imported weights
    before = _hf_logits(hf_init, tokens)
    assert np.max(np.abs(before - theirs)) > 1e-2
