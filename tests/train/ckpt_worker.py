"""Child process for the checkpoint tests: save/restore a toy trainer state on a mesh.

    python ckpt_worker.py save DIR --step S --mesh D,F,T [--dist COORD,N,I]
    python ckpt_worker.py restore DIR --step S --mesh D,F,T [--dist COORD,N,I]
    python ckpt_worker.py save-loop DIR    (saves big states until killed; prints each step)

The toy state has the trainer's shape (params sharded by the rules table, an optax AdamW
state that mirrors them, an int32 step) and values that are a pure function of the step, so
a restore on any mesh can check every element and the target shardings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec

from codegen_core.model import axes
from codegen_core.train import distributed
from codegen_core.train.checkpoint import Checkpointer

AXES = {
    "wte": (axes.VOCAB, axes.EMBED),
    "mlp": (axes.EMBED, axes.MLP),
    "norm": (axes.NORM,),
}
SHAPES = {"wte": (64, 16), "mlp": (16, 32), "norm": (16,)}
TX = optax.adamw(1e-3)


def host_state(step: int) -> dict[str, Any]:
    """The state of ``step`` as numpy arrays (identical in every process and mesh)."""
    params = {
        k: (np.arange(np.prod(s), dtype=np.float32).reshape(s) / 7.0 + step)
        for k, s in SHAPES.items()
    }
    opt_state = TX.init(params)
    _, opt_state = TX.update(params, opt_state, params)  # non-zero moments
    opt_state = jax.tree.map(np.asarray, opt_state)
    return {"params": params, "opt_state": opt_state, "step": np.int32(step)}


def shardings(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    """Target shardings: params by the rules table, optimizer moments like their params."""
    p = axes.param_shardings(AXES, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    o = optax.tree_map_params(
        TX,
        lambda _, s: s,
        TX.init({k: np.zeros(s, np.float32) for k, s in SHAPES.items()}),
        p,
        transform_non_params=lambda _: replicated,
    )
    return {"params": p, "opt_state": o, "step": replicated}


def device_state(step: int, mesh: jax.sharding.Mesh) -> dict[str, Any]:
    host = host_state(step)
    return jax.tree.map(
        lambda x, s: jax.make_array_from_callback(np.shape(x), s, lambda idx: np.asarray(x)[idx]),
        host,
        shardings(mesh),
    )


def abstract_state(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    return jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=s),
        host_state(0),
        shardings(mesh),
    )


def check_state(state: dict[str, Any], step: int, mesh: jax.sharding.Mesh) -> None:
    """Every element equals the state of ``step``; every leaf has the target sharding."""
    want = host_state(step)
    got_leaves, got_def = jax.tree_util.tree_flatten_with_path(state)
    want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
    if got_def != want_def:
        raise AssertionError(f"tree structure {got_def} != {want_def}")
    target = jax.tree.leaves(shardings(mesh))
    for (path, got), (_, exp), sh in zip(got_leaves, want_leaves, target, strict=True):
        name = jax.tree_util.keystr(path)
        if not got.sharding.is_equivalent_to(sh, got.ndim):
            raise AssertionError(f"{name}: sharding {got.sharding} != {sh}")
        for shard in got.addressable_shards:
            np.testing.assert_array_equal(np.asarray(shard.data), np.asarray(exp)[shard.index])


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("command", choices=["save", "restore", "save-loop"])
    ap.add_argument("directory")
    ap.add_argument("--step", type=int, default=1)
    ap.add_argument("--mesh", default="1,1,1")
    ap.add_argument("--dist", default=None, help="coordinator,num_processes,process_id")
    args = ap.parse_args(argv)

    if args.dist:
        coord, n, i = args.dist.rsplit(",", 2)
        distributed.initialize(coordinator=coord, num_processes=int(n), process_id=int(i))
    data, fsdp, tensor = (int(x) for x in args.mesh.split(","))
    mesh = distributed.make_mesh(data, fsdp, tensor)

    if args.command == "save-loop":
        # big enough that a save takes a while, so a kill lands inside one
        ckpt = Checkpointer(args.directory, keep=2)
        start = (ckpt.latest_step() or 0) + 1
        for step in range(start, start + 100_000):
            big = {f"w{i}": jnp.full((256, 1024), step, jnp.float32) for i in range(8)}
            state = {"params": big, "opt_state": {}, "step": jnp.int32(step)}
            ckpt.save(step, state, loader_state={"next_batch": step}, config={"step": step})
            print(f"saved {step}", flush=True)
        return

    ckpt = Checkpointer(args.directory, keep=3)
    if args.command == "save":
        ckpt.save(
            args.step,
            device_state(args.step, mesh),
            loader_state={"next_batch": args.step},
            config={"mesh": args.mesh},
        )
        ckpt.close()
        print(f"saved {args.step}", flush=True)
    else:
        state, loader_state, config = ckpt.restore(abstract_state(mesh), step=args.step)
        check_state(state, args.step, mesh)
        assert loader_state == {"next_batch": args.step}, loader_state
        ckpt.close()
        print(f"restored {args.step} on {dict(mesh.shape)} written on {config['mesh']}")


if __name__ == "__main__":
    main(sys.argv[1:])
