"""The ``data prepare`` / ``data dedup`` pipeline: filter -> exact dedup -> near dedup ->
tokenize -> pack -> shards.

Memory grows with the number of documents, not their size: pass 1 streams the inputs and
keeps, per surviving document, its :class:`SourceRef` and LSH band keys; near-dup
verification and tokenization re-read documents from disk (checked against a content hash,
so an input that changes mid-run is an error rather than silent corruption).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from codegen_core.data import sources
from codegen_core.data.exact import ExactDeduplicator, content_hash
from codegen_core.data.filters import FilterConfig, FilterStats
from codegen_core.data.lsh import DedupResult, NearDuplicateIndex
from codegen_core.data.minhash import MinHashConfig
from codegen_core.data.pack import PackConfig, Packer
from codegen_core.data.shards import MANIFEST, ShardWriter

REPORT = "report.json"
MAX_EXAMPLES = 20


class _NoBar:
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


def tqdm(*args: Any, disable: bool = False, **kwargs: Any) -> Any:
    """A tqdm progress bar, imported on first use (the import costs ~35 ms of CPU, 2% of a
    whole ``data dedup`` of the standard library); nothing at all when disabled."""
    if disable:
        return _NoBar()
    from tqdm import tqdm as bar  # noqa: PLC0415

    return bar(*args, **kwargs)


class TokenizerLike(Protocol):
    """What the pipeline needs from a tokenizer (``codegen_core.tokenizer.core.Tokenizer``).

    ``encode_ordinary_batch`` must encode special-token text (``<|endoftext|>``,
    ``<mask_1>``, ``<sep>``, ... written in a source file) as ordinary text: file text never
    yields a control id; the only control id in the shards is the EOS the packer appends.
    """

    @property
    def vocab_size(self) -> int: ...
    @property
    def eos_token_id(self) -> int: ...
    def encode_ordinary_batch(self, texts: list[str]) -> list[list[int]]: ...


def load_tokenizer(name: str) -> TokenizerLike:
    """``codegen`` | ``codegen2`` | ``gpt2`` | a path to a Hugging Face tokenizer.json."""
    # Imported on use: the C++ tokenizer is only needed by the tokenize stage.
    from codegen_core.tokenizer.core import Tokenizer  # noqa: PLC0415

    presets = {"codegen": Tokenizer.codegen, "codegen2": Tokenizer.codegen2, "gpt2": Tokenizer.gpt2}
    if name in presets:
        return presets[name]()
    if Path(name).is_file():
        return Tokenizer.from_file(name)
    raise ValueError(f"unknown tokenizer {name!r}: use codegen, codegen2, gpt2 or a tokenizer.json")


@dataclass(frozen=True)
class PrepareConfig:
    filters: FilterConfig = field(default_factory=FilterConfig)
    minhash: MinHashConfig = field(default_factory=MinHashConfig)
    near_dedup: bool = True
    pack: PackConfig = field(default_factory=PackConfig)
    tokenizer: str = "codegen"
    sequences_per_shard: int = 4096
    batch_documents: int = 512  # documents per C++ call (signatures, tokenization)
    language: str | None = None  # optional tag recorded in the manifest
    exclude_dirs: tuple[str, ...] = sources.DEFAULT_EXCLUDE


@dataclass
class ScanResult:
    """Pass 1 (+ clustering): what survived each stage, by input order."""

    refs: list[sources.SourceRef] = field(default_factory=list)  # after exact dedup
    digests: list[bytes] = field(default_factory=list)
    filter_stats: FilterStats = field(default_factory=FilterStats)
    exact_duplicates: list[tuple[str, str]] = field(default_factory=list)  # (removed, kept)
    bytes_in: int = 0
    near: DedupResult | None = None

    def kept_refs(self) -> list[tuple[sources.SourceRef, bytes]]:
        keep = self.near.keep if self.near is not None else np.ones(len(self.refs), dtype=bool)
        return [(r, d) for r, d, k in zip(self.refs, self.digests, keep, strict=True) if k]


def _read_checked(ref: sources.SourceRef, digest: bytes, config: FilterConfig) -> str:
    text = sources.read_document(ref, config)
    if content_hash(text) != digest:
        raise ValueError(f"{ref.name}: changed while preparing (content hash differs)")
    return text


def scan(
    inputs: Sequence[str | Path], config: PrepareConfig, *, progress: bool = True
) -> ScanResult:
    """Filter, exact-dedup and (if configured) near-dedup the inputs. Files are read,
    filtered and hashed a block of ``batch_documents`` at a time by one native call
    (:func:`sources.iter_read_blocks`); only a block of texts is held at once."""
    result = ScanResult()
    exact = ExactDeduplicator()
    index = NearDuplicateIndex(config.minhash) if config.near_dedup else None
    batch: list[sources.Document] = []
    threads = config.minhash.num_threads
    blocks = sources.iter_read_blocks(
        inputs,
        config.filters,
        config.exclude_dirs,
        block_documents=config.batch_documents,
        as_text=False,  # UTF-8 bytes: MinHash and the byte count need nothing else
        num_threads=threads,
    )
    stats = result.filter_stats
    record = stats.record
    bar = tqdm(desc="scan", unit=" docs", disable=not progress)
    for block in blocks:
        passed = 0  # documents past the filters: counted per block, not one record() each
        for ref, doc, reason, digest in block:
            if doc is None or digest is None:
                record(ref.name, reason)
                continue
            passed += 1
            result.bytes_in += len(doc)
            earlier = exact.first_seen_digest(ref.name, digest)
            if earlier is not None:
                result.exact_duplicates.append((ref.name, earlier))
                continue
            result.refs.append(ref)
            result.digests.append(digest)
            if index is not None:
                batch.append(doc)
                if len(batch) == config.batch_documents:
                    index.add(batch)
                    batch = []
        stats.seen += passed
        stats.kept += passed
        bar.update(len(block))
    bar.close()
    if index is not None:
        if batch:
            index.add(batch)

        def fetch(ids: np.ndarray) -> list[sources.Document]:
            refs = [result.refs[i] for i in ids]
            digests = [result.digests[i] for i in ids]
            return sources.read_checked(
                refs, digests, config.filters, as_text=False, num_threads=threads
            )

        result.near = index.find_duplicates(fetch)
    return result


def dedup_report(scan_result: ScanResult, config: PrepareConfig) -> dict[str, Any]:
    """Counts per stage and example clusters (deterministic: no timings)."""
    near: dict[str, Any] = {"enabled": config.near_dedup}
    if scan_result.near is not None:
        r = scan_result.near
        bands, rows = config.minhash.lsh_params()
        clusters = sorted(r.clusters(), key=lambda c: (-c.size, int(c[0])))
        near.update(
            config=dataclasses.asdict(config.minhash),
            bands=bands,
            rows=rows,
            candidate_pairs=int(r.pairs.shape[0]),
            duplicate_pairs=int(np.count_nonzero(r.duplicate)),
            clusters=len(clusters),
            removed=r.num_removed,
            examples=[
                {
                    "size": int(c.size),
                    "kept": scan_result.refs[int(c[0])].name,
                    "removed": [scan_result.refs[int(i)].name for i in c[1:6]],
                }
                for c in clusters[:MAX_EXAMPLES]
            ],
        )
    kept = len(scan_result.kept_refs())
    return {
        "filters": scan_result.filter_stats.as_dict(),
        "exact_dedup": {
            "removed": len(scan_result.exact_duplicates),
            "examples": [
                {"removed": r, "kept": k} for r, k in scan_result.exact_duplicates[:MAX_EXAMPLES]
            ],
        },
        "near_dedup": near,
        "documents_kept": kept,
        "bytes_after_filters": scan_result.bytes_in,
    }


def check_out_dir(out_dir: Path, overwrite: bool, *, delete: bool = True) -> None:
    """Refuse an ``out_dir`` that already holds prepared data unless ``overwrite``; with
    ``overwrite`` and ``delete``, remove that data (shards, manifest, report)."""
    owned = [*out_dir.glob("shard-*.npy"), out_dir / MANIFEST, out_dir / REPORT]
    existing = [p for p in owned if p.exists()]
    if existing and not overwrite:
        raise ValueError(
            f"{out_dir} already holds prepared data; pass overwrite=True (--overwrite)"
        )
    if delete:
        for p in existing:
            p.unlink()


def tokens_report(
    *,
    documents: int,
    tokens_in: int,
    tokens_written: int,
    tokens_dropped: int,
    tails_dropped: int,
    sequences: int,
    padding: int,
) -> dict[str, int]:
    """The report's ``tokens`` section (both engines)."""
    return {
        "documents": documents,
        "tokens_in": tokens_in,
        "tokens_written": tokens_written,
        "tokens_dropped_short_tails": tokens_dropped,
        "tails_dropped": tails_dropped,
        "sequences": sequences,
        "padding_tokens": padding,
    }


def manifest_metadata(
    config: PrepareConfig,
    tok: TokenizerLike,
    *,
    documents_seen: int,
    documents_packed: int,
    tokens_written: int,
    sequences: int,
) -> dict[str, Any]:
    """What the manifest records beside the shards (both engines)."""
    return {
        "tokenizer": {
            "name": config.tokenizer,
            "vocab_size": tok.vocab_size,
            "eos_token_id": tok.eos_token_id,
        },
        "language": config.language,
        "config": _jsonable(dataclasses.asdict(config)),
        "counts": {
            "documents_seen": documents_seen,
            "documents_packed": documents_packed,
            "tokens_written": tokens_written,
            "sequences": sequences,
        },
    }


def prepare(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    *,
    tokenizer: TokenizerLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the whole pipeline; write shards, ``manifest.json`` and ``report.json`` to
    ``out_dir``; return the report."""
    config = config if config is not None else PrepareConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_out_dir(out, overwrite)
    tok = tokenizer if tokenizer is not None else load_tokenizer(config.tokenizer)
    if tok.eos_token_id != config.pack.eos_id:
        raise ValueError(f"tokenizer EOS {tok.eos_token_id} != pack eos_id {config.pack.eos_id}")
    scanned = scan(inputs, config, progress=progress)
    report = dedup_report(scanned, config)

    packer = Packer(config.pack)
    writer = ShardWriter(
        out,
        seq_len=config.pack.seq_len,
        vocab_size=tok.vocab_size,
        sequences_per_shard=config.sequences_per_shard,
    )
    kept = scanned.kept_refs()
    bar = tqdm(total=len(kept), desc="tokenize+pack", unit=" docs", disable=not progress)
    for start in range(0, len(kept), config.batch_documents):
        chunk = kept[start : start + config.batch_documents]
        texts = sources.read_checked(  # one native call per chunk; str for the tokenizer
            [ref for ref, _ in chunk], [digest for _, digest in chunk], config.filters
        )
        for ids in tok.encode_ordinary_batch(texts):  # file text is text: no control ids
            writer.add(packer.add(ids))
        bar.update(len(chunk))
    bar.close()
    writer.add(packer.finish())
    stats = packer.stats
    report["tokens"] = tokens_report(
        documents=stats.documents,
        tokens_in=stats.tokens_in,
        tokens_written=stats.tokens_written,
        tokens_dropped=stats.tokens_dropped,
        tails_dropped=stats.tails_dropped,
        sequences=stats.sequences,
        padding=stats.padding,
    )
    manifest = writer.close(
        manifest_metadata(
            config,
            tok,
            documents_seen=scanned.filter_stats.seen,
            documents_packed=stats.documents,
            tokens_written=stats.tokens_written,
            sequences=stats.sequences,
        )
    )
    report["output"] = {
        "num_sequences": manifest["num_sequences"],
        "shards": len(manifest["shards"]),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return report


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
