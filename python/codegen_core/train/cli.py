"""``codegen-core train`` and ``python -m codegen_core.train``.

codegen-core train --config tiny data.dir=DATA run.dir=RUN [key=value ...]
codegen-core train --config codegen-350M --init-from HF_DIR data.dir=DATA run.dir=RUN
codegen-core train export --run RUN --out HF_DIR [--step N]

``--config`` takes a preset name (``tiny``, ``codegen-350M``, ``codegen-2B``, ``codegen-6B``,
``codegen-16B``, ...) or a YAML/JSON file; ``key=value`` overrides any key by its dotted path.
Running again with the same ``run.dir`` resumes from its latest complete checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_NON_FINITE = 3


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a CodeGen model on prepared data (or: train export)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_args(p)
    p.set_defaults(func=run)
    return p


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="preset name or YAML/JSON file")
    p.add_argument("--init-from", default=None, help="checkpoint dir or Hub id to start from")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--print-config", action="store_true", help="print the resolved config, exit")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. train.steps=100")
    e = p.add_argument_group("train export --run RUN --out DIR (write a run as transformers)")
    e.add_argument("--run", type=Path, default=None, help="the run directory (run.dir)")
    e.add_argument("--out", type=Path, default=None, help="output directory")
    e.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    e.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")


def run(args: argparse.Namespace) -> int:
    if args.overrides and args.overrides[0] == "export":
        if args.run is None or args.out is None or len(args.overrides) > 1:
            raise ValueError("usage: codegen-core train export --run RUN --out DIR [--step N]")
        return run_export(args)
    if args.run is not None or args.out is not None:
        raise ValueError("--run/--out belong to `train export`; a run takes run.dir=DIR")
    from codegen_core.train.config import load_config  # noqa: PLC0415 - keeps --help fast
    from codegen_core.train.loop import train  # noqa: PLC0415

    extra = []
    if args.init_from is not None:
        extra.append(f"train.init_from={args.init_from}")
    if args.no_progress:
        extra.append("log.progress=false")
    cfg = load_config(args.config, [*args.overrides, *extra])
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    result = train(cfg)
    if result.status == "non-finite":
        print(f"codegen-core train: error: {result.message}", file=sys.stderr)
        return EXIT_NON_FINITE
    print(f"codegen-core train: {result.message}", file=sys.stderr)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from codegen_core.train.loop import export_run  # noqa: PLC0415

    out = export_run(args.run, args.out, step=args.step, dtype=args.dtype)
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m codegen_core.train``: the same as ``codegen-core train``."""
    from codegen_core.cli import main as top_main  # noqa: PLC0415

    return top_main(["train", *(sys.argv[1:] if argv is None else argv)])
