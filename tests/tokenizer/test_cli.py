"""`codegen-core tokenize`: the README's main job."""

from __future__ import annotations

import subprocess
import sys

from codegen_core import Tokenizer
from codegen_core.cli import main


def test_tokenize_default_runs_on_the_stdlib() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "codegen_core", "tokenize", "--no-progress"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert fields["tokenizer"].startswith("codegen")
    assert int(fields["files"].split()[0]) > 500
    assert int(fields["tokens"]) > 1_000_000
    assert 2.0 < float(fields["bytes/token"]) < 5.0


def test_tokenize_paths_and_presets(tmp_path, capsys) -> None:
    (tmp_path / "a.py").write_text("def f():\n    return '<mask_1><|endoftext|>'\n")
    (tmp_path / "b.py").write_bytes(b"\xff\xfe not utf-8")
    (tmp_path / "c.txt").write_text("ignored")
    assert main(["tokenize", str(tmp_path), "--no-progress", "--tokenizer", "codegen2"]) == 0
    captured = capsys.readouterr()
    assert "files          1 (1 skipped)" in captured.out
    expected = len(
        Tokenizer.codegen2().encode_ordinary("def f():\n    return '<mask_1><|endoftext|>'\n")
    )
    assert f"tokens         {expected}\n" in captured.out
    assert "b.py" in captured.err


def test_tokenize_errors_are_reported_not_raised(tmp_path, capsys) -> None:
    assert main(["tokenize", str(tmp_path / "missing")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    assert main(["tokenize", str(tmp_path), "--tokenizer", str(tmp_path / "nope.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
