"""The native read-bandwidth probe (the decode ceiling in benchmarks/bench_generate.py)
consumes every byte: its checksum (the buffer as little-endian 64-bit words, the last one
zero-padded, summed modulo 2**64) equals numpy's, whatever the thread count."""

from __future__ import annotations

import numpy as np
import pytest

from codegen_core import _core


@pytest.mark.parametrize("threads", [0, 1, 2, 3])
@pytest.mark.parametrize("size", [1, 31, 4096, 1 << 20, (1 << 20) + 7])
def test_checksum_equals_numpy(size: int, threads: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    checksum, seconds = _core.stream_read(data, num_threads=threads, reps=2)
    padded = np.zeros(-(-size // 8) * 8, np.uint8)
    padded[:size] = data
    assert checksum == int(padded.view("<u8").sum(dtype=np.uint64))  # numpy wraps mod 2**64
    assert len(seconds) == 2 and all(t >= 0 for t in seconds)


def test_non_contiguous_buffer_is_an_error() -> None:
    data = np.zeros(1024, np.uint8)[::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.stream_read(data)
