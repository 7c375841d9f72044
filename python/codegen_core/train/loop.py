"""The training loop: data checks, mesh, state, resume, steps, evaluation, checkpoints.

:func:`train` runs one configured run to ``train.steps`` and returns a :class:`TrainResult`.
Re-running with the same ``run.dir`` resumes from its latest complete checkpoint: the state,
the loader position (the number of global batches consumed, any process count) and so the
next batches are exactly those an uninterrupted run would have seen.

The data directory is checked before anything is compiled (:func:`check_data_dir`). Each
process reads only its slice of every global batch (``data.loader.BatchLoader``); global
batch ``i`` always trains step ``i + 1`` (also after a skipped non-finite step), so resume
needs no other bookkeeping. SIGINT/SIGTERM finish the current step, save a checkpoint and
return with ``status="interrupted"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from codegen_core.data.loader import BatchLoader, LoaderConfig
from codegen_core.data.shards import FORMAT, MANIFEST, ShardReader
from codegen_core.model import axes as ax
from codegen_core.model import transformer
from codegen_core.model.config import CodeGenConfig, get_preset
from codegen_core.train import distributed, metrics, optim
from codegen_core.train import step as step_lib
from codegen_core.train.checkpoint import Checkpointer
from codegen_core.train.config import Config, ConfigError, ModelSection


class DataError(ValueError):
    """A missing or incompatible data directory (the message names the file and field)."""


@dataclass
class TrainResult:
    status: str  # "done" | "interrupted" | "non-finite"
    step: int  # optimizer steps completed (the state's step)
    start_step: int  # the step the run started or resumed from
    losses: list[float] = field(default_factory=list)  # train loss of each step run here
    eval: dict[str, float] = field(default_factory=dict)  # the last held-out evaluation
    message: str = ""


# ---- data checks --------------------------------------------------------------------------
def check_data_dir(
    directory: str | Path | None, model: CodeGenConfig, seq_len: int | None, *, key: str
) -> dict[str, Any]:
    """The manifest of a ``data prepare`` directory, after checking that this model can
    train on it: format version, vocabulary <= model rows, sequence length."""
    if directory is None:
        raise DataError(f"{key} is not set: pass {key}=DIR (a `codegen-core data prepare` output)")
    path = Path(directory) / MANIFEST
    if not Path(directory).is_dir():
        raise DataError(f"{key}={directory}: no such directory")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise DataError(f"{key}: cannot read {path} ({e.strerror})") from e
    except ValueError as e:
        raise DataError(f"{key}: {path} is not valid JSON ({e})") from e
    if manifest.get("format") != FORMAT:
        raise DataError(
            f"{path}: field 'format' is {manifest.get('format')!r}; this trainer reads {FORMAT!r}"
        )
    vocab = (manifest.get("tokenizer") or {}).get("vocab_size")
    if not isinstance(vocab, int):
        raise DataError(f"{path}: field 'tokenizer.vocab_size' is missing or not an int")
    if vocab > model.vocab_size:
        raise DataError(
            f"{path}: field 'tokenizer.vocab_size' is {vocab}, larger than the model's "
            f"vocab_size {model.vocab_size} (model.vocab_size)"
        )
    data_len = manifest.get("seq_len")
    if not isinstance(data_len, int):
        raise DataError(f"{path}: field 'seq_len' is missing or not an int")
    if seq_len is not None and data_len != seq_len:
        raise DataError(
            f"{path}: field 'seq_len' is {data_len}, but the config wants data.seq_len={seq_len}"
            f" (prepare the data with --seq-len {seq_len}, or set data.seq_len={data_len})"
        )
    if data_len > model.n_ctx:
        raise DataError(
            f"{path}: field 'seq_len' is {data_len}, longer than the model's n_ctx {model.n_ctx}"
        )
    if not manifest.get("num_sequences"):
        raise DataError(f"{path}: field 'num_sequences' is 0: the directory holds no data")
    return manifest


def _token_bytes(manifest: dict[str, Any], vocab_size: int) -> np.ndarray | None:
    """Bytes of every token id under the data's tokenizer (None if it cannot be loaded)."""
    from codegen_core.data.prepare import load_tokenizer  # noqa: PLC0415 - C++ tokenizer

    name = (manifest.get("tokenizer") or {}).get("name")
    try:
        tok = load_tokenizer(str(name))
    except (ValueError, OSError, FileNotFoundError):
        return None
    table = np.zeros(vocab_size, np.int32)
    for i in range(min(tok.vocab_size, vocab_size)):
        table[i] = len(tok.decode_bytes([i]))  # type: ignore[attr-defined]
    return table


# ---- helpers ------------------------------------------------------------------------------
def _model_config(cfg: Config) -> tuple[Config, CodeGenConfig, Any]:
    """The model config (from the checkpoint's config.json with train.init_from) and a
    function loading the initial params (None: random), called only for a fresh run."""
    if cfg.train.init_from is None:
        return cfg, cfg.model.resolve(), None
    from codegen_core.model import hf_io  # noqa: PLC0415
    from codegen_core.model.hub import resolve_model_dir  # noqa: PLC0415

    init_dir = resolve_model_dir(cfg.train.init_from)  # a directory or a Hub id
    path = init_dir / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise FileNotFoundError(
            f"train.init_from: cannot read {path} (is it a transformers checkpoint?)"
        ) from e
    model = CodeGenConfig.from_hf_config(hf)
    base = get_preset(cfg.model.preset)
    fields = [f.name for f in dataclasses.fields(CodeGenConfig) if f.name != "name"]
    overrides = tuple(
        (f, getattr(model, f)) for f in fields if getattr(model, f) != getattr(base, f)
    )
    cfg = cfg.replace(model=ModelSection(preset=cfg.model.preset, overrides=overrides))

    def load() -> transformer.Params:
        _, params = hf_io.load_hf_checkpoint(init_dir)
        return params

    return cfg, model, load


def _loader_slice(mesh: Any, global_batch_size: int) -> tuple[int, int]:
    """(process_index, process_count) for LoaderConfig: this process's block of rows."""
    start, size = distributed.process_batch_slice(mesh, global_batch_size)
    return start // size, global_batch_size // size


class _StopFlag:
    """SIGINT/SIGTERM set a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:  # noqa: PYI034 - typing.Self needs 3.11
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread: no handlers
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def any_process(self) -> bool:
        """True if any process was signalled (collective with several processes)."""
        mine = self.signum is not None
        if jax.process_count() == 1:
            return mine
        from jax.experimental import multihost_utils  # noqa: PLC0415

        return bool(np.any(multihost_utils.process_allgather(np.array(mine))))


def _say(message: str) -> None:
    if jax.process_index() == 0:
        print(message, file=sys.stderr, flush=True)


# ---- the loop -----------------------------------------------------------------------------
def train(cfg: Config) -> TrainResult:
    """Run (or resume) the configured training run; see the module doc."""
    cfg, model, init_params = _model_config(cfg)
    manifest = check_data_dir(cfg.data.dir, model, cfg.data.seq_len, key="data.dir")
    seq_len = int(manifest["seq_len"])
    held_manifest = None
    if cfg.data.heldout_dir is not None:
        held_manifest = check_data_dir(cfg.data.heldout_dir, model, seq_len, key="data.heldout_dir")
    if cfg.run.dir is None:
        raise ConfigError("run.dir is not set: pass run.dir=DIR (outputs and checkpoints)")
    run_dir = Path(cfg.run.dir)

    distributed.initialize(
        coordinator=cfg.dist.coordinator,
        num_processes=cfg.dist.num_processes,
        process_id=cfg.dist.process_id,
    )
    mesh = distributed.make_mesh(cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor)
    proc_index, proc_count = _loader_slice(mesh, cfg.train.global_batch_size)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    rows = cfg.train.global_batch_size // cfg.train.micro_batches
    if rows % shards:
        raise ConfigError(
            f"train.micro_batches={cfg.train.micro_batches} leaves {rows} rows per micro-batch, "
            f"not a multiple of the mesh's data x fsdp = {shards} batch shards: lower "
            f"train.micro_batches (each device needs whole rows of every micro-batch)"
        )
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(cfg.to_yaml(), encoding="utf-8")

    optimizer = optim.make_optimizer(cfg.optim, model)
    schedule = optim.schedule(cfg.optim)
    opts = step_lib.StepOptions(
        compute_dtype=cfg.train.compute_dtype,
        remat=cfg.train.remat,
        z_loss=cfg.train.z_loss,
        micro_batches=cfg.train.micro_batches,
    )  # the attention kernel: model.attention_impl (the model config's own switch)
    loader = BatchLoader(
        ShardReader(cfg.data.dir),  # type: ignore[arg-type]
        LoaderConfig(
            global_batch_size=cfg.train.global_batch_size,
            seed=cfg.train.seed,
            process_index=proc_index,
            process_count=proc_count,
            num_epochs=None,
        ),
    )
    objective = _objective(cfg, model, loader)
    ckpt = Checkpointer(
        run_dir / "checkpoints", keep=cfg.checkpoint.keep, async_save=cfg.checkpoint.async_save
    )
    writer = metrics.MetricsWriter(run_dir, tensorboard=cfg.log.tensorboard)
    try:
        with ax.axis_rules(mesh), _StopFlag() as stop:
            return _run(
                cfg=cfg, model=model, init_params=init_params, mesh=mesh, optimizer=optimizer,
                schedule=schedule, opts=opts, loader=loader, ckpt=ckpt, writer=writer, stop=stop,
                held_manifest=held_manifest, seq_len=seq_len, objective=objective,
            )  # fmt: skip
    finally:
        ckpt.close()
        writer.close()
        if cfg.log.plot and jax.process_index() == 0 and (run_dir / "metrics.jsonl").exists():
            if importlib.util.find_spec("matplotlib") is None:
                _say("note: matplotlib is not installed; no loss.png written")
            else:
                metrics.plot_loss(run_dir)


def _run(
    *,
    cfg: Config,
    model: CodeGenConfig,
    init_params: Any,
    mesh: Any,
    optimizer: Any,
    schedule: Any,
    opts: step_lib.StepOptions,
    loader: BatchLoader,
    ckpt: Checkpointer,
    writer: metrics.MetricsWriter,
    stop: _StopFlag,
    held_manifest: dict[str, Any] | None,
    seq_len: int,
    objective: Any,
) -> TrainResult:
    latest = ckpt.latest_step()
    if latest is not None:
        abstract = step_lib.abstract_state(model, optimizer, mesh)
        state, loader_state, _ = ckpt.restore(abstract, step=latest)
        loader.restore(loader_state)
        _say(f"resumed from {ckpt.directory}/{latest} (step {int(state['step'])})")
    else:
        params = init_params() if init_params is not None else None
        state = step_lib.init_state(model, optimizer, mesh, seed=cfg.train.seed, params=params)
    start = int(state["step"])
    result = TrainResult(status="done", step=start, start_step=start)
    if loader.state()["next_batch"] != start:
        raise ValueError(
            f"checkpoint step {start} but its loader state is at batch "
            f"{loader.state()['next_batch']}"
        )
    train_fn = step_lib.compile_train_step(model, optimizer, schedule, opts, mesh)
    evaluate = _evaluator(cfg, model, opts, mesh, held_manifest)
    flops_tok = metrics.flops_per_token(model, seq_len)
    peak = metrics.total_peak_flops(cfg.log.peak_tflops)
    tokens_per_step = cfg.train.global_batch_size * seq_len

    bar = None
    if cfg.log.progress and jax.process_index() == 0:
        from tqdm import tqdm  # noqa: PLC0415

        bar = tqdm(total=cfg.train.steps, initial=start, desc="train", unit="step")
    batches: Iterator[dict[str, np.ndarray]] = iter(loader)
    last_saved = latest
    step = start
    try:
        if evaluate is not None and start == 0 and cfg.train.steps > 0:
            result.eval = evaluate(state["params"], 0, writer)
        while step < cfg.train.steps:
            t0 = time.perf_counter()
            local = next(batches)
            if objective is not None:
                local = objective(local, step)
            batch = distributed.global_batch(local, mesh)
            state, m = train_fn(state, batch)
            values = {k: float(v) for k, v in jax.device_get(m).items()}
            step += 1
            seconds = time.perf_counter() - t0
            finite = bool(values.pop("finite"))
            tps = tokens_per_step / seconds
            values.update(tokens_per_s=tps, mfu=tps * flops_tok / peak, step_s=seconds)
            writer.write(step, values)
            result.losses.append(values["loss"])
            result.step = step
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{values['loss']:.3f}", lr=f"{values['lr']:.2e}",
                                gnorm=f"{values['grad_norm']:.2f}", tok_s=f"{tps:.0f}",
                                mfu=f"{100 * values['mfu']:.1f}%")  # fmt: skip
            if not finite:
                where = f"step {step}: loss {values['loss']}, grad norm {values['grad_norm']}"
                if cfg.train.nan_policy == "stop":
                    kept = f"checkpoint step {last_saved}" if last_saved is not None else "none"
                    result.status = "non-finite"
                    result.message = (
                        f"non-finite {where}; stopped (train.nan_policy=stop) without saving; "
                        f"last good checkpoint: {kept}"
                    )
                    return result
                _say(f"skipped the update of non-finite {where} (train.nan_policy=skip)")
            done = step == cfg.train.steps
            if evaluate is not None and (done or (cfg.eval.every and step % cfg.eval.every == 0)):
                result.eval = evaluate(state["params"], step, writer)
            if stop.any_process():
                _save(ckpt, step, state, loader, cfg)
                name = signal.Signals(stop.signum).name if stop.signum else "a signal"
                result.status = "interrupted"
                result.message = f"{name} received: saved checkpoint step {step} and stopped"
                return result
            if done or step % cfg.checkpoint.every == 0:
                _save(ckpt, step, state, loader, cfg)
                last_saved = step
        if last_saved != step:  # resumed at or past the end: make sure the end is saved
            _save(ckpt, step, state, loader, cfg)
        result.message = f"trained to step {step}"
        return result
    finally:
        if bar is not None:
            bar.close()
        ckpt.wait()


def _save(ckpt: Checkpointer, step: int, state: Any, loader: BatchLoader, cfg: Config) -> None:
    ckpt.save(step, state, loader_state=loader.state(), config=cfg.to_dict())


def _objective(cfg: Config, model: CodeGenConfig, loader: BatchLoader) -> Any:
    """``f(local_batch, step) -> batch`` applying span corruption / prefix-LM, or None.
    Record r of the run is global record ``step * global_batch + process offset + i``, so
    which records are corrupted, and how, is the same on any process count and on resume."""
    o = cfg.objectives
    if o.span_corruption_ratio == 0 and not o.prefix_lm:
        return None
    from codegen_core.train import objectives  # noqa: PLC0415

    optional = {"mean_span_length": o.mean_span_length, "max_spans": o.max_spans,
                "noise_density": o.noise_density}  # fmt: skip
    ocfg = objectives.ObjectiveConfig(
        span_corruption_ratio=o.span_corruption_ratio,
        prefix_lm=o.prefix_lm,
        seed=o.seed,
        **{k: v for k, v in optional.items() if v is not None},
    )
    ids = objectives.SpecialIds.codegen2()
    ids.check_vocab(model.vocab_size)  # fails now, before compiling
    lc = loader.config

    def apply(batch: dict[str, np.ndarray], step: int) -> dict[str, np.ndarray]:
        first = step * lc.global_batch_size + lc.process_index * lc.local_batch_size
        return objectives.apply_objectives(batch, config=ocfg, first_record_index=first, ids=ids)

    return apply


def _evaluator(
    cfg: Config,
    model: CodeGenConfig,
    opts: step_lib.StepOptions,
    mesh: Any,
    manifest: dict[str, Any] | None,
) -> Any:
    """``f(params, step, writer) -> {"eval_loss", "eval_bpb"}`` over the held-out data."""
    if manifest is None:
        return None
    batch_size = cfg.eval.batch_size or cfg.train.global_batch_size
    proc_index, proc_count = _loader_slice(mesh, batch_size)
    reader = ShardReader(cfg.data.heldout_dir)  # type: ignore[arg-type]
    if len(reader) < batch_size:
        raise DataError(
            f"data.heldout_dir={cfg.data.heldout_dir} has {len(reader)} sequences, fewer than "
            f"one evaluation batch ({batch_size}; set eval.batch_size)"
        )
    loader = BatchLoader(reader, LoaderConfig(global_batch_size=batch_size, seed=0,
                                              process_index=proc_index, process_count=proc_count))  # fmt: skip
    n_batches = min(cfg.eval.batches, loader.num_batches or 0)
    table = _token_bytes(manifest, model.vocab_size)
    if table is None:
        _say(f"note: cannot load tokenizer {manifest.get('tokenizer')}: no bits per byte")
    table_arr = jax.numpy.asarray(
        table if table is not None else np.zeros(model.vocab_size, np.int32)
    )
    eval_fn = step_lib.compile_eval_step(model, opts, mesh)

    def evaluate(params: Any, step: int, writer: metrics.MetricsWriter) -> dict[str, float]:
        sums = {"ce": 0.0, "count": 0.0, "bytes": 0.0}
        for i in range(n_batches):
            batch = distributed.global_batch(loader.batch(i), mesh)
            out = jax.device_get(eval_fn(params, batch, table_arr))
            for k in sums:
                sums[k] += float(out[k])
        loss = sums["ce"] / max(sums["count"], 1.0)
        values = {"loss": loss, "tokens": sums["count"]}
        if table is not None and sums["bytes"] > 0:
            values["bpb"] = sums["ce"] / (math.log(2) * sums["bytes"])
        writer.write(step, values, prefix="eval_")
        _say(f"step {step}: held-out loss {loss:.4f}"
             + (f", {values['bpb']:.4f} bits/byte" if "bpb" in values else ""))  # fmt: skip
        return {f"eval_{k}": v for k, v in values.items()}

    return evaluate


# ---- export -------------------------------------------------------------------------------
def export_run(
    run_dir: str | Path, out_dir: str | Path, *, step: int | None = None, dtype: str = "float32"
) -> Path:
    """Write the params of a run's checkpoint (default: the latest) as a transformers
    checkpoint directory (``model.hf_io.save_hf_checkpoint``); returns ``out_dir``."""
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415
    from codegen_core.train.config import load_config  # noqa: PLC0415

    run = Path(run_dir)
    if not (run / "config.yaml").is_file():
        raise FileNotFoundError(f"{run}/config.yaml not found: is {run} a training run dir?")
    cfg = load_config(run / "config.yaml")
    model = cfg.model.resolve()
    mesh = distributed.make_mesh(-1, 1, 1)
    optimizer = optim.make_optimizer(cfg.optim, model)
    with Checkpointer(run / "checkpoints", keep=cfg.checkpoint.keep, async_save=False) as ckpt:
        state, _, _ = ckpt.restore(step_lib.abstract_state(model, optimizer, mesh), step=step)
    params = transformer.unstack_layers(jax.device_get(state["params"]))
    return save_hf_checkpoint(out_dir, params, model, dtype=np.dtype(dtype) if dtype != "bfloat16"
                              else jax.numpy.bfloat16)  # fmt: skip
