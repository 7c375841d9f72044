"""Input documents: directories of source files, single files, and JSONL files.

Enumeration is deterministic (sorted paths, JSONL in line order), so reruns see the same
documents in the same order. A :class:`SourceRef` names where a document lives so later
passes can re-read it instead of holding every text in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import sysconfig
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from codegen_core import _core
from codegen_core.data import filters
from codegen_core.data.filters import FilterConfig

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_KEYS = ("content", "text", "code")  # first present string field is the document
BAD_JSON = "bad_json"
DEFAULT_EXCLUDE = ("__pycache__", ".git")


@dataclass(frozen=True)
class SourceRef:
    """Where one document lives: a whole file (line == -1) or one line of a JSONL file."""

    path: str
    offset: int = -1  # byte offset of the JSONL line
    line: int = -1  # 1-based JSONL line number

    @property
    def name(self) -> str:
        return self.path if self.line < 0 else f"{self.path}:{self.line}"


def default_inputs() -> list[Path]:
    """The Python standard library of the running interpreter (walk it with
    ``exclude_dirs=DEFAULT_EXCLUDE + ("site-packages",)`` to leave installed packages out)."""
    return [Path(sysconfig.get_paths()["stdlib"])]


def _walk(root: Path, exclude_dirs: tuple[str, ...]) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        for fn in sorted(filenames):
            yield Path(dirpath) / fn


def _walk_names(root: Path, exclude_dirs: tuple[str, ...]) -> Iterator[tuple[str, str]]:
    """:func:`_walk` as (str(path), name) without building a Path per file (same order, same
    strings)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        prefix = str(Path(dirpath) / "_")[:-1]  # exactly how Path joins ("" after ".")
        for fn in sorted(filenames):
            yield prefix + fn, fn


def _walk_paths(root: Path, exclude_dirs: tuple[str, ...]) -> Sequence[str]:
    """The str paths of :func:`_walk_names`, listed natively (``_core.walk_files``, same order
    and strings; about half the CPU); Python's walk where the native one declines (a name
    that is not UTF-8, a file system encoding other than UTF-8). Holds one str per file."""
    if sys.getfilesystemencoding() == "utf-8":
        paths = _core.walk_files(str(root), str(root / "_")[:-1], exclude_dirs)
        if paths is not None:
            return paths
    return [path for path, _ in _walk_names(root, exclude_dirs)]


def _text_of_json(line: bytes) -> tuple[str | None, str | None]:
    try:
        record = json.loads(line)
    except ValueError:  # includes UnicodeDecodeError
        return None, BAD_JSON
    if isinstance(record, dict):
        for key in TEXT_KEYS:
            if isinstance(record.get(key), str):
                return record[key], None
    return None, BAD_JSON


def _read_file(path: Path, config: FilterConfig) -> tuple[str | None, str | None]:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            return None, filters.UNREADABLE
        if info.st_size > config.max_file_bytes:
            return None, filters.TOO_LARGE
        data = path.read_bytes()
    except OSError:
        return None, filters.UNREADABLE
    return filters.decode_source(data, config)


def _jsonl_line_limit(config: FilterConfig) -> int:
    return 6 * config.max_file_bytes + 4096  # JSON escapes (\\uXXXX) take up to 6 bytes a byte


def _jsonl_document(raw: bytes, config: FilterConfig) -> tuple[str | None, str | None]:
    if len(raw) > _jsonl_line_limit(config):
        return None, filters.TOO_LARGE
    text, reason = _text_of_json(raw)
    if text is None:
        return None, reason
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from \\ud800 escapes
        return None, filters.NOT_UTF8
    return filters.decode_source(data, config)


def iter_documents(
    inputs: Sequence[str | Path],
    config: FilterConfig,
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE,
) -> Iterator[tuple[SourceRef, str | None, str | None]]:
    """Yield (ref, text, None) for documents passing the byte-level checks, else
    (ref, None, reason). Directories are walked in sorted order, skipping ``exclude_dirs``.
    Missing inputs raise FileNotFoundError up front."""
    roots = [Path(p) for p in inputs]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
    for root in roots:
        paths = _walk(root, exclude_dirs) if root.is_dir() else iter([root])
        for path in paths:
            if path.name.lower().endswith(JSONL_SUFFIXES):
                yield from _iter_jsonl(path, config)
            elif not filters.extension_ok(path.name, config):
                yield SourceRef(str(path)), None, filters.EXTENSION
            elif path.is_symlink() and not path.exists():
                yield SourceRef(str(path)), None, filters.UNREADABLE
            else:
                yield (SourceRef(str(path)), *_read_file(path, config))


def _iter_jsonl(
    path: Path, config: FilterConfig, *, decode: bool = True
) -> Iterator[tuple[SourceRef, str | None, str | None]]:
    """Lines of a JSONL file as (ref, text, reason); with ``decode=False`` the JSON is not
    parsed and a line to read gives (ref, "", None)."""
    limit = _jsonl_line_limit(config)
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise OSError(f"{path} is not a regular file")
        f = path.open("rb")
    except OSError:
        yield SourceRef(str(path)), None, filters.UNREADABLE
        return
    with f:
        offset, number = 0, 0
        while True:
            raw = f.readline(limit + 1)  # bounded: a huge line is never held in memory
            if not raw:
                return
            number += 1
            ref = SourceRef(str(path), offset, number)
            offset += len(raw)
            if len(raw) > limit and not raw.endswith(b"\n"):
                while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                    offset += len(rest)
                offset += len(rest)
                yield ref, None, filters.TOO_LARGE
            elif raw.strip():
                yield (ref, *_jsonl_document(raw, config)) if decode else (ref, "", None)


def read_document(ref: SourceRef, config: FilterConfig) -> str:
    """Re-read a document that passed :func:`iter_documents` (raises if it no longer does)."""
    if ref.line < 0:
        text, reason = _read_file(Path(ref.path), config)
    else:
        try:
            with Path(ref.path).open("rb") as f:
                f.seek(ref.offset)
                raw = f.readline(_jsonl_line_limit(config) + 1)
        except OSError as e:
            raise ValueError(f"{ref.name}: cannot re-read ({e})") from e
        text, reason = _jsonl_document(raw, config)
    if text is None:
        raise ValueError(f"{ref.name}: changed while preparing ({reason})")
    return text


def iter_refs(
    inputs: Sequence[str | Path],
    config: FilterConfig,
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE,
) -> Iterator[tuple[SourceRef, str | None]]:
    """The documents of :func:`iter_documents`, in the same order, without reading them:
    (ref, None) for a document to read with :func:`read_documents`, (ref, reason) for one
    already dropped while enumerating (wrong extension; a JSONL file that cannot be opened,
    or a line too large). Whole files are not opened here."""
    roots = [Path(p) for p in inputs]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
    exts, extension = config.extensions, filters.EXTENSION
    for root in roots:
        is_dir = root.is_dir()
        for path in _walk_paths(root, exclude_dirs) if is_dir else [str(root)]:
            # filters.extension_ok, inlined: this loop runs once per file of the input
            name = (path[path.rfind("/") + 1 :] if is_dir else root.name).lower()
            if name.endswith(JSONL_SUFFIXES):
                for ref, text, reason in _iter_jsonl(Path(path), config, decode=False):
                    yield ref, (reason if text is None else None)
            else:
                yield SourceRef(path), (extension if exts and not name.endswith(exts) else None)


def read_document_checked(ref: SourceRef, config: FilterConfig) -> tuple[str | None, str | None]:
    """The per-file path for one ref: (text, None) if the document passes every filter
    (byte-level checks and :func:`filters.content_reason`), else (None, reason).

    A whole-file ref is checked for its extension first (as :func:`iter_documents` does); a
    whole-file ref to a JSONL file is not a document and gives ``unreadable`` (what
    :func:`iter_documents` yields for a JSONL file it cannot open)."""
    if ref.line < 0:
        path = Path(ref.path)
        if path.name.lower().endswith(JSONL_SUFFIXES):
            return None, filters.UNREADABLE
        if not filters.extension_ok(path.name, config):
            return None, filters.EXTENSION
        text, reason = _read_file(path, config)
    else:
        try:
            with Path(ref.path).open("rb") as f:
                f.seek(ref.offset)
                raw = f.readline(_jsonl_line_limit(config) + 1)
        except OSError:
            return None, filters.UNREADABLE
        if len(raw) > _jsonl_line_limit(config) and not raw.endswith(b"\n"):
            return None, filters.TOO_LARGE
        if not raw.strip():
            return None, filters.EMPTY
        text, reason = _jsonl_document(raw, config)
    if text is None:
        return None, reason
    reason = filters.content_reason(text, config)
    return (text, None) if reason is None else (None, reason)


Document = str | bytes


def read_block(
    refs: Sequence[SourceRef], config: FilterConfig, *, as_text: bool = True, num_threads: int = 0
) -> tuple[list[Document | None], list[str | None], list[bytes | None]]:
    """(documents, reasons, digests) of a block of refs, in order: what
    :func:`read_document_checked` gives for each (the document is None and the reason set when
    dropped), plus the kept documents' :func:`codegen_core.data.exact.content_hash` (None when
    dropped). Documents are str, or with ``as_text=False`` their UTF-8 bytes.

    Whole files are read, filtered and hashed in one native call (csrc/data/filters.h; GIL
    released, ``num_threads`` threads, 0: all cores); JSONL lines take the Python path."""
    docs: list[Document | None] = [None] * len(refs)
    reasons: list[str | None] = [None] * len(refs)
    digests: list[bytes | None] = [None] * len(refs)
    native: list[int] = []
    for i, ref in enumerate(refs):
        if ref.line >= 0:
            text, reasons[i] = read_document_checked(ref, config)
            if text is not None:
                data = text.encode("utf-8")
                docs[i] = text if as_text else data
                digests[i] = hashlib.blake2b(data, digest_size=16).digest()  # = content_hash
            continue
        # Path(...).name without building a Path: they differ only after a final "/" or "."
        tail = ref.path.rsplit("/", 1)[-1]
        name = tail if tail not in ("", ".") else Path(ref.path).name
        if name.lower().endswith(JSONL_SUFFIXES):
            reasons[i] = filters.UNREADABLE
        elif not filters.extension_ok(name, config):
            reasons[i] = filters.EXTENSION
        else:
            native.append(i)
    if native:
        codes, hashes, contents = _core.read_filter_files(
            [refs[i].path for i in native], *filters.native_options(config), num_threads, as_text
        )
        for k, i in enumerate(native):
            reason = filters.REASON_OF_CODE[codes[k]]
            if reason is None:
                docs[i] = contents[k]
                digests[i] = hashes[16 * k : 16 * k + 16]
            reasons[i] = reason
    return docs, reasons, digests


def iter_read_blocks(
    inputs: Sequence[str | Path],
    config: FilterConfig,
    exclude_dirs: tuple[str, ...] = DEFAULT_EXCLUDE,
    *,
    block_documents: int = 512,
    as_text: bool = True,
    num_threads: int = 0,
) -> Iterator[list[tuple[SourceRef, Document | None, str | None, bytes | None]]]:
    """Every document of :func:`iter_refs`, in order, as blocks of (ref, document, reason,
    digest): a kept document with its content hash, or a dropped one (None, reason, None).
    Each block reads up to ``block_documents`` documents with one :func:`read_block` call,
    so only one block of texts is held at a time."""
    if block_documents < 1:
        raise ValueError(f"block_documents must be >= 1, got {block_documents}")
    pending: list[tuple[SourceRef, str | None]] = []
    to_read = 0

    def flush() -> list[tuple[SourceRef, Document | None, str | None, bytes | None]]:
        refs = [ref for ref, reason in pending if reason is None]
        read = zip(
            refs, *read_block(refs, config, as_text=as_text, num_threads=num_threads), strict=True
        )
        return [
            next(read) if reason is None else (ref, None, reason, None) for ref, reason in pending
        ]

    for ref, reason in iter_refs(inputs, config, exclude_dirs):
        pending.append((ref, reason))
        to_read += reason is None
        if to_read == block_documents:
            yield flush()
            pending, to_read = [], 0
    if pending:
        yield flush()


def read_checked(
    refs: Sequence[SourceRef],
    digests: Sequence[bytes],
    config: FilterConfig,
    *,
    as_text: bool = True,
    num_threads: int = 0,
) -> list[Document]:
    """Re-read documents that passed before (one :func:`read_block` call); raise ValueError
    naming the first one that no longer passes or whose content hash changed."""
    docs, reasons, now = read_block(refs, config, as_text=as_text, num_threads=num_threads)
    for ref, doc, reason, before, after in zip(refs, docs, reasons, digests, now, strict=True):
        if doc is None:
            raise ValueError(f"{ref.name}: changed while preparing ({reason})")
        if after != before:
            raise ValueError(f"{ref.name}: changed while preparing (content hash differs)")
    return docs  # type: ignore[return-value]


def read_documents(
    refs: Sequence[SourceRef], config: FilterConfig, *, num_threads: int = 0
) -> list[tuple[str | None, str | None]]:
    """(text, None) or (None, drop reason) for every ref, in order: exactly
    :func:`read_document_checked` of each, one native call per block (see :func:`read_block`,
    which also gives the content hashes)."""
    docs, reasons, _ = read_block(refs, config, num_threads=num_threads)
    return list(zip(docs, reasons, strict=True))  # type: ignore[arg-type]
