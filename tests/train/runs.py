"""Tiny end-to-end training runs for the resume / distribution / fine-tune tests.

The data is packed shards of the bytes of a few standard-library files (vocabulary 256,
sequence 32, written with the real ``Packer``/``ShardWriter``), so that a one-layer model of
width 32 trains a step in milliseconds and a whole run is dominated by start-up and
compilation. Runs go through the command line (``python -m codegen_core.train``) in a
child process, as a user runs them.
"""

from __future__ import annotations

import json
import sysconfig
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from codegen_core.data.pack import PackConfig, Packer
from codegen_core.data.shards import ShardWriter

SEQ_LEN = 32
VOCAB = 256
EOS = 0  # the byte 0 does not occur in source text

# the model shared by every end-to-end test (as CodeGenConfig fields)
MODEL = {
    "vocab_size": VOCAB,
    "n_layer": 1,
    "d_model": 32,
    "n_head": 4,
    "rotary_dim": 4,
    "n_ctx": SEQ_LEN,
    "eos_token_id": EOS,
    "bos_token_id": EOS,
}
# everything else about the runs
RUN = (
    f"data.seq_len={SEQ_LEN}",
    "train.global_batch_size=8",
    "optim.lr=0.01",
    "optim.warmup_steps=2",
    "optim.decay_steps=20",
    "eval.every=0",
    "log.tensorboard=false",
    "log.plot=false",
)
TINY = (*(f"model.{k}={v}" for k, v in MODEL.items()), *RUN)

STDLIB_FILES = ("bisect.py", "colorsys.py", "keyword.py", "heapq.py", "fnmatch.py", "this.py")


def make_byte_shards(out_dir: Path, *, sequences_per_shard: int = 64) -> Path:
    """Shards of the bytes of a few stdlib files (a manifest like ``data prepare``'s)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    packer = Packer(PackConfig(seq_len=SEQ_LEN, min_tail=8, eos_id=EOS, pad_id=EOS))
    writer = ShardWriter(
        out_dir, seq_len=SEQ_LEN, vocab_size=VOCAB, sequences_per_shard=sequences_per_shard
    )
    for name in STDLIB_FILES:
        data = np.frombuffer((root / name).read_bytes(), dtype=np.uint8).astype(np.int32)
        writer.add(packer.add(data))
    writer.add(packer.finish())
    writer.close({"tokenizer": {"name": "bytes", "vocab_size": VOCAB, "eos_token_id": EOS}})
    return out_dir


def train_args(data: Path, run: Path, *overrides: str, model: bool = True) -> list[str]:
    """Arguments after ``python`` for a tiny run of ``data`` into ``run`` (without the
    ``model.*`` keys when ``model`` is False, e.g. with ``--init-from``)."""
    return [
        "-m",
        "codegen_core.train",
        "--no-progress",
        f"data.dir={data}",
        f"run.dir={run}",
        *(TINY if model else RUN),
        *overrides,
    ]


def dist_overrides(coordinator: str, num_processes: int, process_id: int) -> list[str]:
    return [
        f"dist.coordinator={coordinator}",
        f"dist.num_processes={num_processes}",
        f"dist.process_id={process_id}",
    ]


def losses(run: Path) -> dict[int, float]:
    """step -> loss from ``<run>/metrics.jsonl`` (a later line for a step wins: resumes)."""
    out: dict[int, float] = {}
    path = run / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            if "loss" in rec and "step" in rec:
                out[int(rec["step"])] = float(rec["loss"])
    return out


def loss_array(run: Path, steps: Sequence[int]) -> np.ndarray:
    got = losses(run)
    missing = [s for s in steps if s not in got]
    if missing:
        raise AssertionError(f"{run}/metrics.jsonl has no loss for steps {missing}")
    return np.array([got[s] for s in steps])
