"""CodeGen's stop-pattern truncation."""

from __future__ import annotations

import pytest

from codegen_core import truncate_before_pattern

CASES = [
    ("    return a + b\n\n\n\ndef next():\n", "    return a + b"),
    ("    x = 1\n# comment\n    y = 2", "    x = 1\n"),
    ("print(1)\nprint(2)\n", "print(1)\n"),
    ("def f():\n    pass\ndef g():\n    pass", "def f():\n    pass\n"),
    ("    return 1<|endoftext|>junk", "    return 1"),
    ('    s = 1\n"""doc', "    s = 1\n"),
    ("    s = 1\n'''doc", "    s = 1\n"),
    ("nothing to cut", "nothing to cut"),
    ("", ""),
]


@pytest.mark.parametrize(("completion", "expected"), CASES)
def test_truncation(completion: str, expected: str) -> None:
    assert truncate_before_pattern(completion) == expected


def test_matches_transformers_codegen_tokenizer() -> None:
    transformers = pytest.importorskip("transformers", reason="transformers is a test extra")
    from codegen_core.tokenizer.spec import find_gpt2_files  # noqa: PLC0415

    vocab, merges = find_gpt2_files()
    hf = transformers.CodeGenTokenizer(str(vocab), str(merges))
    patterns = [r"^#", r"<\|endoftext\|>", r"^'''", r'^"""', r"\n\n\n"]
    for completion, _ in CASES:
        assert truncate_before_pattern(completion, patterns) == hf.truncate(completion, patterns)


def test_non_str_is_refused() -> None:
    with pytest.raises(TypeError, match="completion must be str"):
        truncate_before_pattern(b"bytes")  # type: ignore[arg-type]
