"""The README cannot drift from the code: its ```python blocks run in order as one session in
an empty directory, interleaved with the ```sh blocks marked ``<!-- readme-test: run -->``;
``<!-- readme-test: help -->`` blocks are checked against ``--help`` (every option a line uses
exists; ``train`` lines' ``key=value`` overrides resolve with ``--print-config``); every other
``sh`` block must be marked ``manual`` and may not run ``codegen-core``."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_BLOCK = re.compile(
    r"(?:<!-- readme-test: (?P<mark>\w+)[^>]*-->\n)?```(?P<lang>[a-z]*)\n(?P<body>.*?)```",
    re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    lang: str
    mark: str | None
    body: str
    line: int


def blocks() -> list[Block]:
    text = README.read_text(encoding="utf-8")
    return [
        Block(m["lang"], m["mark"], m["body"], text.count("\n", 0, m.start("body")))
        for m in _BLOCK.finditer(text)
    ]


def _env() -> dict[str, str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _commands(block: Block) -> list[list[str]]:
    lines = block.body.replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.strip()]


def test_every_block_is_covered() -> None:
    found = blocks()
    assert sum(b.lang == "python" for b in found) >= 7
    for b in found:
        assert b.lang in ("python", "sh"), f"README line {b.line}: fence language {b.lang!r}"
        if b.lang == "sh":
            assert b.mark in ("run", "help", "manual"), f"README line {b.line}: unmarked sh block"
        if b.mark == "manual":
            assert "codegen-core" not in b.body, f"README line {b.line}: check it (help/run)"
    assert any(b.mark == "help" and b.body.strip() == "codegen-core quickstart" for b in found)


def test_python_and_runnable_shell_blocks(tmp_path: Path) -> None:
    parts = ["import subprocess as _sp\n"]
    for b in blocks():
        if b.lang == "python":
            parts.append(f"# README line {b.line}\n{b.body}")
        elif b.mark == "run":
            parts.append(f"_sp.run({b.body!r}, shell=True, check=True)  # README line {b.line}\n")
    script = tmp_path / "readme_session.py"
    script.write_text("\n".join(parts), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run([sys.executable, str(script)], cwd=work, env=_env(),
                         capture_output=True, text=True, check=False, timeout=900)  # fmt: skip
    assert out.returncode == 0, out.stderr[-4000:]


def _help_checks() -> list[tuple[int, list[str]]]:
    return [(b.line, cmd) for b in blocks() if b.mark == "help" for cmd in _commands(b)]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``codegen-core ARGV`` run in this process (cheap: the
    areas are imported once)."""
    from codegen_core.cli import main  # noqa: PLC0415

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = int(e.code or 0)
    return rc, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("line,cmd", _help_checks(), ids=lambda v: str(v)[:40])
def test_help_blocks_name_real_options(line: int, cmd: list[str]) -> None:
    assert cmd[0] == "codegen-core", f"README line {line}: {cmd}"
    words = []
    for token in cmd[1:]:
        if token.startswith("-") or "=" in token or not re.fullmatch(r"[a-z]+", token):
            break
        words.append(token)
    rc, text, err = _cli([*words, "--help"])
    assert rc == 0, f"README line {line}: {err}"
    for token in cmd[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in text, f"README line {line}: {token}"
    if words == ["train"]:
        config = cmd[cmd.index("--config") + 1] if "--config" in cmd else None
        overrides = [t for t in cmd[2:] if "=" in t and not t.startswith("-")]
        args = ["--config", config] if config else []  # --init-from would load the model
        rc, text, err = _cli(["train", *args, "--print-config", *overrides])
        assert rc == 0 and "model:" in text, f"README line {line}: {err}"
