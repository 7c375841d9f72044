"""``codegen-core sample``: sample from a transformers-format checkpoint, streaming tokens.

codegen-core sample --model DIR --prompt "def fib(n):"
codegen-core sample --model DIR --infill --prompt "def f(x):\\n    " --suffix "\\n    return y"
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sample`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("sample", help="sample from a CodeGen / CodeGen2 / 2.5 checkpoint")
    p.add_argument("--model", required=True, type=Path, help="transformers checkpoint directory")
    p.add_argument("--prompt", required=True, help="prompt text (the prefix with --infill)")
    p.add_argument("--infill", action="store_true", help="CodeGen2 infill between prompt/suffix")
    p.add_argument("--suffix", default="", help="text after the hole (with --infill)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--mp-num", type=int, default=None, help="CodeGen qkv layout (4 or 8)")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer.json (default: DIR's)")
    p.set_defaults(func=run)
    return p


class _Streamer:
    """Prints the text of a growing id list as it grows (handles split UTF-8 sequences)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer, self.ids, self.shown = tokenizer, [], ""

    def __call__(self, step: Any, tokens: np.ndarray) -> None:
        tok = int(np.asarray(tokens)[0])
        if tok < 0:
            return
        self.ids.append(tok)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):  # an unfinished multi-byte character
            return
        sys.stdout.write(text[len(self.shown) :])
        sys.stdout.flush()
        self.shown = text


def run(args: argparse.Namespace) -> int:
    # JAX loads only when the command runs, so other subcommands start fast
    import jax.numpy as jnp  # noqa: PLC0415

    from codegen_core.model.hf_io import load_hf_checkpoint  # noqa: PLC0415
    from codegen_core.sampling.generate import generate  # noqa: PLC0415
    from codegen_core.sampling.infill import infill  # noqa: PLC0415
    from codegen_core.sampling_params import SamplingParams  # noqa: PLC0415
    from codegen_core.tokenizer.core import Tokenizer  # noqa: PLC0415

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    print(f"loading {args.model} ...", file=sys.stderr)
    config, params = load_hf_checkpoint(args.model, dtype=dtype, qkv_mp_num=args.mp_num)
    tokenizer = Tokenizer.for_checkpoint(
        args.model, tokenizer_file=args.tokenizer, codegen2=args.infill or config.arch == "llama"
    )
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k,
    )  # fmt: skip
    if args.infill:
        (middle,) = infill(params, config, tokenizer, args.prompt, args.suffix,
                           sampling=sampling, seed=args.seed)  # fmt: skip
        print(args.prompt + middle + args.suffix)
        return 0
    sys.stdout.write(args.prompt)
    generate(params, config, [args.prompt], sampling=sampling, seed=args.seed,
             tokenizer=tokenizer, stream=_Streamer(tokenizer))  # fmt: skip
    sys.stdout.write("\n")
    return 0
