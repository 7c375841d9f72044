"""``codegen-core data prepare`` and ``codegen-core data dedup``.

The top-level CLI calls :func:`register` with its subparsers.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from codegen_core.data import sources
from codegen_core.data.filters import FilterConfig
from codegen_core.data.minhash import MinHashConfig
from codegen_core.data.pack import PackConfig
from codegen_core.data.prepare import PrepareConfig, dedup_report, prepare, scan

if TYPE_CHECKING:
    from codegen_core.data.ray_engine import RayOptions, RayResult


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``data prepare`` and ``data dedup`` to the top-level CLI."""
    data = subparsers.add_parser("data", help="prepare training data (filter, dedup, pack)")
    sub = data.add_subparsers(dest="data_command", required=True)

    p = sub.add_parser("prepare", help="filter -> exact dedup -> near dedup -> tokenize -> pack")
    _add_common(p)
    p.add_argument("--out", required=True, type=Path, help="output directory for the shards")
    p.add_argument("--tokenizer", default="codegen", help="codegen|codegen2|gpt2|tokenizer.json")
    p.add_argument("--seq-len", type=int, default=2048, help="tokens per packed sequence")
    p.add_argument("--min-tail", type=int, default=64, help="shorter split tails are dropped")
    p.add_argument("--sequences-per-shard", type=int, default=4096, help="sequences per file")
    p.add_argument("--language", default=None, help="language tag recorded in the manifest")
    p.add_argument("--overwrite", action="store_true", help="replace prepared data in --out")
    p.set_defaults(func=_run_prepare)

    d = sub.add_parser("dedup", help="exact + near dedup only; writes kept/removed lists")
    _add_common(d)
    d.add_argument("--out", required=True, type=Path, help="directory for kept.txt, removed.txt")
    d.set_defaults(func=_run_dedup)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="*",
        type=Path,
        help="directories, files or JSONL (default: this Python's standard library)",
    )
    p.add_argument(
        "--extensions",
        default=".py",
        help="comma-separated file extensions to keep ('' keeps all); JSONL is always read",
    )
    p.add_argument("--max-file-bytes", type=int, default=1 << 20, help="larger files are skipped")
    p.add_argument("--threshold", type=float, default=0.85, help="near-dup Jaccard threshold")
    p.add_argument("--num-perm", type=int, default=256, help="MinHash permutations")
    p.add_argument("--ngram", type=int, default=5, help="code tokens per MinHash shingle")
    p.add_argument(
        "--verify",
        choices=("exact", "signature", "none"),
        default="exact",
        help="how near-duplicate candidates are confirmed",
    )
    p.add_argument("--no-near-dedup", action="store_true", help="exact dedup only")
    p.add_argument("--threads", type=int, default=0, help="0: all cores")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process; ray: Ray tasks (pip install '.[ray]'), same output",
    )
    p.add_argument(
        "--address",
        default=None,
        help="--engine ray: the cluster to join ('auto', HOST:PORT); none starts a local Ray",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="--engine ray: CPUs of the local Ray (or partitions on a cluster); 0: all",
    )


def _check_numbers(args: argparse.Namespace) -> None:
    for name, low in (("threads", 0), ("num_perm", 1), ("ngram", 1), ("max_file_bytes", 1),
                      ("seq_len", 2), ("min_tail", 0), ("sequences_per_shard", 1),
                      ("num_workers", 0)):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None and value < low:
            what = "0 (all cores) or more" if name in ("threads", "num_workers") else f">= {low}"
            raise ValueError(f"--{name.replace('_', '-')} must be {what}, got {value}")
    if not 0.0 < args.threshold <= 1.0:
        raise ValueError(
            f"--threshold must be a Jaccard similarity in (0, 1], got {args.threshold}"
        )


def _check_inputs(inputs: list[Path], extensions: tuple[str, ...]) -> None:
    """Every input exists and can be read, and together they hold at least one document."""
    found = False
    for path in inputs:
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        try:
            if path.is_dir():
                for _root, _dirs, files in os.walk(path, onerror=_raise):
                    if any(_candidate(Path(f), extensions) for f in files):
                        found = True
                        break
            else:
                with path.open("rb"):
                    found = True
        except PermissionError as exc:
            raise PermissionError(
                f"input {path}: cannot be read ({exc.strerror}: {exc.filename})"
            ) from None
    if not found:
        kinds = ", ".join(extensions) if extensions else "any"
        raise ValueError(
            f"no input documents in {', '.join(map(str, inputs))} (files of extension {kinds} "
            f"or {'/'.join(sources.JSONL_SUFFIXES)}); nothing to do"
        )


def _raise(exc: OSError) -> None:
    raise exc


def _candidate(name: Path, extensions: tuple[str, ...]) -> bool:
    return not extensions or name.suffix in extensions or name.suffix in sources.JSONL_SUFFIXES


def _config(args: argparse.Namespace) -> tuple[list[Path], PrepareConfig]:
    _check_numbers(args)
    inputs = list(args.inputs)
    exclude = sources.DEFAULT_EXCLUDE
    if inputs:
        _check_inputs(inputs, tuple(e.strip() for e in args.extensions.split(",") if e.strip()))
    if not inputs:
        inputs = sources.default_inputs()
        exclude = (*exclude, "site-packages")
    exts = tuple(e.strip() for e in args.extensions.split(",") if e.strip())
    config = PrepareConfig(
        filters=FilterConfig(extensions=exts, max_file_bytes=args.max_file_bytes),
        minhash=MinHashConfig(
            num_perm=args.num_perm,
            ngram=args.ngram,
            threshold=args.threshold,
            verify=args.verify,
            num_threads=args.threads,
        ),
        near_dedup=not args.no_near_dedup,
        exclude_dirs=exclude,
    )
    if hasattr(args, "seq_len"):
        config = dataclasses.replace(
            config,
            pack=PackConfig(seq_len=args.seq_len, min_tail=args.min_tail),
            tokenizer=args.tokenizer,
            sequences_per_shard=args.sequences_per_shard,
            language=args.language,
        )
    return inputs, config


def _summary(report: dict, seconds: float) -> str:
    f = report["filters"]
    near = report["near_dedup"]
    lines = [
        f"documents seen        {f['seen']}",
        f"dropped by filters    {f['seen'] - f['kept']}  {json.dumps(f['dropped'])}",
        f"exact duplicates      {report['exact_dedup']['removed']}",
        f"near duplicates       {near.get('removed', 0)}  ({near.get('clusters', 0)} clusters)",
        f"documents kept        {report['documents_kept']}",
    ]
    mb = report["bytes_after_filters"] / 1e6
    if "tokens" in report:
        lines.append(f"tokens written        {report['tokens']['tokens_written']}")
        lines.append(f"sequences             {report['output']['num_sequences']}")
    lines.append(f"time                  {seconds:.1f} s ({mb / max(seconds, 1e-9):.1f} MB/s)")
    return "\n".join(lines)


def _ray_options(args: argparse.Namespace) -> RayOptions:
    try:
        from codegen_core.data.ray_engine import RayOptions  # noqa: PLC0415 (optional extra)
    except ImportError as e:
        raise ValueError(f"--engine ray needs the ray extra (pip install '.[ray]'): {e}") from None
    return RayOptions(address=args.address, num_workers=args.num_workers)


def _stage_lines(result: RayResult) -> str:
    rounds = result.timings.get("components_rounds")
    lines = [f"ray workers           {result.workers}"]
    lines += [
        f"  {name:<20}{seconds:.1f} s"
        for name, seconds in result.timings.items()
        if name != "components_rounds"
    ]
    if rounds is not None:
        lines.append(f"  components rounds   {int(rounds)}")
    return "\n".join(lines)


def _run_prepare(args: argparse.Namespace) -> int:
    result = None
    try:
        inputs, config = _config(args)
        start = time.perf_counter()
        if args.engine == "ray":
            options = _ray_options(args)
            from codegen_core.data import ray_engine  # noqa: PLC0415 (optional extra)

            result = ray_engine.prepare(
                inputs,
                args.out,
                config,
                options,
                overwrite=args.overwrite,
                progress=not args.no_progress,
            )
            report = result.report
        else:
            report = prepare(
                inputs, args.out, config, overwrite=args.overwrite, progress=not args.no_progress
            )
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_summary(report, time.perf_counter() - start))
    if result is not None:
        print(_stage_lines(result))
    print(f"wrote {args.out}/manifest.json and {args.out}/report.json")
    return _nothing_kept(report, args)


def _run_dedup(args: argparse.Namespace) -> int:
    if args.engine == "ray":
        return _run_dedup_ray(args)
    try:
        inputs, config = _config(args)
        start = time.perf_counter()
        # The scan makes a few objects per input file and frees none of them in cycles: the
        # collector would only re-walk them (~2% of the CPU of a stdlib-sized dedup).
        gc.disable()
        try:
            scanned = scan(inputs, config, progress=not args.no_progress)
        finally:
            gc.enable()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = dedup_report(scanned, config)
    if report["filters"]["seen"] == 0:
        print(f"error: no documents read from {_names(args)}; nothing to do", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    kept = [ref.name for ref, _ in scanned.kept_refs()]
    (out / "kept.txt").write_text("".join(f"{k}\n" for k in kept), encoding="utf-8")
    removed = [f"{r}\texact\t{k}" for r, k in scanned.exact_duplicates]
    if scanned.near is not None:
        roots = scanned.near.roots
        moved = np.flatnonzero(roots != np.arange(roots.size, dtype=roots.dtype))
        removed += [
            f"{scanned.refs[i].name}\tnear\t{scanned.refs[int(roots[i])].name}" for i in moved
        ]
    (out / "removed.txt").write_text("".join(f"{r}\n" for r in removed), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(_summary(report, time.perf_counter() - start))
    print(f"wrote {out}/kept.txt, {out}/removed.txt and {out}/report.json")
    return _nothing_kept(report, args)


def _run_dedup_ray(args: argparse.Namespace) -> int:
    """``data dedup --engine ray``: the same files as :func:`_run_dedup`."""
    try:
        inputs, config = _config(args)
        options = _ray_options(args)
        from codegen_core.data import ray_engine  # noqa: PLC0415 (optional extra)

        start = time.perf_counter()
        result = ray_engine.dedup(inputs, args.out, config, options, progress=not args.no_progress)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    report = result.report
    if report["filters"]["seen"] == 0:
        print(f"error: no documents read from {_names(args)}; nothing to do", file=sys.stderr)
        return 2
    print(_summary(report, time.perf_counter() - start))
    print(_stage_lines(result))
    print(f"wrote {args.out}/kept.txt, {args.out}/removed.txt and {args.out}/report.json")
    return _nothing_kept(report, args)


def _names(args: argparse.Namespace) -> str:
    return ", ".join(map(str, args.inputs)) or "the standard library"


def _nothing_kept(report: dict, args: argparse.Namespace) -> int:
    """Exit 2 (with the reason) when no document survived: the outputs hold nothing."""
    if report["documents_kept"]:
        return 0
    seen = report["filters"]["seen"]
    why = f"all {seen} documents were dropped" if seen else "no documents were read"
    print(f"error: {why} from {_names(args)}; the output holds nothing", file=sys.stderr)
    return 2
