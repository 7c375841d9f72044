"""Deterministic, resumable, multi-host batches for the trainer, on top of Grain.

Grain's ``MapDataset.source(...).shuffle(seed)`` gives a random-access view of the records in a
seeded order that is reshuffled every epoch without materialising a permutation (an index
shuffle). On it we lay out *global* batches: global batch ``b`` is records
``[b * G, (b + 1) * G)`` of that order (``G`` = global batch size), and process ``p`` of ``P``
takes the contiguous slice ``[p * G/P, (p + 1) * G/P)`` of it.

So the state is one integer, the number of global batches consumed, which does not depend
on the number of processes: a checkpoint written by 8 hosts resumes on 4 (jaxformer's
could not). Why not Grain's ``IndexSampler``/``DataLoader`` state: it records a position per
shard (``ShardOptions(shard_index, shard_count)``), so it only restores on the same process
count, and the union of its per-process orders is not any single-process order.

Properties (tested in tests/data/test_loader.py): same seed -> same batches; restoring the
state after k batches yields batches k+1, k+2, ...; the P processes' batches of step b
together are exactly the single-process batch b, so one epoch is covered with no overlap.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grain
import numpy as np

STATE_VERSION = 1


class RecordSource(Protocol):
    def __len__(self) -> int: ...
    def __getitem__(self, index: int) -> Mapping[str, np.ndarray]: ...


@dataclass(frozen=True)
class LoaderConfig:
    global_batch_size: int
    seed: int = 0
    process_index: int = 0
    process_count: int = 1
    num_epochs: int | None = 1  # None: repeat forever (reshuffled each epoch)

    def __post_init__(self) -> None:
        if self.process_count < 1 or not 0 <= self.process_index < self.process_count:
            raise ValueError(f"process_index {self.process_index} not in [0, {self.process_count})")
        if self.global_batch_size < 1 or self.global_batch_size % self.process_count:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} must be a positive multiple of "
                f"process_count {self.process_count}"
            )
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {self.num_epochs}")

    @property
    def local_batch_size(self) -> int:
        return self.global_batch_size // self.process_count


class BatchLoader:
    """Iterates this process's batches: dicts of numpy arrays with a leading batch axis.

    Incomplete last global batches are dropped, so every step has the same shape.
    """

    def __init__(self, source: RecordSource, config: LoaderConfig) -> None:
        if len(source) == 0:
            raise ValueError("the data source is empty")
        self.source = source
        self.config = config
        self._records = grain.MapDataset.source(source).shuffle(seed=config.seed)
        self._next_batch = 0

    @property
    def num_batches(self) -> int | None:
        """Global batches in the run (None if it repeats forever)."""
        if self.config.num_epochs is None:
            return None
        return len(self.source) * self.config.num_epochs // self.config.global_batch_size

    def state(self) -> dict[str, Any]:
        """A small JSON-ready state for checkpoints."""
        return {
            "version": STATE_VERSION,
            "seed": self.config.seed,
            "global_batch_size": self.config.global_batch_size,
            "num_records": len(self.source),
            "next_batch": self._next_batch,
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue after the batches recorded in ``state`` (any process count)."""
        expected = {
            "version": STATE_VERSION,
            "seed": self.config.seed,
            "global_batch_size": self.config.global_batch_size,
            "num_records": len(self.source),
        }
        for key, value in expected.items():
            if state.get(key) != value:
                raise ValueError(
                    f"loader state has {key}={state.get(key)!r}, this loader {value!r}"
                )
        next_batch = state.get("next_batch")
        if not isinstance(next_batch, int) or next_batch < 0:
            raise ValueError(f"loader state has a bad next_batch: {next_batch!r}")
        self._next_batch = next_batch

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """This process's part of global batch ``index`` (random access, no state change)."""
        cfg = self.config
        start = index * cfg.global_batch_size + cfg.process_index * cfg.local_batch_size
        records = [self._records[start + j] for j in range(cfg.local_batch_size)]
        return {key: np.stack([r[key] for r in records]) for key in records[0]}

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while self.num_batches is None or self._next_batch < self.num_batches:
            out = self.batch(self._next_batch)
            self._next_batch += 1
            yield out
