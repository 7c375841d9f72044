"""The training loop in-process: data checks, outputs, resume, evaluation, NaN policy."""

from __future__ import annotations

import json
import math
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from codegen_core.data.pack import PackConfig, Packer
from codegen_core.data.prepare import PrepareConfig, load_tokenizer, prepare
from codegen_core.data.shards import ShardReader, ShardWriter
from codegen_core.train.config import Config, load_config
from codegen_core.train.loop import DataError, check_data_dir, train
from codegen_core.train.metrics import read_metrics

SEQ = 32
STDLIB = Path(sysconfig.get_paths()["stdlib"])

# a one-layer byte-level model: steps take milliseconds, a run is start-up and compilation
TINY = [
    "model.vocab_size=256",
    "model.n_layer=1",
    "model.d_model=32",
    "model.n_head=4",
    "model.rotary_dim=4",
    f"model.n_ctx={SEQ}",
    "model.eos_token_id=0",
    "model.bos_token_id=0",
    f"data.seq_len={SEQ}",
    "train.global_batch_size=4",
    "optim.lr=1e-2",
    "optim.warmup_steps=2",
    "optim.decay_steps=20",
    "log.progress=false",
    "log.peak_tflops=1.0",  # no matmul probe
]


def byte_shards(out: Path, files: tuple[str, ...] = ("bisect.py", "colorsys.py")) -> Path:
    """Shards of the bytes of a few stdlib files, with a manifest like ``data prepare``'s."""
    packer = Packer(PackConfig(seq_len=SEQ, min_tail=8, eos_id=0, pad_id=0))
    writer = ShardWriter(out, seq_len=SEQ, vocab_size=256, sequences_per_shard=64)
    for name in files:
        data = np.frombuffer((STDLIB / name).read_bytes(), np.uint8).astype(np.int32)
        writer.add(packer.add(data))
    writer.add(packer.finish())
    writer.close({"tokenizer": {"name": "bytes", "vocab_size": 256, "eos_token_id": 0}})
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return byte_shards(tmp_path_factory.mktemp("bytes"))


def _cfg(data: Path, run: Path, *extra: str) -> Config:
    return load_config(None, [*TINY, f"data.dir={data}", f"run.dir={run}", *extra])


# ---- bad data directories ------------------------------------------------------------------
def test_data_dir_errors_name_the_file_and_field(data: Path, tmp_path: Path) -> None:
    model = _cfg(data, tmp_path).model.resolve()
    with pytest.raises(DataError, match=r"data\.dir is not set"):
        check_data_dir(None, model, SEQ, key="data.dir")
    with pytest.raises(DataError, match="no such directory"):
        check_data_dir(tmp_path / "absent", model, SEQ, key="data.dir")
    with pytest.raises(DataError, match=r"cannot read .*manifest\.json"):
        check_data_dir(tmp_path, model, SEQ, key="data.dir")
    manifest = json.loads((data / "manifest.json").read_text())

    def bad(change: dict, match: str, seq_len: int | None = SEQ, vocab: int = 256) -> None:
        d = tmp_path / f"bad{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(DataError, match=match) as err:
            check_data_dir(d, model.replace(vocab_size=vocab), seq_len, key="data.dir")
        assert str(d / "manifest.json") in str(err.value)

    bad({"format": "codegen-core-packed-v9"}, "field 'format' is 'codegen-core-packed-v9'")
    bad({}, "field 'tokenizer.vocab_size' is 256, larger than the model's vocab_size 200",
        vocab=200)  # fmt: skip
    bad({}, "field 'seq_len' is 32, but the config wants data.seq_len=64", seq_len=64)
    bad({"seq_len": 64}, "field 'seq_len' is 64, longer than the model's n_ctx 32", seq_len=None)
    bad({"tokenizer": {"name": "x"}}, "'tokenizer.vocab_size' is missing")


def test_bad_data_fails_before_compiling(data: Path, tmp_path: Path) -> None:
    cfg = _cfg(data, tmp_path / "run", "model.vocab_size=128")
    with pytest.raises(DataError, match="larger than the model's vocab_size 128"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # nothing written, nothing compiled


# ---- a run, its outputs and its resume --------------------------------------------------------
def test_run_writes_its_outputs_and_resumes(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    extra = [f"data.heldout_dir={data}", "eval.every=2", "eval.batches=2", "checkpoint.every=2"]
    first = train(_cfg(data, run, "train.steps=3", *extra))
    assert (first.status, first.step, first.start_step) == ("done", 3, 0)
    assert load_config(run / "config.yaml") == _cfg(data, run, "train.steps=3", *extra)
    records = read_metrics(run / "metrics.jsonl")
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for r in steps:
        assert {"loss", "lr", "grad_norm", "tokens_per_s", "mfu", "tokens"} <= set(r)
        assert math.isfinite(r["loss"]) and r["tokens_per_s"] > 0
    assert [r["step"] for r in records if "eval_loss" in r] == [0, 2, 3]
    assert (run / "loss.png").stat().st_size > 0
    assert list((run / "tensorboard").iterdir())
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "3"]

    again = train(_cfg(data, run, "train.steps=5", *extra))
    assert (again.status, again.start_step, again.step) == ("done", 3, 5)
    assert len(again.losses) == 2
    steps = [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3, 4, 5]


def test_nan_policy_stop_keeps_the_last_good_checkpoint(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    # lr 1e30 blows the weights up at the first update: step 2's loss is not finite
    result = train(_cfg(data, run, "train.steps=4", "optim.lr=1e30", "optim.warmup_steps=0",
                        "checkpoint.every=1"))  # fmt: skip
    assert result.status == "non-finite"
    assert "train.nan_policy=stop" in result.message and "checkpoint step 1" in result.message
    assert result.step == 2
    steps = sorted(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    assert steps == [1]


def test_nan_policy_skip_goes_on_without_applying_the_update(data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = train(_cfg(data, run, "train.steps=3", "optim.lr=1e30", "optim.warmup_steps=0",
                        "train.nan_policy=skip"))  # fmt: skip
    assert (result.status, result.step) == ("done", 3)
    assert math.isfinite(result.losses[0]) and not math.isfinite(result.losses[-1])


# ---- held-out bits per byte with the real tokenizer -------------------------------------------
def test_heldout_bits_per_byte_with_the_codegen_tokenizer(tmp_path: Path) -> None:
    held = tmp_path / "held"
    prepare([STDLIB / "colorsys.py", STDLIB / "bisect.py"], held,
            PrepareConfig(pack=PackConfig(seq_len=SEQ, min_tail=8)), progress=False)  # fmt: skip
    reader = ShardReader(held)
    tok = load_tokenizer("codegen")
    want_bytes = want_count = 0
    for i in range(len(reader)):
        r = reader[i]
        seg, tokens = r["segment_ids"], r["tokens"]
        counted = (seg[1:] == seg[:-1]) & (seg[:-1] != 0)
        want_count += int(counted.sum())
        want_bytes += sum(len(tok.decode_bytes([int(t)])) for t in tokens[1:][counted])
    model = [o for o in TINY if not o.startswith(("model.vocab_size", "model.eos", "model.bos"))]
    cfg = load_config(None, [*model, f"data.dir={held}", f"data.heldout_dir={held}",
                             f"run.dir={tmp_path / 'run'}", "train.steps=1", "eval.batch_size=1",
                             f"eval.batches={len(reader)}"])  # fmt: skip
    result = train(cfg)
    ev = result.eval
    assert ev["eval_tokens"] == want_count
    np.testing.assert_allclose(
        ev["eval_bpb"], ev["eval_loss"] * want_count / (math.log(2) * want_bytes), rtol=1e-6
    )


def test_span_corruption_and_prefix_lm_train(data: Path, tmp_path: Path) -> None:
    # CodeGen2 sentinels need a 51200-row vocabulary
    cfg = _cfg(data, tmp_path / "run", "model.vocab_size=51200", "train.steps=2",
               "objectives.span_corruption_ratio=1.0", "objectives.prefix_lm=true")  # fmt: skip
    result = train(cfg)
    assert result.status == "done" and all(math.isfinite(x) for x in result.losses)
    plain = read_metrics(tmp_path / "run" / "metrics.jsonl")
    with pytest.raises(ValueError, match="vocab_size is 256"):
        train(_cfg(data, tmp_path / "run2", "objectives.span_corruption_ratio=0.5"))
    # only the targets after <sep> count: far fewer than the ~4 x 31 of causal LM
    assert all(r["tokens"] < 4 * (SEQ - 1) / 2 for r in plain)


def test_heldout_loss_falls_well_below_the_unigram_entropy(tmp_path: Path) -> None:
    """The issue's acceptance in CI size: real code (stdlib bytes), held-out files unseen in
    training. The full-size measurement (CodeGen tokenizer, ``tiny`` preset) is reported
    by hand; this one takes seconds."""
    train_files = ("bisect.py", "colorsys.py", "heapq.py", "keyword.py", "fnmatch.py",
                   "shlex.py", "textwrap.py")  # fmt: skip
    data = byte_shards(tmp_path / "train", train_files)
    held = byte_shards(tmp_path / "held", ("this.py", "stat.py", "glob.py"))
    reader, counts = ShardReader(held), np.zeros(256)
    for i in range(len(reader)):
        r = reader[i]
        seg = r["segment_ids"]
        counted = (seg[1:] == seg[:-1]) & (seg[:-1] != 0)
        np.add.at(counts, r["tokens"][1:][counted], 1)
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * np.log(p)).sum())  # about 3.38 nats per byte
    cfg = load_config(None, [*TINY, f"data.dir={data}", f"data.heldout_dir={held}",
                             f"run.dir={tmp_path / 'run'}", "train.steps=150", "model.n_layer=2",
                             "model.d_model=64", "train.global_batch_size=16",
                             "optim.warmup_steps=10", "optim.decay_steps=150", "eval.batch_size=8",
                             f"eval.batches={len(reader) // 8}", "log.plot=false",
                             "log.tensorboard=false"])  # fmt: skip
    result = train(cfg)
    # measured: 5.72 at step 0, 2.97 after 150 steps (0.88 x the unigram entropy)
    assert result.eval["eval_loss"] < 0.93 * unigram, (result.eval, unigram)
