"""CodeGen's filters and exact dedup."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core.data import filters
from codegen_core.data.exact import ExactDeduplicator, content_hash
from codegen_core.data.filters import (
    FilterConfig,
    FilterStats,
    content_reason,
    content_reason_reference,
    decode_source,
)

CFG = FilterConfig()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("def f():\n    return 1\n", None),
        ("x = '" + "a" * 150 + "'\n", filters.MEAN_LINE_LENGTH),
        ("x = 1\n" * 50 + "y = '" + "a" * 1001 + "'\n" + "x = 1\n" * 200, filters.MAX_LINE_LENGTH),
        ("DEADBEEF 0123456789\n" * 20, filters.DIGIT_FRACTION),
        ("data = [0x1F, 0x2A, 0x3B]\n", None),  # hex literals in code are fine
        ("\n\n   \n", filters.EMPTY),
    ],
)
def test_content_filters(text: str, reason: str | None) -> None:
    assert content_reason(text, CFG) == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"print('hi')\n", None),
        (b"", filters.EMPTY),
        (b"  \n", filters.EMPTY),
        (b"x = 1\x00\x01", filters.BINARY),
        (b"caf\xe9 = 1\n", filters.NOT_UTF8),
        (b"x" * (CFG.max_file_bytes + 1), filters.TOO_LARGE),
    ],
)
def test_byte_checks(data: bytes, reason: str | None) -> None:
    text, got = decode_source(data, CFG)
    assert got == reason and (text is None) == (reason is not None)


def test_extensions_and_stats() -> None:
    assert filters.extension_ok("a/B.PY", CFG) and not filters.extension_ok("a.txt", CFG)
    assert filters.extension_ok("a.txt", FilterConfig(extensions=()))
    stats = FilterStats()
    for i in range(7):
        stats.record(f"f{i}", None if i % 2 else filters.EMPTY)
    assert stats.as_dict()["dropped"] == {"empty": 4}
    assert stats.kept == 3 and stats.seen == 7
    assert stats.examples["empty"] == ["f0", "f2", "f4", "f6"]
    with pytest.raises(ValueError, match="max_digit_fraction"):
        FilterConfig(max_digit_fraction=0.0)


def test_exact_dedup_keeps_first() -> None:
    dedup = ExactDeduplicator()
    assert dedup.first_seen("a", "x = 1\n") is None
    assert dedup.first_seen("b", "x = 2\n") is None
    assert dedup.first_seen("c", "x = 1\n") == "a"
    assert dedup.first_seen("a", "x = 1\n") == "a"  # same name again is still a duplicate
    assert dedup.duplicates == 2 and len(dedup) == 2
    assert content_hash("x") != content_hash("x ")


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from("ab09Fx \t\n\r\u00e9\u4e2d\U0001f600"), max_size=400),
    mean=st.sampled_from([1.0, 3.0, 100.0]),
    longest=st.integers(1, 20),
    digits=st.sampled_from([0.3, 0.9]),
)
def test_fast_filters_equal_reference(text: str, mean: float, longest: int, digits: float) -> None:
    cfg = FilterConfig(
        max_mean_line_length=mean, max_line_length=longest, max_digit_fraction=digits
    )
    assert content_reason(text, cfg) == content_reason_reference(text, cfg)


def test_fast_filters_equal_reference_on_stdlib(stdlib_texts: list[tuple[str, str]]) -> None:
    tight = FilterConfig(max_mean_line_length=30, max_line_length=79)
    for _, text in stdlib_texts[::20]:
        for cfg in (CFG, tight):
            assert content_reason(text, cfg) == content_reason_reference(text, cfg)


def test_filter_stats_merge_equals_recording_in_one_pass() -> None:
    """Stats of blocks merged in input order equal the stats of one pass over all names (the
    Ray engine merges per-block stats this way)."""
    events = [(f"f{i}.py", None if i % 3 == 0 else ("empty" if i % 2 else "binary"))
              for i in range(40)]  # fmt: skip
    whole = FilterStats()
    for name, reason in events:
        whole.record(name, reason)
    merged = FilterStats()
    for start in range(0, len(events), 7):
        part = FilterStats()
        for name, reason in events[start : start + 7]:
            part.record(name, reason)
        merged.merge(part)
    assert merged.as_dict() == whole.as_dict()
    assert len(merged.examples["empty"]) == FilterStats.MAX_EXAMPLES
