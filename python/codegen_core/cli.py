"""The ``codegen-core`` command line: one subcommand per area."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any

# Areas that add subcommands; each module has register(subparsers). Imported lazily so one
# area's heavy dependencies never slow down another's command.
_AREAS = (
    "codegen_core.tokenizer.cli",
    "codegen_core.data.cli",
    "codegen_core.sampling.cli",
    "codegen_core.eval.cli",
    "codegen_core.train.cli",
    "codegen_core.model.init_cli",
    "codegen_core.quickstart.cli",
)
# Commands whose area is known up front: only that area is imported (``data dedup`` must not
# pay for importing jax, which another area's module imports: 1.5 CPU-s and ~150 MB RSS).
_COMMAND_AREAS = {"data": ("codegen_core.data.cli",)}


def _version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        return version("codegen-core")
    except PackageNotFoundError:  # running from a source tree that is not installed
        from codegen_core import __version__  # noqa: PLC0415

        return __version__


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: X)`` after each option's help, except for unset (None) and flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.nargs == 0:
            return action.help
        if action.help and "%(default)" in action.help:
            return action.help
        return super()._get_help_string(action)


class _DefaultsSubparsers(argparse._SubParsersAction):
    """Subcommands show their defaults in ``--help`` unless they chose their own formatter."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        parser = super().add_parser(name, **kwargs)
        parser.register("action", "parsers", _DefaultsSubparsers)
        return parser


def build_parser(areas: Sequence[str] = _AREAS) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="codegen-core",
        description="Build, train, sample and evaluate CodeGen-family code models.",
    )
    parser.register("action", "parsers", _DefaultsSubparsers)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in areas:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name is not None and name.startswith(e.name):
                continue  # the area is not part of this build
            raise
        module.register(subparsers)
    return parser


def _warnings_above_progress_bars() -> None:
    """Print warnings through ``tqdm.write``: above any progress bar, not through it (on a
    terminal, where bars are drawn; elsewhere warnings are left to their usual handler)."""
    if not sys.stderr.isatty():
        return
    try:
        from tqdm import tqdm  # noqa: PLC0415
    except ImportError:
        return

    def show(message: Any, category: type, filename: str, lineno: int, *_: Any) -> None:
        tqdm.write(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None and sys.argv[1:2] == ["data"]:  # a process of its own (not a test)
        # No BLAS in the data commands: OpenBLAS would start a thread per core at numpy's
        # import, which spin ~30 ms of CPU for nothing.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_COMMAND_AREAS.get(argv[0], _AREAS) if argv else _AREAS)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    shown = warnings.showwarning
    _warnings_above_progress_bars()
    try:
        return int(args.func(args) or 0)
    except SystemExit as e:  # a command's own "error: ..." exit
        if isinstance(e.code, str):
            print(f"codegen-core {args.command}: {e.code}", file=sys.stderr)
            return 1
        raise
    except KeyError as e:  # str(KeyError) quotes its message
        print(f"codegen-core {args.command}: error: {e.args[0] if e.args else e}", file=sys.stderr)
        return 1
    except (OSError, ValueError, TypeError, RuntimeError) as e:
        print(f"codegen-core {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
