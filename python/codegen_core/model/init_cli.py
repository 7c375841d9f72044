"""``codegen-core init --preset NAME --out DIR``: write a random model in transformers format.

The ``small-*`` presets have the real CodeGen vocabulary (51200 embedding rows) and a tiny
body, so the real tokenizers work with them: they are for trying the sampling and evaluation
commands end to end without downloading a checkpoint (their output is random text). The
paper presets (``codegen-350M`` ...) write an untrained model of the real shape; the
``tiny-*`` test presets have a 96-token vocabulary and do not work with the real tokenizers.

========================  ==========  =====================================================
preset                    parameters  works with (51200 rows: ``sample``, ``eval``)
========================  ==========  =====================================================
small-codegen             ~10.1M      CodeGen1 and CodeGen2 tokenizers (2 layers, d_model 96)
small-codegen-30M         ~29M        CodeGen1 and CodeGen2 tokenizers (4 layers, d_model 256)
========================  ==========  =====================================================
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from codegen_core.model.config import PRESETS, TINY_PRESETS, CodeGenConfig

__all__ = ["SMALL_PRESETS", "init_model", "register"]

_SMALL = CodeGenConfig(
    name="small-codegen", vocab_size=51200, n_layer=2, d_model=96, n_head=4, rotary_dim=8,
    n_ctx=2048, qkv_mp_num=4,
)  # fmt: skip

#: Small random models of the real vocabulary: name -> (config, tokenizer it pairs with).
SMALL_PRESETS: dict[str, tuple[CodeGenConfig, str]] = {
    "small-codegen": (_SMALL, "codegen"),
    "small-codegen-30M": (
        replace(_SMALL, name="small-codegen-30M", n_layer=4, d_model=256, n_head=8, rotary_dim=16),
        "codegen",
    ),
}


def _preset(name: str) -> tuple[CodeGenConfig, str]:
    if name in SMALL_PRESETS:
        return SMALL_PRESETS[name]
    if name in PRESETS:
        config = PRESETS[name]
        return config, "codegen2" if name.startswith(("codegen2", "codegen25")) else "codegen"
    if name in TINY_PRESETS:
        return TINY_PRESETS[name], ""
    known = ", ".join([*SMALL_PRESETS, *PRESETS, *TINY_PRESETS])
    raise ValueError(f"unknown preset {name!r}; known presets: {known}")


def init_model(preset: str, out: str | Path, *, seed: int = 0, force: bool = False) -> Path:
    """Write a random ``preset`` model (config.json + model.safetensors) to ``out``.

    The directory holds no tokenizer: ``sample``/``eval`` use the built-in CodeGen1 one
    (CodeGen2's with ``--infill`` / ``eval infill``). Raises ``FileExistsError`` when ``out``
    already holds a model and ``force`` is false.
    """
    config, _ = _preset(preset)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a directory")
    if (out / "config.json").exists() and not force:
        raise FileExistsError(f"--out {out} already holds a model (config.json); pass --force")
    out.mkdir(parents=True, exist_ok=True)
    import jax  # noqa: PLC0415 - heavy; only when a model is made

    from codegen_core.model import hf_io, transformer  # noqa: PLC0415

    params = transformer.init(config, jax.random.key(seed))
    hf_io.save_hf_checkpoint(out, params, config, qkv_mp_num=config.qkv_mp_num)
    return out


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``init`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "init",
        help="write a small random model (real vocabulary) to try sample/eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--preset",
        default="small-codegen",
        help="small-codegen, small-codegen-30M, or a paper preset (default: %(default)s)",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite a model already in --out")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    out = init_model(args.preset, args.out, seed=args.seed, force=args.force)
    config = json.loads((out / "config.json").read_text())
    print(f"wrote a random {args.preset} model ({config.get('vocab_size')} vocab) to {out}")
    print(f"try: codegen-core sample --model {out} --prompt 'def add(a, b):'", file=sys.stderr)
    return 0
