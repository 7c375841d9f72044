"""The ``codegen-core`` command line: one subcommand per area."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Areas that add subcommands; each module has register(subparsers). Imported lazily so one
# area's heavy dependencies never slow down another's command.
_AREAS = (
    "codegen_core.tokenizer.cli",
    "codegen_core.data.cli",
    "codegen_core.sampling.cli",
    "codegen_core.eval.cli",
    "codegen_core.train.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codegen-core",
        description="Build, train, sample and evaluate CodeGen-family code models.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _AREAS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # the area is not part of this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"codegen-core {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
