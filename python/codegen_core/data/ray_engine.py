"""``--engine ray``: the ``data prepare`` / ``data dedup`` pipeline as Ray tasks, with output
byte-identical to the local path (:mod:`codegen_core.data.prepare`).

Every stage is a set of Ray core tasks over *blocks* (consecutive runs of input files) or
over *partitions* (hash buckets of a shuffle); a task calls the same functions as the local
path (``sources.read_block`` / ``read_checked``, ``minhash_signatures``, ``band_keys``,
``candidate_pairs``, ``exact_jaccard``, ``cluster_roots``, the tokenizer, the packing rule
of :class:`Packer`, the shard format of :func:`write_shard`) on one block or partition with
one native thread (one CPU per task)::

    scan       block  -> read + filter + content hash + MinHash + band keys
    exact      shuffle by content hash: per hash, the first document in input order is kept
    lsh        shuffle by (band, key): per bucket, candidate pairs (``candidate_pairs``,
               the local rule: all pairs, or star + chain past ``max_bucket``)
    verify     shuffle by pair: exact Jaccard of each pair (documents re-read from disk),
               then union-find over the partition's duplicate edges
    components up to ``COMPONENTS_ON_ONE_TASK`` duplicate pairs: union-find in one task;
               past it: min-label propagation over the star edges, partitioned by node
    finalize   block  -> kept documents, removed lists, tokens (``data prepare``)
    pack       the driver simulates packing over per-block *lengths* only, which fixes
               where every shard (and every piece of a shard) starts; then one task per
               piece packs its rows and writes them at their offset in the shard's files

The driver submits each stage before the previous one ends (Ray starts a task when its
inputs exist); it waits only for the duplicate count (which picks the components path) and
for the per-block lengths (the packing plan).

Why the output is identical: a document's id is its position in the input order
(``file index << 32 | JSONL line``), a monotone relabelling of the local path's ids, so
"first in input order" (exact dedup) and "smallest id" (the cluster root) pick the same
document, LSH buckets order their members the same way, and the candidate pairs, their
similarities and the clusters are the same sets. Packing depends on order, so the driver
replays the packer over document lengths block by block (holding 64 blocks of lengths at a
time) and each piece writer starts at an exact (document, offset) with an empty sequence.

Memory: the driver holds the input *paths* (not their contents), per-block counts, the
shard plan and the manifest. No task holds more than one block of texts or one partition of
hashes, band keys, pairs or edges (the one-task components: all star edges, only up to
``COMPONENTS_ON_ONE_TASK`` duplicate pairs), or more than one shard's rows. Outputs are written to a temporary directory inside
``--out`` and moved into place at the end (the manifest last).

Fault tolerance: tasks are retried by Ray (``max_retries``) when a worker dies; every task is
a pure function of its inputs, so a retried task produces the same objects. For tests,
``CODEGEN_CORE_RAY_FAULT_DIR`` (unset in normal use) names a directory: a file
``minhash-<block>`` there makes the scan task of that block kill its worker once, in the
MinHash stage; ``write-<shard>``, the writer of that shard's first rows once they are
written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import ray

from codegen_core._core import (
    band_keys,
    candidate_pairs,
    cluster_roots,
    exact_jaccard,
    signature_similarity,
)
from codegen_core.data import filters, sources
from codegen_core.data.filters import FilterStats
from codegen_core.data.lsh import NearDuplicateIndex
from codegen_core.data.minhash import minhash_signatures
from codegen_core.data.pack import PackConfig
from codegen_core.data.prepare import (
    MAX_EXAMPLES,
    REPORT,
    PrepareConfig,
    TokenizerLike,
    check_out_dir,
    load_tokenizer,
    manifest_metadata,
    tokens_report,
    tqdm,
)
from codegen_core.data.shards import (
    FIELDS,
    MANIFEST,
    file_sha256,
    shard_dtypes,
    shard_name,
    write_manifest,
)

FAULT_ENV = "CODEGEN_CORE_RAY_FAULT_DIR"
MAX_RETRIES = 3
PIECES_PER_WORKER = 2  # shard-writing tasks per worker, for an input of few shards
BLOCKS_PER_WORKER = 4  # blocks (scan and finalize tasks) per worker
FILE_COST = 4096  # a file's fixed cost (open, stat, a task's per-document work) in bytes
MIN_PIECE_ROWS = 256  # no smaller pieces (a task's fixed cost is ~10 ms)
# Up to this many duplicate pairs, connected components run as one union-find task (their
# star edges, 32 B a pair at most: <= 32 MB); past it, as label propagation over node
# partitions, so no node ever holds all the edges of a big corpus.
COMPONENTS_ON_ONE_TASK = 1 << 20
LENGTHS_PER_GET = 64  # blocks of document lengths the driver fetches at once
_LINE_BITS = 32  # id = file index << 32 | JSONL line number (0 for a whole file)
_MIX = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True)
class RayOptions:
    """Where and how wide the Ray engine runs."""

    address: str | None = None  # None: start a local Ray instance; else join this cluster
    num_workers: int = 0  # local instance: its CPUs (0: all); cluster: partitions (0: its CPUs)
    files_per_block: int = 0  # 0: ~4 blocks per worker of ~equal bytes, <= batch_documents files
    rows_per_piece: int = 0  # sequences per shard-writing task; 0: about 2 pieces per worker

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if self.rows_per_piece < 0:
            raise ValueError(f"rows_per_piece must be >= 0, got {self.rows_per_piece}")
        if self.files_per_block < 0:
            raise ValueError(f"files_per_block must be >= 0, got {self.files_per_block}")


@dataclass
class RayResult:
    report: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds
    workers: int = 0


@contextlib.contextmanager
def ray_session(options: RayOptions) -> Iterator[int]:
    """Start (or join) Ray for one run; yields the number of workers to plan for. A Ray
    already initialised in this process (a test fixture, a notebook) is used as it is."""
    started = False
    if not ray.is_initialized():
        if options.address:
            ray.init(address=options.address, logging_level="WARNING")
        else:
            ray.init(
                address="local",  # a new instance, even beside a `ray start` cluster
                num_cpus=options.num_workers or os.cpu_count() or 1,
                include_dashboard=False,
                logging_level="WARNING",
            )
        started = True
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        yield max(1, options.num_workers or cpus)
    finally:
        if started:
            ray.shutdown()


# ---- small helpers -----------------------------------------------------------------------


def _part(values: np.ndarray, parts: int) -> np.ndarray:
    """Partition of each uint64-like value (multiplicative hash, high bits)."""
    mixed = (values.astype(np.uint64) * _MIX) >> np.uint64(33)
    return (mixed % np.uint64(parts)).astype(np.int64)


def _block_of(ids: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Block of each document id (``starts``: first file index of every block)."""
    return np.searchsorted(starts, ids >> _LINE_BITS, side="right") - 1


def _cat(arrays: Sequence[np.ndarray], dtype: Any, width: int = 0) -> np.ndarray:
    arrays = [a for a in arrays if a.size]
    if arrays:
        return np.concatenate(arrays)
    return np.zeros((0, width) if width else (0,), dtype=dtype)


def _ret(outs: list[Any]) -> Any:
    """Ray returns one object as itself and several as a sequence."""
    return outs[0] if len(outs) == 1 else tuple(outs)


def _refs(result: Any) -> list[Any]:
    return list(result) if isinstance(result, list | tuple) else [result]


def _fault_point(stage: str, block: int) -> None:
    """Test hook: kill this worker once if ``$CODEGEN_CORE_RAY_FAULT_DIR/<stage>-<block>``
    exists (the fired marker makes the retry succeed)."""
    directory = os.environ.get(FAULT_ENV)
    if not directory or not (Path(directory) / f"{stage}-{block}").exists():
        return
    try:
        fd = os.open(Path(directory) / f"{stage}-{block}.fired", os.O_CREAT | os.O_EXCL)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)


@dataclass(frozen=True)
class _Table:
    """The documents of one block that passed the filters: id, where, content hash."""

    ids: np.ndarray  # int64 [n], ascending
    refs: list[sources.SourceRef]
    digests: np.ndarray  # uint8 [n, 16]
    signatures: np.ndarray | None  # uint32 [n, num_perm], only for verify="signature"


def _lookup(
    ids: np.ndarray, tables: list[Any], starts: np.ndarray
) -> tuple[list[sources.SourceRef], np.ndarray, list[np.ndarray]]:
    """Refs, digests and signature rows of the given ascending ids, fetched block by block."""
    blocks = _block_of(ids, starts)
    refs: list[sources.SourceRef] = []
    digests: list[np.ndarray] = []
    sigs: list[np.ndarray] = []
    for b in np.unique(blocks):
        table: _Table = ray.get(tables[int(b)])
        want = ids[blocks == b]
        pos = np.searchsorted(table.ids, want)
        found = table.ids[np.minimum(pos, table.ids.size - 1)] if table.ids.size else want + 1
        if np.any(found != want):
            raise RuntimeError(f"document ids missing from block {int(b)}")
        refs += [table.refs[int(i)] for i in pos]
        digests.append(table.digests[pos])
        if table.signatures is not None:
            sigs.append(table.signatures[pos])
    return refs, _cat(digests, np.uint8, 16), sigs


def _texts(
    refs: list[sources.SourceRef], digests: np.ndarray, config: PrepareConfig, *, as_text: bool
) -> list[sources.Document]:
    """Re-read documents that passed the scan (ValueError if one changed since)."""
    hashes = [d.tobytes() for d in digests]
    return sources.read_checked(refs, hashes, config.filters, as_text=as_text, num_threads=1)


_TOKENIZERS: dict[str, Future[TokenizerLike]] = {}
_TOKENIZERS_LOCK = threading.Lock()


def _load_tokenizer_soon(name: str) -> Future[TokenizerLike]:
    """This worker's tokenizer ``name``, loaded once, by a thread of its own: the warm-up
    starts it so that the load overlaps the scan stages instead of delaying them."""
    with _TOKENIZERS_LOCK:
        future = _TOKENIZERS.get(name)
        if future is None:
            future = _TOKENIZERS[name] = Future()

            def load(done: Future[TokenizerLike] = future) -> None:
                try:
                    done.set_result(load_tokenizer(name))
                except BaseException as e:  # noqa: BLE001 (handed to the task that waits)
                    done.set_exception(e)

            threading.Thread(target=load, name="codegen-core-tokenizer", daemon=True).start()
    return future


def _tokenizer(name: str) -> TokenizerLike:
    return _load_tokenizer_soon(name).result()


# ---- stage tasks -------------------------------------------------------------------------


def _block_refs(
    files: list[tuple[int, str]], config: PrepareConfig
) -> Iterator[tuple[int, sources.SourceRef, str | None]]:
    """What ``sources.iter_refs`` gives for each file, without a stat per plain file (a
    missing or dangling one is reported ``unreadable`` by ``read_block``, as locally)."""
    for index, name in files:
        base = name.rsplit("/", 1)[-1]
        listed: Iterable[tuple[sources.SourceRef, str | None]]
        if base.lower().endswith(sources.JSONL_SUFFIXES) and Path(name).exists():
            listed = sources.iter_refs([name], config.filters, ())
        elif not filters.extension_ok(base, config.filters):
            listed = [(sources.SourceRef(name), filters.EXTENSION)]
        else:
            listed = [(sources.SourceRef(name), None)]
        for ref, reason in listed:
            yield (index << _LINE_BITS) | max(ref.line, 0), ref, reason


@dataclass(frozen=True)
class _TokenizerInfo:
    """What the driver needs of the tokenizer (the manifest's ``vocab_size`` and
    ``eos_token_id``, the shard dtypes): read by a worker, which loads it anyway."""

    vocab_size: int
    eos_token_id: int


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _warm(config: PrepareConfig, tokenize: bool) -> None:
    """Per-process set-up that the first task would otherwise pay inside a stage: this
    module's imports (while the driver lists the files), and the tokenizer's load started."""
    config.minhash.lsh_params()
    if tokenize:
        _load_tokenizer_soon(config.tokenizer)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _scan_block(block: int, files: list[tuple[int, str]], config: PrepareConfig, parts: int) -> Any:
    """Read, filter and hash one block; MinHash and band keys of the documents kept.
    Returns (meta, table, band keys, ``parts`` exact-dedup partitions)."""
    listed = list(_block_refs(files, config))
    to_read = [ref for _, ref, reason in listed if reason is None]
    # One native call reads, filters and hashes the block (UTF-8 bytes, as the local scan).
    docs, reasons, hashes = sources.read_block(
        to_read, config.filters, as_text=False, num_threads=1
    )
    read = iter(zip(docs, reasons, hashes, strict=True))
    stats = FilterStats()
    ids: list[int] = []
    refs: list[sources.SourceRef] = []
    texts: list[sources.Document] = []
    kept_hashes: list[bytes] = []
    bytes_in = 0
    for doc_id, ref, listed_reason in listed:
        doc, reason, digest = next(read) if listed_reason is None else (None, listed_reason, None)
        stats.record(ref.name, reason)
        if doc is None or digest is None:
            continue
        bytes_in += len(doc)
        ids.append(doc_id)
        refs.append(ref)
        texts.append(doc)
        kept_hashes.append(digest)
    id_arr = np.asarray(ids, dtype=np.int64)
    digests = np.frombuffer(b"".join(kept_hashes), dtype=np.uint8).reshape(len(texts), 16)
    keys = None
    sigs_kept = None
    if config.near_dedup:
        _fault_point("minhash", block)
        mh = dataclasses.replace(config.minhash, num_threads=1)
        bands, rows = mh.lsh_params()
        sigs, counts = minhash_signatures(texts, mh)
        keys = (band_keys(np.ascontiguousarray(sigs, dtype=np.uint32), bands, rows, 1), counts == 0)
        if mh.verify == "signature":
            sigs_kept = np.asarray(sigs, dtype=np.uint32)
    table = _Table(id_arr, refs, digests, sigs_kept)
    part = _part(digests[:, :8].copy().view(np.uint64).ravel(), parts) if texts else id_arr
    outs: list[Any] = [(stats, bytes_in, len(texts)), table, keys]
    for p in range(parts):
        sel = np.flatnonzero(part == p)
        outs.append((digests[sel], id_arr[sel], [refs[int(i)].name for i in sel]))
    return tuple(outs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _exact_reduce(starts: np.ndarray, *parts: Any) -> Any:
    """One hash partition: per content hash, keep the first id; return the removed ones
    (id, name, kept name) split by block."""
    digests = _cat([p[0] for p in parts], np.uint8, 16)
    ids = _cat([p[1] for p in parts], np.int64)
    names = [n for p in parts for n in p[2]]
    words = np.ascontiguousarray(digests).view(np.uint64).reshape(-1, 2)
    order = np.lexsort((ids, words[:, 1], words[:, 0]))
    w = words[order]
    first = np.ones(order.size, dtype=bool)
    first[1:] = np.any(w[1:] != w[:-1], axis=1)
    group_start = np.maximum.accumulate(np.where(first, np.arange(order.size), 0))
    removed = np.flatnonzero(~first)
    rem_ids = ids[order[removed]]
    rem_names = [names[int(order[i])] for i in removed]
    kept_names = [names[int(order[group_start[i]])] for i in removed]
    blocks = _block_of(rem_ids, starts)
    outs = []
    for b in range(starts.size):
        sel = np.flatnonzero(blocks == b)
        outs.append((rem_ids[sel], [rem_names[i] for i in sel], [kept_names[i] for i in sel]))
    return _ret(outs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _lsh_map(table: _Table, keys: Any, parts: int, *removed_parts: Any) -> Any:
    """One block after exact dedup: its survivors, and its band keys split by bucket."""
    rem_ids = _cat([p[0] for p in removed_parts], np.int64)
    rem_names = [n for p in removed_parts for n in p[1]]
    kept_names = [n for p in removed_parts for n in p[2]]
    order = np.argsort(rem_ids, kind="stable")
    exact = [(rem_names[i], kept_names[i]) for i in order]
    survive = ~np.isin(table.ids, rem_ids)
    outs: list[Any] = [(table.ids[survive], exact)]
    if keys is not None and parts:
        band_key, empty = keys
        sel = survive & ~empty
        k = band_key[sel]  # [m, bands]
        bands = k.shape[1]
        flat_keys = k.ravel()
        flat_bands = np.tile(np.arange(bands, dtype=np.int32), k.shape[0])
        flat_ids = np.repeat(table.ids[sel], bands)
        part = _part(flat_keys, parts)
        for p in range(parts):
            s = part == p
            outs.append((flat_bands[s], flat_keys[s], flat_ids[s]))
    return _ret(outs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _lsh_reduce(max_bucket: int, parts: int, *buckets: Any) -> Any:
    """One bucket partition: candidate pairs of every (band, key) bucket, by the local rule,
    split by pair for verification."""
    bands = _cat([b[0] for b in buckets], np.int32)
    keys = _cat([b[1] for b in buckets], np.uint64)
    ids = _cat([b[2] for b in buckets], np.int64)
    found = []
    for band in np.unique(bands):
        sel = bands == band
        band_ids, band_keys_ = ids[sel], keys[sel]
        if band_ids.size < 2:
            continue
        order = np.argsort(band_ids)  # local index order == input order
        band_ids = band_ids[order]
        local = candidate_pairs(
            np.ascontiguousarray(band_keys_[order].reshape(-1, 1)), None, max_bucket, 1
        )
        found.append(band_ids[local.astype(np.int64)])
    pairs = _cat(found, np.int64, 2)
    if pairs.size:
        pairs = np.unique(pairs, axis=0)
    part = _part(pairs[:, 0] * np.int64(1_000_003) + pairs[:, 1], parts)
    return _ret([pairs[part == p] for p in range(parts)])


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _verify(
    config: PrepareConfig, tables: list[Any], starts: np.ndarray, parts: int, *pair_parts: Any
) -> Any:
    """One pair partition: verify candidates (as ``NearDuplicateIndex``), union-find the
    duplicate edges, and send the resulting star edges (both ways) to their node partition."""
    pairs = _cat(list(pair_parts), np.int64, 2)
    if pairs.size:
        pairs = np.unique(pairs, axis=0)
    mh = config.minhash
    if mh.verify == "none":
        duplicate = np.ones(pairs.shape[0], dtype=bool)
    else:
        similarity = np.empty(pairs.shape[0], dtype=np.float64)
        step = NearDuplicateIndex.VERIFY_CHUNK
        for start in range(0, pairs.shape[0], step):
            chunk = pairs[start : start + step]
            involved = np.unique(chunk)
            local = np.searchsorted(involved, chunk).astype(np.uint32)
            refs, digests, sigs = _lookup(involved, tables, starts)
            if mh.verify == "signature":
                sim = signature_similarity(np.concatenate(sigs), local, 1)
            else:
                sim = exact_jaccard(
                    _texts(refs, digests, config, as_text=False), local, mh.ngram, 1
                )
            similarity[start : start + chunk.shape[0]] = sim
        duplicate = similarity >= mh.threshold
    edges = pairs[duplicate]
    nodes = np.unique(edges)
    local_edges = np.searchsorted(nodes, edges).astype(np.uint32)
    roots = nodes[
        cluster_roots(nodes.size, np.ascontiguousarray(local_edges), None).astype(np.int64)
    ]
    star = np.flatnonzero(roots != nodes)
    src = np.concatenate([nodes[star], roots[star]])
    dst = np.concatenate([roots[star], nodes[star]])
    part = _part(src, parts)
    outs: list[Any] = [(int(pairs.shape[0]), int(np.count_nonzero(duplicate)))]
    outs += [(src[part == p], dst[part == p]) for p in range(parts)]
    return tuple(outs)


def _messages(
    src: np.ndarray, dst: np.ndarray, label_of_src: np.ndarray, parts: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(node, proposed label) for every edge whose label can lower its target, split by part."""
    useful = label_of_src < dst  # a label never exceeds its node, so others cannot help
    to, lab = dst[useful], label_of_src[useful]
    part = _part(to, parts)
    return [(to[part == p], lab[part == p]) for p in range(parts)]


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _cc_init(parts: int, *edge_parts: Any) -> Any:
    """One node partition: its adjacency, labels = min(node, neighbours), first messages."""
    src = _cat([e[0] for e in edge_parts], np.int64)
    dst = _cat([e[1] for e in edge_parts], np.int64)
    if src.size:
        both = np.unique(np.stack([src, dst], axis=1), axis=0)  # sorted by src
        src, dst = both[:, 0].copy(), both[:, 1].copy()
    nodes, first = np.unique(src, return_index=True)
    labels = np.minimum(nodes, np.minimum.reduceat(dst, first)) if src.size else nodes
    where = np.searchsorted(nodes, src)
    msgs = _messages(src, dst, labels[where], parts)
    sent = sum(m[0].size for m in msgs)
    return (sent, (nodes, labels, src, dst, where), *msgs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _cc_round(parts: int, state: Any, *inbox: Any) -> Any:
    """One round of min-label propagation for one node partition."""
    nodes, labels, src, dst, where = state
    to = _cat([m[0] for m in inbox], np.int64)
    lab = _cat([m[1] for m in inbox], np.int64)
    labels = labels.copy()
    pos = np.searchsorted(nodes, to)
    before = labels.copy()
    np.minimum.at(labels, pos, lab)
    changed = labels < before
    active = changed[where]
    msgs = _messages(src[active], dst[active], labels[where[active]], parts)
    sent = sum(m[0].size for m in msgs)
    return (sent, (nodes, labels, src, dst, where), *msgs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _cc_finish(starts: np.ndarray, parts: int, state: Any) -> Any:
    """Removed documents (node, root): by block for finalize, by root for cluster stats."""
    nodes, labels, _, _, _ = state
    removed = labels != nodes
    node, root = nodes[removed], labels[removed]
    blocks = _block_of(node, starts)
    outs = [(node[blocks == b], root[blocks == b]) for b in range(starts.size)]
    part = _part(root, parts)
    outs += [(root[part == p], node[part == p]) for p in range(parts)]
    return _ret(outs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _cluster_stats(*parts: Any) -> tuple[int, int, list[tuple[int, int, list[int]]]]:
    """One root partition: number of clusters and removed documents, and its largest
    clusters as (size, root, first removed members)."""
    root = _cat([p[0] for p in parts], np.int64)
    node = _cat([p[1] for p in parts], np.int64)
    return _cluster_summary(root, node)


def _cluster_summary(
    root: np.ndarray, node: np.ndarray
) -> tuple[int, int, list[tuple[int, int, list[int]]]]:
    """(clusters, removed documents, the largest clusters as (size, root, first members))
    of the removed documents ``node`` and their cluster roots ``root``."""
    order = np.lexsort((node, root))
    root, node = root[order], node[order]
    roots, first, counts = np.unique(root, return_index=True, return_counts=True)
    top = np.lexsort((roots, -counts))[:MAX_EXAMPLES]
    examples = [
        (int(counts[i]) + 1, int(roots[i]), node[first[i] : first[i] + min(5, counts[i])].tolist())
        for i in top
    ]
    return int(roots.size), int(node.size), examples


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _cc_one_task(starts: np.ndarray, tables: list[Any], *edge_parts: Any) -> Any:
    """All components in one task, for a small edge set (``COMPONENTS_ON_ONE_TASK``):
    union-find over the verify stage's star edges. Returns what ``_cc_finish`` gives per
    block, then (clusters, removed, largest clusters, {id: name} of their documents)."""
    src = _cat([e[0] for e in edge_parts], np.int64)
    dst = _cat([e[1] for e in edge_parts], np.int64)
    nodes = np.unique(np.concatenate([src, dst]))
    one_way = src < dst  # every star edge comes both ways; cluster_roots takes i < j
    src, dst = src[one_way], dst[one_way]
    local = np.stack([np.searchsorted(nodes, src), np.searchsorted(nodes, dst)], axis=1)
    smallest = cluster_roots(nodes.size, np.ascontiguousarray(local, dtype=np.uint32), None)
    roots = nodes[smallest.astype(np.int64)]  # the smallest id of the component
    removed = roots != nodes
    node, root = nodes[removed], roots[removed]
    blocks = _block_of(node, starts)
    outs: list[Any] = [(node[blocks == b], root[blocks == b]) for b in range(starts.size)]
    clusters, num_removed, top = _cluster_summary(root, node)
    wanted = np.unique(np.asarray([i for e in top for i in (e[1], *e[2])], dtype=np.int64))
    refs, _, _ = _lookup(wanted, tables, starts)
    names = dict(zip(wanted.tolist(), [r.name for r in refs], strict=True))
    outs.append((clusters, num_removed, top, names))
    return _ret(outs)


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _names(ids: np.ndarray, tables: list[Any], starts: np.ndarray) -> list[str]:
    refs, _, _ = _lookup(ids, tables, starts)
    return [r.name for r in refs]


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _finalize(  # noqa: PLR0917 (Ray passes task arguments by position)
    config: PrepareConfig,
    tokenize: bool,
    table: _Table,
    survivors: Any,
    tables: list[Any],
    starts: np.ndarray,
    *near_parts: Any,
) -> Any:
    """One block: kept documents, the removed lists, and (prepare) the kept documents'
    tokens. Returns (info, lengths int64 [kept], tokens [sum of lengths] in the shard dtype)."""
    ids, exact = survivors
    node = _cat([p[0] for p in near_parts], np.int64)
    root = _cat([p[1] for p in near_parts], np.int64)
    order = np.argsort(node)
    node, root = node[order], root[order]
    pos = np.searchsorted(table.ids, ids)
    kept = pos[~np.isin(ids, node)]
    near_lines = []
    if node.size:
        node_names = [table.refs[int(i)].name for i in np.searchsorted(table.ids, node)]
        uniq, inverse = np.unique(root, return_inverse=True)
        root_refs, _, _ = _lookup(uniq, tables, starts)
        near_lines = [
            f"{n}\tnear\t{root_refs[int(i)].name}" for n, i in zip(node_names, inverse, strict=True)
        ]
    info = {
        "kept": [table.refs[int(i)].name for i in kept],
        "exact": [f"{r}\texact\t{k}" for r, k in exact],
        "exact_pairs": exact[:MAX_EXAMPLES],
        "near": near_lines,
        "tokens": 0,
        "tokenizer": None,
    }
    lengths = np.zeros(0, dtype=np.int64)
    tokens = np.zeros(0, dtype=np.int32)
    if tokenize:
        tok = _tokenizer(config.tokenizer)
        info["tokenizer"] = _TokenizerInfo(int(tok.vocab_size), int(tok.eos_token_id))
        dtype = shard_dtypes(tok.vocab_size, config.pack.seq_len)[0]  # uint16 for CodeGen's
        lens: list[np.ndarray] = []
        flat: list[np.ndarray] = []
        for start in range(0, kept.size, config.batch_documents):
            chunk = kept[start : start + config.batch_documents]
            texts = _texts(
                [table.refs[int(i)] for i in chunk], table.digests[chunk], config, as_text=True
            )
            if hasattr(tok, "encode_batch_flat"):
                ids_flat, offsets = tok.encode_batch_flat(
                    texts, disallowed_special=(), num_threads=1
                )
                flat.append(np.asarray(ids_flat).astype(dtype))
                lens.append(np.diff(np.asarray(offsets, dtype=np.int64)))
            else:
                encoded = tok.encode_ordinary_batch(texts)
                flat += [np.asarray(e, dtype=dtype) for e in encoded]
                lens.append(np.asarray([len(e) for e in encoded], dtype=np.int64))
        lengths = _cat(lens, np.int64)
        tokens = _cat(flat, dtype)
        info["tokens"] = int(lengths.sum()) + int(lengths.size)
    return info, lengths, tokens


def _pack_rows(
    blocks: list[Any],
    start: tuple[int, int],
    rows: tuple[np.ndarray, np.ndarray, np.ndarray],
    pack: PackConfig,
    last: bool,
) -> int:
    """:class:`Packer` from document ``start[0]`` of ``blocks[0]``, token ``start[1]`` of it
    (counting its EOS), with an empty sequence, straight into ``rows`` (tokens, segment ids,
    positions; each [count, seq_len], already filled with padding): every document piece is
    one slice assignment, no per-sequence arrays. ``last``: the final partial sequence is
    padded (``final="pad"``) as ``Packer.finish`` does. Returns the rows filled."""
    tokens_out, segments_out, positions_out = rows
    count, n = tokens_out.shape
    arange = np.arange(n, dtype=positions_out.dtype)
    row = fill = segment = 0
    doc, offset = start
    for lengths_ref, tokens_ref in blocks:
        lengths, tokens = ray.get([lengths_ref, tokens_ref])
        bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
        for d in range(doc, lengths.size):
            src, end = bounds[d] + offset, bounds[d + 1]  # the document's EOS sits at `end`
            size = end + 1 - src
            offset = 0
            while size:
                take = min(size, n - fill)
                real = min(take, end - src)  # document tokens; the rest (0 or 1) is EOS
                if real:
                    tokens_out[row, fill : fill + real] = tokens[src : src + real]
                if real < take:
                    tokens_out[row, fill + real] = pack.eos_id
                segment += 1
                segments_out[row, fill : fill + take] = segment
                positions_out[row, fill : fill + take] = arange[:take]
                fill += take
                src += take
                size -= take
                if fill == n:
                    row += 1
                    fill = segment = 0
                    if row == count:
                        return row
                if size and size < pack.min_tail:  # a short tail is dropped
                    break
        doc = 0
    if last and fill and pack.final == "pad":
        row += 1  # already padded: pad_id, segment 0, position 0
    return row


def _create_npy(path: Path, dtype: np.dtype, shape: tuple[int, int]) -> None:
    """An ``.npy`` file with ``np.save``'s header for this array, at full size (zeros,
    sparse): the shard pieces write their rows into it."""
    header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    with path.open("wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        file.truncate(file.tell() + dtype.itemsize * shape[0] * shape[1])


def _shard_paths(out_dir: str, shard: int) -> dict[str, Path]:
    return {f: Path(out_dir) / f"{shard_name(shard)}.{f}.npy" for f in FIELDS}


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _write_piece(  # noqa: PLR0917 (Ray passes task arguments by position)
    out_dir: str,
    shard: int,
    first_row: int,
    count: int,
    last: bool,
    start: tuple[int, int],
    blocks: list[Any],
    pack: PackConfig,
    dtypes: tuple[np.dtype, np.dtype],
    shard_rows: int,
) -> dict[str, str] | None:
    """Pack rows ``first_row .. first_row + count`` of shard ``shard`` (its files exist, with
    their ``.npy`` headers, at full size: ``shard_rows``) and write them in place. A piece
    that is the whole shard also returns the files' sha256 (else the driver's hash tasks
    do, once every piece is in)."""
    paths = _shard_paths(out_dir, shard)
    width = pack.seq_len
    rows = (
        np.full((count, width), pack.pad_id, dtype=dtypes[0]),
        np.zeros((count, width), dtype=dtypes[1]),
        np.zeros((count, width), dtype=dtypes[1]),
    )
    done = _pack_rows(blocks, start, rows, pack, last)
    if done != count:
        raise RuntimeError(
            f"shard {shard}: packed {done} rows from row {first_row}, planned {count}"
        )
    for f, arr in zip(FIELDS, rows, strict=True):
        with paths[f].open("r+b") as file:
            fmt = np.lib.format
            version = fmt.read_magic(file)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            header = read(file)
            if header != ((shard_rows, width), False, arr.dtype):
                raise RuntimeError(f"{paths[f]}: header {header}, expected {shard_rows} rows")
            data = memoryview(arr).cast("B")
            offset = file.tell() + first_row * data.nbytes // count
            while data:  # one pwrite in practice
                written = os.pwrite(file.fileno(), data, offset)
                data, offset = data[written:], offset + written
    whole = count == shard_rows
    hashes = {f: file_sha256(paths[f]) for f in FIELDS} if whole else None
    if first_row == 0:
        _fault_point("write", shard)  # tests: die after writing, before reporting (then redone)
    return hashes


@ray.remote(num_cpus=1, max_retries=MAX_RETRIES)
def _hash_file(path: str, *pieces: Any) -> str:
    """sha256 of one shard file, once the pieces (``pieces``: their results) are written."""
    del pieces
    return file_sha256(Path(path))


# ---- the driver --------------------------------------------------------------------------


class _PackPlan:
    """The packer replayed over document lengths: its statistics, and where each shard's
    first sequence starts. Must match :meth:`Packer.add` / :meth:`Packer.finish` exactly."""

    def __init__(
        self, config: PackConfig, sequences_per_shard: int, rows_per_piece: int = 0
    ) -> None:
        self.n, self.min_tail, self.final = config.seq_len, config.min_tail, config.final
        self.per_shard = sequences_per_shard
        # A shard is written as pieces of this many rows (the last piece of a shard: the
        # rest), each by its own task; 0: one piece per shard.
        self.step = min(rows_per_piece or sequences_per_shard, sequences_per_shard)
        self.fill = 0
        self.documents = self.tokens_in = self.dropped = self.tails = 0
        self.sequences = self.padding = 0
        self.starts: list[tuple[int, int, int]] = []  # (block, document, offset) per piece
        self.first_rows: list[int] = []  # the sequence each piece starts with
        self._next = 0  # the sequence the next piece starts with

    def pieces(self) -> Iterator[tuple[int, int, int, tuple[int, int, int]]]:
        """(shard, first row in the shard, rows, where it starts) of every piece."""
        for start, first in zip(self.starts, self.first_rows, strict=True):
            if first >= self.sequences:  # a start whose sequence was dropped at the end
                break
            shard, row = divmod(first, self.per_shard)
            rows = min(self.step, self.per_shard - row, self.sequences - first)
            yield shard, row, rows, start

    def add(self, block: int, lengths: np.ndarray) -> None:
        n = self.n
        for d, length in enumerate(lengths.tolist()):
            size = length + 1
            self.documents += 1
            self.tokens_in += size
            offset = 0
            while size:
                if self.fill == 0 and self.sequences == self._next:
                    self.starts.append((block, d, offset))
                    self.first_rows.append(self._next)
                    row = self._next % self.per_shard
                    self._next += min(self.step, self.per_shard - row)
                space = n - self.fill
                if size <= space:
                    self.fill += size
                    if self.fill == n:
                        self.sequences += 1
                        self.fill = 0
                    break
                self.sequences += 1
                self.fill = 0
                offset += space
                size -= space
                if size < self.min_tail:
                    self.dropped += size
                    self.tails += 1
                    break

    def finish(self) -> None:
        if self.fill == 0:
            return
        if self.final == "drop":
            self.dropped += self.fill
        else:
            self.sequences += 1
            self.padding += self.n - self.fill
        self.fill = 0

    @property
    def num_shards(self) -> int:
        return -(-self.sequences // self.per_shard)


def _walk_names(root: Path, exclude_dirs: tuple[str, ...]) -> Iterator[str]:
    """``sources._walk``'s paths (same order, same spelling) as strings, without a Path per
    file: the driver lists millions of them."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        prefix = str(Path(dirpath))
        prefix = "" if prefix == "." else prefix if prefix.endswith("/") else prefix + "/"
        for name in sorted(filenames):
            yield prefix + name


def _file_weight(name: str, config: PrepareConfig) -> int:
    """About the work a file makes (bytes the stages read and tokenize): its size if the
    filters read it, plus a fixed cost per file."""
    size = 0
    base = name.rsplit("/", 1)[-1]
    if base.lower().endswith(sources.JSONL_SUFFIXES) or filters.extension_ok(base, config.filters):
        with contextlib.suppress(OSError):  # unreadable: reported by the scan, as locally
            size = os.stat(name).st_size  # noqa: PTH116 (no Path object per listed file)
        if size > config.filters.max_file_bytes and not base.lower().endswith(
            sources.JSONL_SUFFIXES
        ):
            size = 0  # dropped unread (too large)
    return size + FILE_COST


def _blocks_by_size(
    indexed: list[tuple[int, str]], config: PrepareConfig, count: int
) -> list[list[tuple[int, str]]]:
    """Consecutive runs of files of about equal weight (one stat per file), about ``count``
    of them, each at most ``batch_documents`` files, so that the tasks of a stage take about
    the same time (runs of equal file counts differ up to 8x in bytes on the stdlib)."""
    if not indexed:
        return [[]]
    weights = np.asarray([_file_weight(name, config) for _, name in indexed], dtype=np.int64)
    target = max(1, int(weights.sum()) // max(1, count))
    blocks: list[list[tuple[int, str]]] = []
    begin = acc = 0
    for i, w in enumerate(weights.tolist()):
        acc += w
        if acc >= target or i + 1 - begin == config.batch_documents:
            blocks.append(indexed[begin : i + 1])
            begin, acc = i + 1, 0
    if begin < len(indexed):
        blocks.append(indexed[begin:])
    return blocks


def _list_files(inputs: Sequence[str | Path], exclude_dirs: tuple[str, ...]) -> list[str]:
    roots = [Path(p) for p in inputs]
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
    files: list[str] = []
    for root in roots:
        if root.is_dir():
            files += _walk_names(root, exclude_dirs)
        else:
            files.append(str(root))
    return files


class _Stages:
    """Per-stage progress (tasks done) and wall time."""

    def __init__(self, progress: bool) -> None:
        self.progress = progress
        self.timings: dict[str, float] = {}
        self.tokenizer: _TokenizerInfo | None = None  # from the finalize tasks
        self.tokens = 0  # tokens of the kept documents, with their EOS (data prepare)

        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        """Stage ``name`` ends now: its time is the wall time since the previous one ended."""
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self._last
        self._last = now

    def wait(self, name: str, refs: list[Any]) -> None:
        bar = tqdm(total=len(refs), desc=f"ray {name}", unit=" tasks", disable=not self.progress)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            ray.get(done)  # raise a task's error here
            bar.update(len(done))
        bar.close()
        self.mark(name)


def _run(
    inputs: Sequence[str | Path],
    config: PrepareConfig,
    workers: int,
    options: RayOptions,
    *,
    tokenize: bool,
    progress: bool,
) -> tuple[dict[str, Any], list[Any], _Stages]:
    """Scan, dedup and (``tokenize``) tokenize; returns the dedup report, the finalize
    results (info, lengths, tokens refs) per block, and the stage timings.

    Every stage is submitted as soon as the driver knows its tasks, before the previous
    ones finish (Ray starts a task once its inputs exist): the driver waits only where it
    needs a result (the duplicate count that picks the components path, the counts); the
    progress bars and timings follow the stages in order."""
    st = _Stages(progress)
    parts = max(1, workers)
    # Workers import this module (and start loading the tokenizer) while the driver lists.
    warm = [_warm.remote(config, tokenize) for _ in range(workers)]
    files = _list_files(inputs, config.exclude_dirs)
    indexed = list(enumerate(files))
    if options.files_per_block:
        per_block = options.files_per_block
        blocks = [indexed[s : s + per_block] for s in range(0, max(len(files), 1), per_block)]
    else:
        blocks = _blocks_by_size(indexed, config, BLOCKS_PER_WORKER * workers)
    nb = len(blocks)
    # What many tasks take goes into the object store once: a task argument that is an
    # object ref is sent as the ref (the driver pickled the block tables' refs once per
    # finalize task before: blocks^2 refs, ~1 s of the driver's CPU at 76 blocks).
    starts = ray.put(np.asarray([b[0][0] if b else 0 for b in blocks], dtype=np.int64))
    shared_config = ray.put(config)
    st.mark("list")

    scanned = [
        _refs(_scan_block.options(num_returns=3 + parts).remote(i, b, shared_config, parts))
        for i, b in enumerate(blocks)
    ]
    exact = [
        _refs(_exact_reduce.options(num_returns=nb).remote(starts, *[s[3 + p] for s in scanned]))
        for p in range(parts)
    ]
    near = config.near_dedup
    lsh_parts = parts if near else 0
    mapped = [
        _refs(
            _lsh_map.options(num_returns=1 + lsh_parts).remote(
                scanned[b][1], scanned[b][2], lsh_parts, *[e[b] for e in exact]
            )
        )
        for b in range(nb)
    ]
    # Objects live while a pending task or the driver refers to them: the driver keeps only
    # what it reads (one small object per task, for progress) once the consumers exist.
    scan_done = [s[0] for s in scanned]
    tables = ray.put([s[1] for s in scanned])  # the refs of every block's table
    block_tables = [s[1] for s in scanned]
    exact_done = [e[0] for e in exact]
    survivors = [m[0] for m in mapped]
    buckets = [m[1:] for m in mapped]
    del scanned, exact, mapped
    bucket_done: list[Any] = []
    verified: list[list[Any]] = []
    if near:
        bucket_done, verified = _submit_lsh(
            config, parts=parts, buckets=buckets, tables=tables, starts=starts
        )

    st.wait("scan+minhash", scan_done)
    ray.get(warm)
    metas = ray.get(scan_done)
    del scan_done
    st.wait("exact-dedup", exact_done)
    del exact_done
    st.wait("lsh-map", survivors)
    near_by_block: list[list[Any]] = [[] for _ in range(nb)]
    near_report = None
    if near:
        st.wait("lsh-buckets", bucket_done)
        del bucket_done
        near_by_block, near_report = _near(
            config, parts=parts, nb=nb, verified=verified, tables=tables, starts=starts, st=st
        )

    final = [
        _refs(
            _finalize.options(num_returns=3).remote(
                shared_config,
                tokenize,
                block_tables[b],
                survivors[b],
                tables,
                starts,
                *near_by_block[b],
            )
        )
        for b in range(nb)
    ]
    del survivors, near_by_block, block_tables
    near_result = near_report() if near_report is not None else {"enabled": False}
    st.wait("finalize+tokenize" if tokenize else "finalize", [f[0] for f in final])

    stats = FilterStats()
    bytes_in = 0
    for meta in metas:
        stats.merge(meta[0])
        bytes_in += meta[1]
    exact_examples: list[dict[str, str]] = []
    removed_exact = kept = 0
    for first in range(0, nb, LENGTHS_PER_GET):  # a bounded number of blocks' names at once
        for info in ray.get([f[0] for f in final[first : first + LENGTHS_PER_GET]]):
            removed_exact += len(info["exact"])
            st.tokens += info["tokens"]
            st.tokenizer = st.tokenizer or info["tokenizer"]
            kept += len(info["kept"])
            for r, k in info["exact_pairs"]:
                if len(exact_examples) < MAX_EXAMPLES:
                    exact_examples.append({"removed": r, "kept": k})
    report = {
        "filters": stats.as_dict(),
        "exact_dedup": {"removed": removed_exact, "examples": exact_examples},
        "near_dedup": near_result,
        "documents_kept": kept,
        "bytes_after_filters": bytes_in,
    }
    return report, final, st


def _components(
    st: _Stages,
    *,
    parts: int,
    nb: int,
    edges: list[list[Any]],
    tables: Any,  # object ref: the list of every block table's ref
    starts: Any,  # object ref: the first file index of every block
) -> tuple[list[Any], list[list[Any]], list[Any], dict[int, str]]:
    """Connected components by min-label propagation over node partitions, one task wave
    per round until no label changes; returns the cluster stats per root partition, the
    removed (node, root) objects per block, the largest clusters and their ids' names."""
    rounds = [
        _refs(_cc_init.options(num_returns=2 + parts).remote(parts, *[e[q] for e in edges]))
        for q in range(parts)
    ]
    edges.clear()  # the caller's list: the edge partitions are freed once read
    num_rounds = 0
    while sum(ray.get([r[0] for r in rounds])):
        num_rounds += 1
        rounds = [
            _refs(
                _cc_round.options(num_returns=2 + parts).remote(
                    parts, rounds[q][1], *[r[2 + q] for r in rounds]
                )
            )
            for q in range(parts)
        ]
    finished = [
        _refs(_cc_finish.options(num_returns=nb + parts).remote(starts, parts, r[1]))
        for r in rounds
    ]
    cluster = ray.get([_cluster_stats.remote(*[f[nb + p] for f in finished]) for p in range(parts)])
    st.wait("components", [f[0] for f in finished])
    st.timings["components_rounds"] = float(num_rounds + 1)
    top = sorted((e for c in cluster for e in c[2]), key=lambda e: (-e[0], e[1]))[:MAX_EXAMPLES]
    wanted = np.unique(np.asarray([i for e in top for i in (e[1], *e[2])], dtype=np.int64))
    names = dict(zip(wanted.tolist(), ray.get(_names.remote(wanted, tables, starts)), strict=True))
    return cluster, [[f[b] for f in finished] for b in range(nb)], top, names


def _submit_lsh(
    config: PrepareConfig,
    *,
    parts: int,
    buckets: list[list[Any]],
    tables: Any,  # object ref: the list of every block table's ref
    starts: Any,  # object ref: the first file index of every block
) -> tuple[list[Any], list[list[Any]]]:
    """Submit the LSH bucket and verify stages; returns one object per bucket task (for
    progress) and the verify tasks' results (counts, then edges by node partition)."""
    reduced = [
        _refs(
            _lsh_reduce.options(num_returns=parts).remote(
                config.minhash.max_bucket, parts, *[b[p] for b in buckets]
            )
        )
        for p in range(parts)
    ]
    buckets.clear()  # the caller's list: the bucket partitions are freed once reduced
    verified = [
        _refs(
            _verify.options(num_returns=1 + parts).remote(
                config, tables, starts, parts, *[r[p] for r in reduced]
            )
        )
        for p in range(parts)
    ]
    return [r[0] for r in reduced], verified


def _near(
    config: PrepareConfig,
    *,
    parts: int,
    nb: int,
    verified: list[list[Any]],
    tables: Any,  # object ref: the list of every block table's ref
    starts: Any,  # object ref: the first file index of every block
    st: _Stages,
) -> tuple[list[list[Any]], Callable[[], dict[str, Any]]]:
    """Wait for verify, submit connected components; returns the removed (node, root)
    objects per block and a function that gives the near-dedup report (waiting for the
    components when they ran as one task, so the caller submits finalize first)."""
    st.wait("verify", [v[0] for v in verified])
    counts = ray.get([v[0] for v in verified])
    edges = [v[1:] for v in verified]
    verified.clear()  # the caller's list: the edges are freed once read
    duplicate_pairs = sum(c[1] for c in counts)
    if duplicate_pairs <= COMPONENTS_ON_ONE_TASK:
        one = _refs(
            _cc_one_task.options(num_returns=nb + 1).remote(
                starts, tables, *[e for v in edges for e in v]
            )
        )
        del edges
        by_block = [[one[b]] for b in range(nb)]
        summary_ref = one[nb]

        def summary() -> tuple[list[Any], list[Any], dict[int, str]]:
            st.wait("components", [summary_ref])
            st.timings["components_rounds"] = 1.0  # one task wave
            clusters, removed, top, names = ray.get(summary_ref)
            return [(clusters, removed, top)], top, names

    else:
        cluster, by_block, top, names = _components(
            st, parts=parts, nb=nb, edges=edges, tables=tables, starts=starts
        )

        def summary() -> tuple[list[Any], list[Any], dict[int, str]]:
            return cluster, top, names

    def report() -> dict[str, Any]:
        cluster, top, names = summary()
        bands, rows = config.minhash.lsh_params()
        return {
            "enabled": True,
            "config": dataclasses.asdict(config.minhash),
            "bands": bands,
            "rows": rows,
            "candidate_pairs": sum(c[0] for c in counts),
            "duplicate_pairs": duplicate_pairs,
            "clusters": sum(c[0] for c in cluster),
            "removed": sum(c[1] for c in cluster),
            "examples": [
                {"size": size, "kept": names[root], "removed": [names[i] for i in members]}
                for size, root, members in top
            ],
        }

    return by_block, report


def prepare(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    options: RayOptions | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> RayResult:
    """:func:`codegen_core.data.prepare.prepare` on Ray: the same files, byte for byte."""
    config = config if config is not None else PrepareConfig()
    options = options if options is not None else RayOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_out_dir(out, overwrite, delete=False)
    if (
        config.tokenizer not in ("codegen", "codegen2", "gpt2")
        and not Path(config.tokenizer).is_file()
    ):
        load_tokenizer(config.tokenizer)  # raises, naming the choices
    # The driver needs only the tokenizer's vocabulary size and EOS: the workers load the
    # tokenizer anyway and report both (a second load here would compete with them for CPU).
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-ray-", dir=out))
    try:
        with ray_session(options) as workers:
            report, final, st = _run(
                inputs, config, workers, options, tokenize=True, progress=progress
            )
            tok = st.tokenizer
            if tok is None:  # _run(tokenize=True) always reads it; never expected
                raise RuntimeError("the Ray workers did not report the tokenizer")
            if tok.eos_token_id != config.pack.eos_id:
                eos = tok.eos_token_id
                raise ValueError(f"tokenizer EOS {eos} != pack eos_id {config.pack.eos_id}")
            per_shard = config.sequences_per_shard
            # Shards are written in pieces so that every worker packs (a small input has
            # one or two shards); a big input has many shards, each one piece.
            rows = options.rows_per_piece or max(
                MIN_PIECE_ROWS, -(-st.tokens // (config.pack.seq_len * PIECES_PER_WORKER * workers))
            )
            plan = _PackPlan(config.pack, per_shard, rows)
            for first in range(0, len(final), LENGTHS_PER_GET):  # bounded driver memory
                chunk = ray.get([f[1] for f in final[first : first + LENGTHS_PER_GET]])
                for b, lengths in enumerate(chunk, first):
                    plan.add(b, lengths)
            plan.finish()
            dtypes = shard_dtypes(tok.vocab_size, config.pack.seq_len)
            token_refs = [(f[1], f[2]) for f in final]
            del final
            shard_rows = [
                min(per_shard, plan.sequences - k * per_shard) for k in range(plan.num_shards)
            ]
            for k, n in enumerate(shard_rows):  # the files at full size, for the pieces
                for f, path in _shard_paths(str(tmp), k).items():
                    dtype = dtypes[0] if f == "tokens" else dtypes[1]
                    shape = (n, config.pack.seq_len)
                    _create_npy(path, np.dtype(dtype), shape)
            pieces = list(plan.pieces())
            written: list[list[Any]] = [[] for _ in shard_rows]
            for i, (shard, row, n, (block, doc, offset)) in enumerate(pieces):
                # through the block where the next piece starts (inclusive)
                end = pieces[i + 1][3][0] + 1 if i + 1 < len(pieces) else len(token_refs)
                written[shard].append(
                    _write_piece.remote(
                        str(tmp), shard, row, n, i == len(pieces) - 1, (doc, offset),
                        token_refs[block:end], config.pack, dtypes, shard_rows[shard],
                    )
                )  # fmt: skip
            hashes: list[Any] = []
            for k, refs in enumerate(written):
                if len(refs) == 1:  # one piece: it hashed its files
                    hashes.append(refs[0])
                else:
                    hashes.append(
                        {
                            f: _hash_file.remote(str(p), *refs)
                            for f, p in _shard_paths(str(tmp), k).items()
                        }
                    )
            tasks = [r for refs in written for r in refs]
            tasks += [r for h in hashes if isinstance(h, dict) for r in h.values()]
            st.wait("pack+write", tasks)
            entries = []
            for k, h in enumerate(hashes):
                digests = (
                    ray.get(h)
                    if not isinstance(h, dict)
                    else dict(zip(h, ray.get(list(h.values())), strict=True))
                )
                paths = _shard_paths(str(tmp), k)
                entries.append(
                    {
                        "name": shard_name(k),
                        "num_sequences": shard_rows[k],
                        "files": {f: {"file": paths[f].name, "sha256": digests[f]} for f in FIELDS},
                    }
                )
        report["tokens"] = tokens_report(
            documents=plan.documents,
            tokens_in=plan.tokens_in,
            tokens_written=plan.tokens_in - plan.dropped,
            tokens_dropped=plan.dropped,
            tails_dropped=plan.tails,
            sequences=plan.sequences,
            padding=plan.padding,
        )
        manifest = write_manifest(
            tmp,
            seq_len=config.pack.seq_len,
            token_dtype=dtypes[0],
            shards=entries,
            metadata=manifest_metadata(
                config,
                cast(TokenizerLike, tok),  # reads vocab_size and eos_token_id only
                documents_seen=report["filters"]["seen"],
                documents_packed=plan.documents,
                tokens_written=plan.tokens_in - plan.dropped,
                sequences=plan.sequences,
            ),
        )
        report["output"] = {
            "num_sequences": manifest["num_sequences"],
            "shards": len(manifest["shards"]),
        }
        text = json.dumps(report, indent=2, sort_keys=True) + "\n"
        (tmp / REPORT).write_text(text, encoding="utf-8")
        check_out_dir(out, overwrite, delete=True)  # refused or cleared only now
        names = [p.name for p in sorted(tmp.iterdir()) if p.name not in (MANIFEST, REPORT)]
        for name in [*names, REPORT, MANIFEST]:  # the manifest last: present means complete
            (tmp / name).replace(out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return RayResult(report, st.timings, workers)


def dedup(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    config: PrepareConfig | None = None,
    options: RayOptions | None = None,
    *,
    progress: bool = True,
) -> RayResult:
    """``data dedup`` on Ray: ``kept.txt``, ``removed.txt`` and ``report.json`` as the local
    path writes them (nothing is written when no document was read)."""
    config = config if config is not None else PrepareConfig()
    options = options if options is not None else RayOptions()
    with ray_session(options) as workers:
        report, final, st = _run(
            inputs, config, workers, options, tokenize=False, progress=progress
        )
        if report["filters"]["seen"] == 0:
            return RayResult(report, st.timings, workers)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".dedup-ray-", dir=out))
        try:
            with (tmp / "kept.txt").open("w", encoding="utf-8") as kept:
                for f in final:
                    kept.writelines(f"{k}\n" for k in ray.get(f[0])["kept"])
            with (tmp / "removed.txt").open("w", encoding="utf-8") as removed:
                for what in ("exact", "near"):  # the local order: all exact, then all near
                    for f in final:
                        removed.writelines(f"{line}\n" for line in ray.get(f[0])[what])
            (tmp / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
            for name in ("kept.txt", "removed.txt", "report.json"):
                (tmp / name).replace(out / name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return RayResult(report, st.timings, workers)
