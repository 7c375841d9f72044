"""``codegen-core sample``: sample from a transformers-format checkpoint, streaming tokens.

codegen-core sample --model DIR --prompt "def fib(n):"
codegen-core sample --model Salesforce/codegen-350M-mono --prompt "def fib(n):"
codegen-core sample --model DIR --infill --prompt "def f(x):\\n    " --suffix "\\n    return y"

--model is a checkpoint directory or a Hugging Face Hub id (downloaded, or from the cache).
In --prompt and --suffix the two characters \\n stand for a newline and \\t for a tab
(a shell passes them literally); write \\\\n for a literal backslash-n.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``sample`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "sample",
        help="sample from a CodeGen / CodeGen2 / 2.5 checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, help="checkpoint directory or Hub id (owner/name)")
    p.add_argument(
        "--prompt", required=True, help="prompt text (the prefix with --infill); \\n = newline"
    )
    p.add_argument("--infill", action="store_true", help="CodeGen2 infill between prompt/suffix")
    p.add_argument("--suffix", default="", help="text after the hole (with --infill)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="default: %(default)s")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the default)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus mass (default: 1, off)")
    p.add_argument("--top-k", type=int, default=0, help="keep k best (default: 0, off)")
    p.add_argument("--seed", type=int, default=0, help="default: %(default)s")
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


def unescape(text: str) -> str:
    """``\\n`` -> newline, ``\\t`` -> tab, ``\\\\`` -> backslash; other text unchanged."""
    return re.sub(r"\\([nt\\])", lambda m: {"n": "\n", "t": "\t"}.get(m[1], "\\"), text)


def _check(args: argparse.Namespace) -> None:
    if args.mp_num is not None and args.mp_num < 1:
        raise ValueError(f"--mp-num must be a positive number of shards, got {args.mp_num}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.tokenizer is not None and not args.tokenizer.is_file():
        raise FileNotFoundError(f"--tokenizer {args.tokenizer} does not exist")


def run(args: argparse.Namespace) -> int:
    _check(args)
    from codegen_core.model.hub import resolve_model_dir  # noqa: PLC0415

    model_dir = resolve_model_dir(args.model)  # before JAX loads: a bad name fails at once
    # JAX loads only when the command runs, so other subcommands start fast
    import jax.numpy as jnp  # noqa: PLC0415

    from codegen_core.model.hf_io import load_hf_checkpoint  # noqa: PLC0415
    from codegen_core.sampling.generate import generate  # noqa: PLC0415
    from codegen_core.sampling.infill import infill  # noqa: PLC0415
    from codegen_core.sampling_params import SamplingParams  # noqa: PLC0415
    from codegen_core.tokenizer.core import Tokenizer  # noqa: PLC0415

    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    print(f"loading {model_dir} ...", file=sys.stderr)
    config, params = load_hf_checkpoint(model_dir, dtype=dtype, qkv_mp_num=args.mp_num)
    tokenizer = Tokenizer.for_checkpoint(
        model_dir, tokenizer_file=args.tokenizer, codegen2=args.infill or config.arch == "llama"
    )
    prompt, suffix = unescape(args.prompt), unescape(args.suffix)
    used = len(tokenizer.encode_ordinary(prompt + suffix)) + args.max_new_tokens
    if used > config.n_ctx:
        raise ValueError(
            f"--max-new-tokens {args.max_new_tokens} plus the prompt's tokens ({used - args.max_new_tokens}) "
            f"exceed the model's context of {config.n_ctx} tokens"
        )
    sampling = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature,
        top_p=args.top_p, top_k=args.top_k,
    )  # fmt: skip
    if args.infill:
        (middle,) = infill(params, config, tokenizer, prompt, suffix,
                           sampling=sampling, seed=args.seed)  # fmt: skip
        print(prompt + middle + suffix)
        return 0
    sys.stdout.write(prompt)
    generate(params, config, [prompt], sampling=sampling, seed=args.seed,
             tokenizer=tokenizer, stream=_Streamer(tokenizer))  # fmt: skip
    sys.stdout.write("\n")
    return 0
