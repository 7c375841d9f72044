"""On-disk packed-sequence shards: memory-mapped ``.npy`` arrays plus a JSON manifest.

Layout of an output directory::

    manifest.json                  counts, tokenizer, config, per-file sha256
    shard-00000.tokens.npy         [n, seq_len] uint16 (uint32 if the vocabulary needs it)
    shard-00000.segment_ids.npy    [n, seq_len] uint16, 0 = padding
    shard-00000.positions.npy      [n, seq_len] uint16
    ...

``.npy`` is chosen over ArrayRecord because fixed-length rows need no index beyond the
row number: ``np.load(..., mmap_mode="r")`` gives O(1) random access with zero parsing,
and any numpy can read it. Output is byte-identical across reruns (no timestamps).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from codegen_core.data.pack import PackedSequence

MANIFEST = "manifest.json"
FORMAT = "codegen-core-packed-v1"
FIELDS = ("tokens", "segment_ids", "positions")


def file_sha256(path: Path) -> str:
    """The sha256 (hex) the manifest records for a shard file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ShardWriter:
    """Buffers packed sequences and writes a shard every ``sequences_per_shard`` of them."""

    def __init__(
        self,
        out_dir: str | Path,
        *,
        seq_len: int,
        vocab_size: int,
        sequences_per_shard: int = 4096,
    ) -> None:
        if sequences_per_shard < 1:
            raise ValueError(f"sequences_per_shard must be >= 1, got {sequences_per_shard}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stale = sorted(self.out_dir.glob("shard-*.npy"))
        if stale or (self.out_dir / MANIFEST).exists():
            raise ValueError(f"{self.out_dir} already holds shards; use an empty directory")
        self.seq_len = seq_len
        self.token_dtype, self.aux_dtype = shard_dtypes(vocab_size, seq_len)
        self.sequences_per_shard = sequences_per_shard
        self._buffer: list[PackedSequence] = []
        self._shards: list[dict[str, Any]] = []
        self.num_sequences = 0

    def add(self, sequences: list[PackedSequence]) -> None:
        for seq in sequences:
            if seq.tokens.shape != (self.seq_len,):
                raise ValueError(f"sequence of shape {seq.tokens.shape}, expected {self.seq_len}")
            self._buffer.append(seq)
            if len(self._buffer) == self.sequences_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        entry = write_shard(
            self.out_dir, len(self._shards), self._buffer, self.token_dtype, self.aux_dtype
        )
        self._shards.append(entry)
        self.num_sequences += len(self._buffer)
        self._buffer = []

    def close(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Write the last shard and the manifest (``metadata`` goes in as given)."""
        self._flush()
        return write_manifest(
            self.out_dir,
            seq_len=self.seq_len,
            token_dtype=self.token_dtype,
            shards=self._shards,
            metadata=metadata,
        )


def shard_dtypes(vocab_size: int, seq_len: int) -> tuple[np.dtype, np.dtype]:
    """(token dtype, segment/position dtype): uint16 where the values fit, else uint32."""
    token = np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)
    aux = np.dtype(np.uint16 if seq_len <= 1 << 16 else np.uint32)
    return token, aux


def shard_name(index: int) -> str:
    """``shard-NNNNN``: shard ``index``'s files are ``shard-NNNNN.<field>.npy``."""
    return f"shard-{index:05d}"


def write_shard(
    out_dir: Path,
    index: int,
    sequences: list[PackedSequence],
    token_dtype: np.dtype,
    aux_dtype: np.dtype,
) -> dict[str, Any]:
    """Write shard number ``index`` (its three ``.npy`` files); return its manifest entry.

    The bytes depend only on (index, sequences, dtypes), so shards written by independent
    workers (``codegen_core.data.ray_engine``) equal the ones :class:`ShardWriter` writes.
    """
    name = shard_name(index)
    files = {}
    for field in FIELDS:
        dtype = token_dtype if field == "tokens" else aux_dtype
        arr = np.stack([getattr(s, field) for s in sequences]).astype(dtype)
        path = out_dir / f"{name}.{field}.npy"
        np.save(path, arr)
        files[field] = {"file": path.name, "sha256": file_sha256(path)}
    return {"name": name, "num_sequences": len(sequences), "files": files}


def write_manifest(
    out_dir: Path,
    *,
    seq_len: int,
    token_dtype: np.dtype,
    shards: list[dict[str, Any]],
    metadata: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``manifest.json`` for the given shard entries (in order); return the manifest."""
    manifest = {
        "format": FORMAT,
        "seq_len": seq_len,
        "token_dtype": token_dtype.name,
        "num_sequences": sum(int(s["num_sequences"]) for s in shards),
        "shards": shards,
        **metadata,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out_dir / MANIFEST).write_text(text, encoding="utf-8")
    return manifest


class ShardReader:
    """Random access to the packed sequences of a directory, memory-mapped.

    ``reader[i]`` is ``{"tokens", "segment_ids", "positions"}``, each int32 [seq_len].
    """

    def __init__(self, directory: str | Path, *, verify: bool = False) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: cannot read the manifest ({e})") from e
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: format {self.manifest.get('format')!r}, expected {FORMAT}")
        if verify:
            self.verify()
        self.seq_len = int(self.manifest["seq_len"])
        self._arrays = [
            {f: np.load(self.directory / s["files"][f]["file"], mmap_mode="r") for f in FIELDS}
            for s in self.manifest["shards"]
        ]
        counts = [int(s["num_sequences"]) for s in self.manifest["shards"]]
        self._starts = np.cumsum([0, *counts])

    def verify(self) -> None:
        """Raise ValueError if any shard file's sha256 differs from the manifest."""
        for shard in self.manifest["shards"]:
            for entry in shard["files"].values():
                got = file_sha256(self.directory / entry["file"])
                if got != entry["sha256"]:
                    raise ValueError(f"{self.directory / entry['file']}: checksum mismatch")

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> dict[str, np.ndarray]:
        i = int(index)
        if not 0 <= i < len(self):
            raise IndexError(f"sequence {index} out of range [0, {len(self)})")
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        row = i - int(self._starts[shard])
        return {f: self._arrays[shard][f][row].astype(np.int32) for f in FIELDS}

    def __repr__(self) -> str:  # stable across processes (used in loader states)
        return f"ShardReader({str(self.directory)!r}, num_sequences={len(self)})"
