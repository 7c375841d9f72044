"""The native batch filters (csrc/data/filters.h) against the plain-Python definitions: the
same reason for every document, the same content hash, the same documents read from disk,
and a local scan identical to the per-file Python scan it replaced."""

from __future__ import annotations

import os
import stat
import sysconfig
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen_core import _core
from codegen_core.cli import main
from codegen_core.data import cli as data_cli
from codegen_core.data import filters, sources
from codegen_core.data.exact import ExactDeduplicator, content_hash
from codegen_core.data.filters import (
    FilterConfig,
    content_reason,
    content_reason_reference,
    content_reasons,
    content_reasons_and_digests,
    document_reason,
)
from codegen_core.data.lsh import NearDuplicateIndex
from codegen_core.data.minhash import MinHashConfig
from codegen_core.data.prepare import PrepareConfig, ScanResult, scan

CFG = FilterConfig()
TIGHT = FilterConfig(max_mean_line_length=30, max_line_length=79, max_digit_fraction=0.3)

# Characters that exercise every rule: hex digits and not, whitespace of each kind (CR, FF,
# VT count as whitespace, not as line ends), multi-byte characters (2, 3, 4 UTF-8 bytes), NUL.
ALPHABET = "ab09Fxyz_ \t\n\r\f\v\u00e9\u4e2d\U0001f600\x00"
configs = st.builds(
    FilterConfig,
    max_mean_line_length=st.sampled_from([1.0, 2.5, 3.0, 40.0, 100.0]),
    max_line_length=st.integers(1, 300),
    max_digit_fraction=st.sampled_from([0.1, 0.3, 0.5, 0.9, 1.0]),
)
# Long runs cross the 16-byte vector steps and the 255-step counter flush of the native scan.
texts = st.one_of(
    st.text(alphabet=st.sampled_from(ALPHABET), max_size=300),
    st.builds(
        lambda piece, n, tail: piece * n + tail,
        st.text(alphabet=st.sampled_from(ALPHABET), min_size=1, max_size=40),
        st.integers(1, 400),
        st.text(alphabet=st.sampled_from(ALPHABET), max_size=20),
    ),
    st.text(max_size=200),  # any code point, lone surrogates included
)


@settings(max_examples=400, deadline=None)
@given(batch=st.lists(texts, max_size=12), config=configs)
def test_native_text_reasons_equal_reference(batch: list[str], config: FilterConfig) -> None:
    want = [content_reason_reference(t, config) for t in batch]
    assert content_reasons(batch, config) == want
    assert [content_reason(t, config) for t in batch] == want  # the numpy path, too


def _bytes_variants(text: str, cut: int, junk: bytes) -> list[bytes]:
    data = text.encode("utf-8", "surrogatepass")
    return [data, data[:cut], data + junk, junk + data]  # truncations, invalid sequences


@settings(max_examples=300, deadline=None)
@given(
    text=texts,
    cut=st.integers(0, 50),
    junk=st.sampled_from(
        [b"", b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe4\xb8", b"\x00", b"\x80"]
    ),
    raw=st.binary(max_size=64),
    config=configs,
)
def test_native_bytes_reasons_equal_reference(
    text: str, cut: int, junk: bytes, raw: bytes, config: FilterConfig
) -> None:
    docs = [*_bytes_variants(text, cut, junk), raw]
    want = [document_reason(d, config) for d in docs]
    reasons, digests = content_reasons_and_digests(docs, config)
    assert reasons == want
    for doc, reason, digest in zip(docs, reasons, digests, strict=True):
        assert digest == (None if reason else content_hash(doc.decode("utf-8")))


def test_native_counts_characters_not_bytes() -> None:
    # A line of n three-byte characters: 3n bytes, n characters; the limit is 1000.
    for n, want in ((1000, None), (1001, filters.MAX_LINE_LENGTH)):
        doc = "y = 1\n" * 20 + "\u4e2d" * n + "\n" + "y = 1\n" * 200
        assert content_reasons([doc], CFG) == [content_reason_reference(doc, CFG)] == [want]
        assert content_reasons([doc.encode()], CFG) == [want]
    # Size limits count bytes: a 6-character, 12-byte file is too large at 10 bytes.
    small = FilterConfig(max_file_bytes=10)
    assert content_reasons(["\u00e9" * 6, ("\u00e9" * 6).encode()], small) == [
        None,  # text is not size-checked (as content_reason)
        filters.TOO_LARGE,
    ]


def test_native_digests_are_content_hash(stdlib_texts: list[tuple[str, str]]) -> None:
    docs = [t for _, t in stdlib_texts[::7]]
    reasons, digests = content_reasons_and_digests(docs, CFG)
    assert reasons == [content_reason_reference(t, CFG) for t in docs]
    assert digests == [None if r else content_hash(t) for t, r in zip(docs, reasons, strict=True)]
    assert content_reasons_and_digests(["a\ud800b"], CFG)[1] == [content_hash("a\ud800b")]


def test_native_rejects_non_text() -> None:
    with pytest.raises(ValueError, match="document 1 must be str or bytes, got int"):
        content_reasons(["x", 3], CFG)  # type: ignore[list-item]


def _odd_files(root: Path) -> None:
    """Every way a file can be dropped (or read) on the byte level."""
    root.mkdir()
    (root / "ok.py").write_text("def f():\n    return 1\n")
    (root / "crlf.py").write_bytes(b"def f():\r\n    return 1\r\n" * 40)
    (root / "dup.py").write_bytes(b"def f():\r\n    return 1\r\n" * 40)
    (root / "empty.py").write_bytes(b" \n\t\r\x0b\x0c")
    (root / "nothing.py").write_bytes(b"")
    (root / "nul.py").write_bytes(b"x = 1\x00\n")
    (root / "latin1.py").write_bytes(b"caf\xe9 = 1\n")
    (root / "surrogate.py").write_bytes(b"x = '\xed\xa0\x80'\n")
    (root / "big.py").write_bytes(b"x = 1\n" * 300)  # 1800 bytes
    (root / "wide.py").write_text("x = '" + "\u00e9" * 500 + "'\n")  # 1000+ bytes, 507 chars
    (root / "long.py").write_text("x = 1\n" + "y" * 200 + "\n")
    (root / "hex.py").write_text("DEADBEEF 0123456789\n" * 5)
    (root / "notes.txt").write_text("not code")
    (root / "dir.py").mkdir()
    (root / "dir.py" / "inner.py").write_text("z = 3\n")
    (root / "broken.py").symlink_to(root / "missing.py")
    (root / "link.py").symlink_to(root / "ok.py")
    (root / "sub").mkdir()
    (root / "sub" / "__pycache__").mkdir()
    (root / "sub" / "__pycache__" / "cached.py").write_text("c = 1\n")
    (root / "sub" / "Upper.py").write_text("u = 1\n")
    (root / "sub" / "\u00e9t\u00e9.py").write_text("e = 1\n")
    (root / "linked_dir").symlink_to(root / "sub")  # listed as a directory, not entered
    os.mkfifo(root / "fifo.py")
    (root / "d.jsonl").write_text(
        '{"content": "a = 1\\n"}\nnot json\n\n{"text": "\\ud800"}\n{"code": "a = 1\\n"}\n'
        + '{"content": "'
        + "x" * 3000
        + '"}\n'
    )


@pytest.fixture
def odd_corpus(tmp_path: Path) -> Path:
    _odd_files(tmp_path / "odd")
    return tmp_path / "odd"


def _python_documents(inputs: list[Path], config: FilterConfig) -> list[tuple]:
    """The per-file Python path: iter_documents, then content_reason on what was read."""
    out = []
    for ref, text, read_reason in sources.iter_documents(inputs, config):
        reason = read_reason if text is None else content_reason(text, config)
        out.append((ref, text if reason is None else None, reason))
    return out


@pytest.mark.parametrize("config", [CFG, FilterConfig(max_file_bytes=1000, max_line_length=100)])
def test_read_documents_equal_per_file_path(odd_corpus: Path, config: FilterConfig) -> None:
    want = _python_documents([odd_corpus], config)
    listed = list(sources.iter_refs([odd_corpus], config))
    assert [ref for ref, _ in listed] == [ref for ref, _, _ in want]
    to_read = [ref for ref, reason in listed if reason is None]
    read = iter(sources.read_documents(to_read, config))
    got = [(ref, *next(read)) if reason is None else (ref, None, reason) for ref, reason in listed]
    assert got == want
    assert [sources.read_document_checked(ref, config) for ref in to_read] == list(
        sources.read_documents(to_read, config)
    )
    reasons = {Path(ref.path).name: reason for ref, _, reason in want if ref.line < 0}
    assert reasons["fifo.py"] == reasons["broken.py"] == filters.UNREADABLE
    assert reasons["surrogate.py"] == filters.NOT_UTF8 and reasons["nul.py"] == filters.BINARY
    # Blocks of every size give the same documents, with content hashes of the kept ones.
    for size in (1, 3, 512):
        blocks = list(sources.iter_read_blocks([odd_corpus], config, block_documents=size))
        flat = [item for block in blocks for item in block]
        assert [(ref, doc, reason) for ref, doc, reason, _ in flat] == want
        assert all(d == (None if t is None else content_hash(t)) for _, t, _, d in flat)


def test_read_documents_on_the_standard_library() -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    inputs = [root / "email", root / "json", root / "encodings", root / "test" / "test_email"]
    inputs = [p for p in inputs if p.exists()]
    for config in (CFG, TIGHT):
        want = _python_documents(inputs, config)
        got = [
            item[:3]
            for block in sources.iter_read_blocks(inputs, config, block_documents=64)
            for item in block
        ]
        assert got == want and len(want) > 100


def test_native_walk_equals_os_walk(odd_corpus: Path) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for root in (odd_corpus, stdlib / "email", stdlib / "json"):
        want = [path for path, _ in sources._walk_names(root, sources.DEFAULT_EXCLUDE)]
        assert want == [str(p) for p in sources._walk(root, sources.DEFAULT_EXCLUDE)]
        assert sources._walk_paths(root, sources.DEFAULT_EXCLUDE) == want
    odd = [path for path, _ in sources._walk_names(odd_corpus, ())]
    assert any("__pycache__" in p for p in odd) and not any("linked_dir/" in p for p in odd)
    # A name that is not UTF-8: Python's order (surrogate escapes), through the fallback.
    (odd_corpus / os.fsdecode(b"caf\xe9.py")).write_bytes(b"x = 1\n")
    assert _core.walk_files(str(odd_corpus), str(odd_corpus) + "/", ()) is None
    want = [str(p) for p in sources._walk(odd_corpus, ())]
    assert sources._walk_paths(odd_corpus, ()) == want and len(want) == len(odd) + 1


def test_read_checked_refuses_changed_files(odd_corpus: Path) -> None:
    ref = sources.SourceRef(str(odd_corpus / "ok.py"))
    digest = content_hash((odd_corpus / "ok.py").read_text())
    assert sources.read_checked([ref], [digest], CFG) == ["def f():\n    return 1\n"]
    assert sources.read_checked([ref], [digest], CFG, as_text=False) == [
        b"def f():\n    return 1\n"
    ]
    (odd_corpus / "ok.py").write_text("def f():\n    return 2\n")
    with pytest.raises(ValueError, match=r"ok.py: changed while preparing \(content hash"):
        sources.read_checked([ref], [digest], CFG)
    (odd_corpus / "ok.py").write_bytes(b"\x00")
    with pytest.raises(ValueError, match=r"ok.py: changed while preparing \(binary\)"):
        sources.read_checked([ref], [digest], CFG)


def _reference_scan(inputs: list[Path], config: PrepareConfig) -> ScanResult:
    """The per-file Python scan that scan() replaced (text by text, content_reason,
    hashlib), as a reference."""
    result, exact = ScanResult(), ExactDeduplicator()
    texts = []
    for ref, text, read_reason in sources.iter_documents(
        inputs, config.filters, config.exclude_dirs
    ):
        reason = read_reason if text is None else content_reason(text, config.filters)
        result.filter_stats.record(ref.name, reason)
        if text is None or reason is not None:
            continue
        result.bytes_in += len(text.encode("utf-8"))
        digest = content_hash(text)
        earlier = exact.first_seen_digest(ref.name, digest)
        if earlier is not None:
            result.exact_duplicates.append((ref.name, earlier))
            continue
        result.refs.append(ref)
        result.digests.append(digest)
        texts.append(text)
    if config.near_dedup:
        index = NearDuplicateIndex(config.minhash)
        index.add(texts)
        result.near = index.find_duplicates(texts)
    return result


def test_scan_equals_per_file_reference(odd_corpus: Path) -> None:
    root = Path(sysconfig.get_paths()["stdlib"])
    inputs = [odd_corpus, root / "encodings", root / "json"]  # encodings: real near-dups
    config = PrepareConfig(minhash=MinHashConfig(num_threads=2), batch_documents=16)
    want = _reference_scan(inputs, config)
    got = scan(inputs, config, progress=False)
    assert got.filter_stats.as_dict() == want.filter_stats.as_dict()
    assert (got.refs, got.digests, got.exact_duplicates, got.bytes_in) == (
        want.refs,
        want.digests,
        want.exact_duplicates,
        want.bytes_in,
    )
    assert got.near is not None and want.near is not None and want.near.num_removed > 10
    np.testing.assert_array_equal(got.near.roots, want.near.roots)
    np.testing.assert_array_equal(got.near.pairs, want.near.pairs)
    np.testing.assert_array_equal(got.near.similarity, want.near.similarity)


def test_dedup_command_outputs_equal_per_file_reference(
    odd_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kept.txt, removed.txt and report.json of ``data dedup``, byte for byte, against the
    same command run on the per-file Python scan."""
    root = Path(sysconfig.get_paths()["stdlib"])
    inputs = [str(odd_corpus), str(root / "encodings"), str(root / "json")]
    argv = ["data", "dedup", *inputs, "--no-progress", "--extensions", ".py,.txt"]
    assert main([*argv, "--out", str(tmp_path / "native")]) == 0
    monkeypatch.setattr(data_cli, "scan", lambda i, c, progress: _reference_scan(i, c))
    assert main([*argv, "--out", str(tmp_path / "reference")]) == 0
    for name in ("kept.txt", "removed.txt", "report.json"):
        native = (tmp_path / "native" / name).read_bytes()
        assert native == (tmp_path / "reference" / name).read_bytes(), name
    assert b"\tnear\t" in (tmp_path / "native" / "removed.txt").read_bytes()
    assert b"\texact\t" in (tmp_path / "native" / "removed.txt").read_bytes()


def test_unreadable_file_is_reported_not_raised(odd_corpus: Path) -> None:
    secret = odd_corpus / "secret.py"
    secret.write_text("x = 1\n")
    secret.chmod(0)
    try:
        can_read = os.access(secret, os.R_OK)  # root reads every file whatever its mode
        ref = sources.SourceRef(str(secret))
        want = ("x = 1\n", None) if can_read else (None, filters.UNREADABLE)
        assert sources.read_documents([ref], CFG) == [want]
        assert sources.read_document_checked(ref, CFG) == want
    finally:
        secret.chmod(stat.S_IRUSR | stat.S_IWUSR)
