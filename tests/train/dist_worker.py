"""Child process for the distribution tests: mesh and global batch on simulated devices.

    python dist_worker.py --mesh=D,F,T [--dist COORD,N,I]

Each process builds the (data, fsdp, tensor) mesh, feeds its slice of a global batch whose
row r is filled with r (rows this process owns: ``process_batch_slice``), checks the global
array (shape, sharding, every local shard's rows) and a jitted global reduction, and prints
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from codegen_core.train import distributed

GLOBAL_BATCH = 8
SEQ = 4


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh", required=True)
    ap.add_argument("--dist", default=None)
    args = ap.parse_args(argv)
    if args.dist:
        coord, n, i = args.dist.rsplit(",", 2)
        distributed.initialize(coordinator=coord, num_processes=int(n), process_id=int(i))
        # a second identical call is a no-op
        distributed.initialize(coordinator=coord, num_processes=int(n), process_id=int(i))
    data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    mesh = distributed.make_mesh(data, fsdp, tensor)
    start, size = distributed.process_batch_slice(mesh, GLOBAL_BATCH)
    rows = np.arange(start, start + size, dtype=np.int32)
    local = {
        "tokens": np.repeat(rows[:, None], SEQ, axis=1),
        "segment_ids": np.ones((size, SEQ), np.int32),
    }
    batch = distributed.global_batch(local, mesh)
    tokens = batch["tokens"]
    assert tokens.shape == (GLOBAL_BATCH, SEQ), tokens.shape
    assert tokens.sharding.spec == PartitionSpec(("data", "fsdp"), None), tokens.sharding
    for shard in tokens.addressable_shards:
        want = np.repeat(np.arange(GLOBAL_BATCH)[shard.index[0]][:, None], SEQ, axis=1)
        np.testing.assert_array_equal(np.asarray(shard.data), want)
    total = jax.jit(
        lambda t, s: jnp.sum(t * s), out_shardings=NamedSharding(mesh, PartitionSpec())
    )(tokens, batch["segment_ids"])
    print(
        json.dumps(
            {
                "process": jax.process_index(),
                "devices": jax.device_count(),
                "mesh": dict(mesh.shape),
                "slice": [start, size],
                "sum": int(total),
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
