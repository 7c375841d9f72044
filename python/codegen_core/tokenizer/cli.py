"""``codegen-core tokenize``: tokenize a code corpus and report throughput.

With no arguments it tokenizes every ``.py`` file of the Python standard library found on
this machine with the CodeGen tokenizer.
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from codegen_core.tokenizer.core import Tokenizer

PRESETS = ("codegen", "codegen2", "gpt2")


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def iter_source_files(paths: list[Path], suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Files under ``paths`` (sorted, deterministic), skipping installed packages."""
    for root in paths:
        if root.is_file():
            yield root
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such file or directory")
        for path in sorted(root.rglob("*")):
            if path.suffix in suffixes and path.is_file():
                rel = path.relative_to(root).parts
                if "site-packages" not in rel and "dist-packages" not in rel:
                    yield path


def load_tokenizer(name: str, gpt2_dir: str | None = None) -> Tokenizer:
    if name in PRESETS:
        return getattr(Tokenizer, name)(gpt2_dir)
    return Tokenizer.from_file(name)


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "tokenize",
        help="tokenize source files and report tokens and throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or directories (default: stdlib)")
    p.add_argument(
        "--tokenizer",
        default="codegen",
        help=f"one of {', '.join(PRESETS)} or a tokenizer.json path (default: codegen)",
    )
    p.add_argument("--gpt2-dir", default=None, help="directory with GPT-2's vocab.json/merges.txt")
    p.add_argument("--suffix", action="append", default=None, help="file suffix (default: .py)")
    p.add_argument("--threads", type=int, default=0, help="native threads (0 = all cores)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    tok = load_tokenizer(args.tokenizer, args.gpt2_dir)
    paths = args.paths or [stdlib_dir()]
    files = list(iter_source_files(paths, tuple(args.suffix or [".py"])))
    if not files:
        print(f"no source files found under {', '.join(map(str, paths))}", file=sys.stderr)
        return 1
    n_files = n_bytes = n_tokens = skipped = 0
    seconds = 0.0
    batch: list[str] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal n_tokens, seconds, batch_bytes
        start = time.perf_counter()
        # files are text: special-token strings in them are encoded as text
        ids, _ = tok.encode_batch_flat(batch, disallowed_special=(), num_threads=args.threads)
        seconds += time.perf_counter() - start
        n_tokens += len(ids)
        bar.update(batch_bytes)
        batch.clear()
        batch_bytes = 0

    total = sum(f.stat().st_size for f in files)
    with tqdm(
        total=total, unit="B", unit_scale=True, disable=args.no_progress, desc="tokenize"
    ) as bar:
        for path in files:
            try:
                text = path.read_bytes().decode("utf-8")
            except (OSError, UnicodeDecodeError) as e:
                skipped += 1
                print(f"skipped {path}: {e}", file=sys.stderr)
                continue
            n_files += 1
            size = len(text.encode("utf-8"))
            n_bytes += size
            batch.append(text)
            batch_bytes += size
            if batch_bytes >= 4 << 20:
                flush()
        if batch:
            flush()
    threads = args.threads or os.cpu_count() or 1
    print(f"tokenizer      {tok.name} ({tok.vocab_size} ids)")
    print(f"files          {n_files}" + (f" ({skipped} skipped)" if skipped else ""))
    print(f"bytes          {n_bytes}")
    print(f"tokens         {n_tokens}")
    print(f"bytes/token    {n_bytes / max(n_tokens, 1):.3f}")
    print(
        f"MB/s           {n_bytes / 1e6 / max(seconds, 1e-9):.1f} (encode only, {threads} threads)"
    )
    return 0
