"""CodeGen's stop-pattern truncation of sampled completions.

This is the rule of CodeGen's sampler (and of transformers' ``CodeGenTokenizer.decode(...,
truncate_before_pattern=...)``): cut at the second line that starts with ``print`` and at the
second line that starts with ``def``, then at the earliest match of any terminal pattern
(compiled with ``re.MULTILINE``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

#: CodeGen's terminals for HumanEval / MTPB sampling (CODEGEN.md section 5).
DEFAULT_STOP_PATTERNS: tuple[str, ...] = (
    r"^#",
    re.escape("<|endoftext|>"),
    r"^'''",
    r'^"""',
    r"\n\n\n",
)

_PRINT = re.compile(r"^print", re.MULTILINE)
_DEF = re.compile(r"^def", re.MULTILINE)


@functools.lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p, re.MULTILINE) for p in patterns)


def _cut_at_second(completion: str, pattern: re.Pattern[str]) -> str:
    matches = pattern.finditer(completion)
    next(matches, None)
    second = next(matches, None)
    return completion if second is None else completion[: second.start()]


def truncate_before_pattern(
    completion: str, patterns: Sequence[str] = DEFAULT_STOP_PATTERNS
) -> str:
    """Cut a sampled completion where CodeGen's sampler would.

    >>> truncate_before_pattern("    return 1\\n\\n\\n\\ndef g():\\n    pass\\n")
    '    return 1'
    >>> truncate_before_pattern("x = 1\\nprint(x)\\nprint(x + 1)\\n")
    'x = 1\\nprint(x)\\n'
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be str, got {type(completion).__name__}")
    completion = _cut_at_second(completion, _PRINT)
    completion = _cut_at_second(completion, _DEF)
    positions = [m.start() for p in _compile(tuple(patterns)) if (m := p.search(completion))]
    return completion[: min(positions)] if positions else completion
