"""Prompts from text, and CodeGen2's infill (fill-in-the-middle) format.

Text given to the sampling functions is *text*: special-token strings in it
(``<|endoftext|>``, ``<mask_1>``, ...) are encoded as ordinary text
(:meth:`codegen_core.tokenizer.core.Tokenizer.encode_ordinary`), never as control tokens. A
prompt that needs control tokens is built from ids, as :func:`infill_prompt` does.

CodeGen2 / 2.5 infill: ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``; the model
writes the middle and ends it with ``<eom>``.
"""

from __future__ import annotations

from typing import Any

MASK = "<mask_1>"
SEP = "<sep>"
EOM = "<eom>"
EOS = "<|endoftext|>"
#: The control tokens of the infill prompt, in the order they follow the prefix.
INFILL_CONTROL_TOKENS: tuple[str, ...] = (MASK, EOS, SEP)


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """Ids of ``text`` as text: ``encode_ordinary`` (codegen_core ``Tokenizer``) when the
    tokenizer has it; otherwise its own ``encode`` (a list of ids, or an object with ``ids``
    such as a HF ``tokenizers.Encoding``)."""
    ordinary = getattr(tokenizer, "encode_ordinary", None)
    enc = ordinary(text) if ordinary is not None else tokenizer.encode(text)
    return list(enc.ids) if hasattr(enc, "ids") else list(enc)


def special_id(tokenizer: Any, token: str) -> int:
    """The id of a control token, or ValueError saying the tokenizer lacks it."""
    tid = tokenizer.token_to_id(token)
    if tid is None:
        raise ValueError(f"tokenizer has no {token!r} token: infill needs a CodeGen2 tokenizer")
    return int(tid)


def infill_prompt_text(prefix: str, suffix: str) -> str:
    """The infill prompt as text, for samplers that take text prompts (the evaluation's
    :class:`~codegen_core.eval.sampler.Sampler`); a sampler encodes exactly the
    :data:`INFILL_CONTROL_TOKENS` in it as control tokens. :func:`infill_prompt` gives the
    ids directly."""
    return prefix + MASK + suffix + EOS + SEP + MASK


def infill_prompt(tokenizer: Any, prefix: str, suffix: str) -> list[int]:
    """Token ids of ``prefix <mask_1> suffix <|endoftext|> <sep> <mask_1>``.

    The control tokens are inserted by id and the texts encoded as text, so a prefix or
    suffix that contains ``<mask_1>`` or ``<sep>`` cannot change the prompt's structure.
    """
    mask = special_id(tokenizer, MASK)
    return [
        *encode_text(tokenizer, prefix), mask, *encode_text(tokenizer, suffix),
        special_id(tokenizer, EOS), special_id(tokenizer, SEP), mask,
    ]  # fmt: skip
