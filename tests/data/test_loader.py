"""Shards round-trip with checksums; the loader is deterministic, resumable and shards
exactly across processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from codegen_core.data.loader import BatchLoader, LoaderConfig
from codegen_core.data.pack import PackConfig, Packer
from codegen_core.data.shards import MANIFEST, ShardReader, ShardWriter

SEQ = 16


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    packer = Packer(PackConfig(seq_len=SEQ, min_tail=4, eos_id=0, pad_id=0))
    writer = ShardWriter(out, seq_len=SEQ, vocab_size=50295, sequences_per_shard=7)
    for _ in range(60):
        writer.add(packer.add(rng.integers(1, 50295, size=rng.integers(1, 40)).tolist()))
    writer.add(packer.finish())
    writer.close({"tokenizer": {"name": "test"}})
    return out


def _ids(batch: dict[str, np.ndarray]) -> list[int]:
    # A hash of the tokens identifies a sequence (random tokens: no accidental equality).
    return [hash(row.tobytes()) for row in batch["tokens"]]


def test_shards_round_trip(shard_dir) -> None:
    reader = ShardReader(shard_dir, verify=True)
    manifest = json.loads((shard_dir / MANIFEST).read_text())
    assert len(reader) == manifest["num_sequences"] > 14 and len(manifest["shards"]) > 2
    assert manifest["token_dtype"] == "uint16"
    item = reader[len(reader) - 1]
    assert set(item) == {"tokens", "segment_ids", "positions"}
    assert item["tokens"].shape == (SEQ,) and item["tokens"].dtype == np.int32
    with pytest.raises(IndexError):
        reader[len(reader)]
    with pytest.raises(ValueError, match="already holds shards"):
        ShardWriter(shard_dir, seq_len=SEQ, vocab_size=10)


def test_checksum_detects_corruption(shard_dir, tmp_path) -> None:
    for f in shard_dir.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    victim = tmp_path / "shard-00001.tokens.npy"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        ShardReader(tmp_path, verify=True)


def test_same_seed_same_batches(shard_dir) -> None:
    reader = ShardReader(shard_dir)
    a = [_ids(b) for b in BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=3))]
    b = [_ids(b) for b in BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=3))]
    c = [_ids(b) for b in BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=4))]
    assert a == b and a != c
    assert len(a) == len(reader) // 4
    flat = [x for batch in a for x in batch]
    assert len(set(flat)) == len(flat)  # an epoch has no repeats


def test_resume_continues_exactly(shard_dir) -> None:
    reader = ShardReader(shard_dir)
    cfg = LoaderConfig(global_batch_size=3, seed=1, num_epochs=2)
    full = [_ids(b) for b in BatchLoader(reader, cfg)]
    loader = BatchLoader(reader, cfg)
    it = iter(loader)
    first = [_ids(next(it)) for _ in range(5)]
    state = json.loads(json.dumps(loader.state()))  # as a checkpoint would store it
    resumed = BatchLoader(reader, cfg)
    resumed.restore(state)
    assert first + [_ids(b) for b in resumed] == full
    with pytest.raises(ValueError, match="seed"):
        BatchLoader(reader, LoaderConfig(global_batch_size=3, seed=2)).restore(state)


@pytest.mark.parametrize("processes", [2, 4])
def test_processes_partition_the_epoch(shard_dir, processes: int) -> None:
    reader = ShardReader(shard_dir)
    single = [_ids(b) for b in BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=9))]
    per_process = [
        [
            _ids(b)
            for b in BatchLoader(
                reader,
                LoaderConfig(global_batch_size=4, seed=9, process_index=p, process_count=processes),
            )
        ]
        for p in range(processes)
    ]
    for step, batch in enumerate(single):
        assert [x for p in range(processes) for x in per_process[p][step]] == batch
    # ... and a state saved by one process count resumes on another.
    two = BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=9, process_count=2))
    it = iter(two)
    next(it), next(it)
    one = BatchLoader(reader, LoaderConfig(global_batch_size=4, seed=9))
    one.restore(two.state())
    assert _ids(next(iter(one))) == single[2]


def test_bad_loader_config() -> None:
    with pytest.raises(ValueError, match="multiple"):
        LoaderConfig(global_batch_size=5, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        LoaderConfig(global_batch_size=4, process_index=2, process_count=2)
