"""End-to-end ``data prepare`` / ``data dedup``: bad input is reported and skipped, reruns are
byte-identical, the CLI works."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest

from codegen_core.data import cli
from codegen_core.data.filters import FilterConfig
from codegen_core.data.pack import PackConfig
from codegen_core.data.prepare import PrepareConfig, prepare
from codegen_core.data.shards import ShardReader
from codegen_core.tokenizer.core import Tokenizer

from ..conftest import shared_path


class ByteTokenizer:
    """A stand-in with the Tokenizer interface: one id per UTF-8 byte."""

    vocab_size = 50257
    eos_token_id = 50256

    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]:
        return [list(t.encode("utf-8")) for t in texts]


def _module(i: int) -> str:
    return "".join(f"def func_{i}_{k}(x):\n    return x * {k} + {i}\n\n" for k in range(30))


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "pkg" / "sub").mkdir(parents=True)
    for i in range(6):
        (root / "pkg" / f"mod{i}.py").write_text(_module(i))
    (root / "pkg" / "sub" / "copy.py").write_text(_module(0))  # exact duplicate
    (root / "pkg" / "sub" / "near.py").write_text(
        _module(1).replace("return x * 7", "return y * 7")
    )
    (root / "pkg" / "latin1.py").write_bytes(b"caf\xe9 = 1\n")
    (root / "pkg" / "empty.py").write_text("")
    (root / "pkg" / "blob.py").write_bytes(b"\x00\x01binary")
    (root / "pkg" / "huge.py").write_text("x = 1\n" * 5000)
    (root / "pkg" / "wide.py").write_text("x = 1\n" * 100 + "y = '" + "a" * 2000 + "'\n")
    (root / "pkg" / "notes.txt").write_text("not python")
    (root / "pkg" / "dangling.py").symlink_to(root / "missing.py")
    os.mkfifo(root / "pkg" / "pipe.py")  # reading it would block forever
    records = [
        json.dumps({"content": _module(10)}),
        "{not json",
        json.dumps({"other": 1}),
        json.dumps({"text": "bad \ud800 surrogate"}),
        json.dumps({"content": _module(10)}),  # duplicate of line 1
        json.dumps({"content": "x = 1\n" * 30_000}),  # a line too long to read whole
        json.dumps({"content": _module(11)}),  # and the line after it is still found
    ]
    (root / "data.jsonl").write_text("\n".join(records) + "\n")
    return root


CONFIG = PrepareConfig(
    filters=FilterConfig(max_file_bytes=20_000), sequences_per_shard=3, batch_documents=4
)


def test_prepare_reports_and_skips_bad_input(corpus: Path, tmp_path: Path) -> None:
    report = prepare([corpus], tmp_path / "out", CONFIG, tokenizer=ByteTokenizer(), progress=False)
    f = report["filters"]
    assert f["dropped"] == {
        "bad_json": 2,
        "binary": 1,
        "empty": 1,
        "extension": 1,
        "max_line_length": 1,
        "not_utf8": 2,
        "too_large": 2,
        "unreadable": 2,
    }
    assert report["exact_dedup"]["removed"] == 2
    assert report["near_dedup"]["removed"] == 1
    assert report["near_dedup"]["examples"][0]["removed"][0].endswith("near.py")
    assert report["documents_kept"] == 8  # mod0..5 + JSONL records 1 and 7
    reader = ShardReader(tmp_path / "out", verify=True)
    assert len(reader) == report["output"]["num_sequences"] == report["tokens"]["sequences"]
    tokens = np.concatenate(
        [reader[i]["tokens"][reader[i]["segment_ids"] > 0] for i in range(len(reader))]
    )
    assert tokens.size == report["tokens"]["tokens_written"]
    assert (tokens == 50256).sum() >= report["documents_kept"] - report["tokens"]["tails_dropped"]


def test_rerun_is_byte_identical(corpus: Path, tmp_path: Path) -> None:
    for name in ("a", "b"):
        prepare([corpus], tmp_path / name, CONFIG, tokenizer=ByteTokenizer(), progress=False)
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    with pytest.raises(ValueError, match="already holds"):
        prepare([corpus], tmp_path / "a", CONFIG, tokenizer=ByteTokenizer(), progress=False)
    prepare(
        [corpus], tmp_path / "a", CONFIG, tokenizer=ByteTokenizer(), overwrite=True, progress=False
    )


def test_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare([tmp_path / "nope"], tmp_path / "out", CONFIG, tokenizer=ByteTokenizer())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codegen-core")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_dedup(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["data", "dedup", str(corpus), "--out", str(tmp_path / "d"), "--no-progress"]
    args = _parser().parse_args([*argv, "--max-file-bytes", "20000"])
    assert args.func(args) == 0
    kept = (tmp_path / "d" / "kept.txt").read_text().splitlines()
    removed = (tmp_path / "d" / "removed.txt").read_text().splitlines()
    assert len(kept) == 8 and len(removed) == 3
    assert any(r.startswith(str(corpus / "pkg" / "sub" / "near.py") + "\tnear\t") for r in removed)
    assert "near duplicates       1" in capsys.readouterr().out
    bad = _parser().parse_args(
        ["data", "dedup", str(tmp_path / "nope"), "--out", str(tmp_path / "e")]
    )
    assert bad.func(bad) == 2


def test_cli_prepare_with_the_native_tokenizer(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    args = _parser().parse_args(
        ["data", "prepare", str(corpus), "--out", str(out), "--seq-len", "256", "--no-progress"]
    )
    assert args.func(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["tokenizer"]["eos_token_id"] == 50256 and manifest["num_sequences"] > 0


# Source files that hold control-token text, as code from ML repositories does.
SPECIAL_TEXT_FILES = {
    "eot.py": 'EOT = "<|endoftext|>"\n\n\ndef split(text):\n    return text.split(EOT)\n',
    "fim.py": 'PROMPT = "<mask_1><sep>"\nEND = "<eom>"\n\tTABS = "\t\t<fim_prefix>"\n',
    "both.py": "# <|endoftext|><mask_1><sep><mask_881><eom>\nx = 1" + " " * 40 + "# tail\n",
    "plain.py": "def f(x):\n    return x + 1\n",
}


@pytest.mark.parametrize("which", ["codegen1-file", "codegen2-preset"])
def test_file_text_never_becomes_a_control_token(which: str, tmp_path: Path) -> None:
    """Special-token text in files is encoded as text; the only control id in the shards is
    the EOS the packer appends after each document."""
    if which == "codegen1-file":
        tok = Tokenizer.from_file(shared_path("tokenizers", "codegen", "tokenizer.json"))
    else:
        tok = Tokenizer.codegen2()
    control = set(tok.special_tokens.values())
    assert tok.eos_token_id in control and (which == "codegen1-file") == (len(control) == 1)
    root = tmp_path / "repo"
    root.mkdir()
    for name, text in SPECIAL_TEXT_FILES.items():
        (root / name).write_text(text)
    config = PrepareConfig(near_dedup=False, pack=PackConfig(seq_len=16, min_tail=1))
    report = prepare([root], tmp_path / "out", config, tokenizer=tok, progress=False)
    assert report["documents_kept"] == len(SPECIAL_TEXT_FILES)
    assert report["tokens"]["tokens_dropped_short_tails"] == 0
    reader = ShardReader(tmp_path / "out", verify=True)
    tokens = np.concatenate(
        [reader[i]["tokens"][reader[i]["segment_ids"] > 0] for i in range(len(reader))]
    )
    assert set(np.unique(tokens).tolist()) & control == {tok.eos_token_id}
    # Each EOS ends one document, and what lies between them decodes to exactly the files.
    ends = np.flatnonzero(tokens == tok.eos_token_id)
    assert ends.size == len(SPECIAL_TEXT_FILES) and ends[-1] == tokens.size - 1
    docs = np.split(tokens, ends[:-1] + 1)
    assert sorted(tok.decode(d[:-1]) for d in docs) == sorted(SPECIAL_TEXT_FILES.values())
    # CodeGen's whitespace-run tokens are vocabulary, not control tokens: still used.
    assert {50257 + 31 - 4, 50257 + 31 - 31, 50287 + 9 - 2} <= set(tokens.tolist())
    # The same files encoded the HF way (special text -> control ids) would have put fake
    # document ends (and, with CodeGen2, FIM ids) into the data.
    hf_way = set().union(
        *tok.encode_batch(list(SPECIAL_TEXT_FILES.values()), allowed_special="all")
    )
    fake = {50256} if which == "codegen1-file" else {50256, 51199, 50317, 50318, 50319, 50295}
    assert hf_way & control == fake
