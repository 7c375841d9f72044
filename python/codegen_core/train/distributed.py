"""Processes, the device mesh and global batches for the trainer.

One code path serves one CPU device, several simulated devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=8``) and several processes
(``jax.distributed``): :func:`initialize` joins the processes, :func:`make_mesh` lays every
device of every process out on the named ``("data", "fsdp", "tensor")`` mesh of
``model.axes``, and :func:`global_batch` turns each process's slice of a batch into global
arrays sharded by the rules table (batch over ``data`` x ``fsdp``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from codegen_core.model.axes import BATCH, LENGTH, MESH_AXES, logical_to_spec

__all__ = [
    "batch_sharding",
    "global_batch",
    "initialize",
    "make_mesh",
    "process_batch_slice",
]

# "joined": (coordinator, num_processes, process_id) of the initialize() call that ran here
_JOINED: dict[str, tuple[str | None, int, int]] = {}


def initialize(*, coordinator: str | None, num_processes: int, process_id: int) -> None:
    """Join a multi-process run (``jax.distributed.initialize``); a no-op for one process.

    Must run before anything touches a JAX device. Calling it again with the same arguments
    does nothing; with different arguments it is an error. ``coordinator`` is the
    ``host:port`` of process 0's coordination service (every process passes the same one).
    CPU processes exchange collectives through gloo (jax's default on CPU).
    """
    if not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"num_processes must be an integer >= 1, got {num_processes!r}")
    if not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(
            f"process_id must be in [0, {num_processes}) for num_processes={num_processes}, "
            f"got {process_id!r}"
        )
    if num_processes == 1:
        joined = _JOINED.get("joined")
        if joined is not None and joined[1] != 1:
            raise RuntimeError(
                f"this process already joined a {joined[1]}-process run "
                f"(coordinator {joined[0]}); cannot switch to a single process"
            )
        _JOINED["joined"] = (coordinator, 1, 0)
        return
    if not coordinator:
        raise ValueError(
            f"num_processes={num_processes} needs a coordinator address 'host:port' "
            "(the same for every process; process 0 listens on it)"
        )
    host, sep, port = coordinator.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"coordinator must look like 'host:port', got {coordinator!r}")
    wanted = (coordinator, num_processes, process_id)
    joined = _JOINED.get("joined")
    if joined is not None:
        if wanted == joined:
            return
        raise RuntimeError(
            f"this process already joined a run as {joined} (coordinator, num_processes, "
            f"process_id); initialize called again with {wanted}"
        )
    if jax.distributed.is_initialized():
        got = (jax.process_count(), jax.process_index())
        if got != (num_processes, process_id):
            raise RuntimeError(
                f"jax.distributed is already initialized as process {got[1]} of {got[0]}, "
                f"not {process_id} of {num_processes}"
            )
        _JOINED["joined"] = wanted
        return
    try:
        jax.distributed.initialize(
            coordinator_address=coordinator,
            num_processes=num_processes,
            process_id=process_id,
        )
    except Exception as exc:  # the runtime's own messages name neither side of the pair
        raise RuntimeError(
            f"jax.distributed.initialize failed for process {process_id} of {num_processes} "
            f"with coordinator {coordinator}: {exc}"
        ) from exc
    _JOINED["joined"] = wanted


def make_mesh(data: int, fsdp: int, tensor: int) -> Mesh:
    """The ``("data", "fsdp", "tensor")`` mesh over every device of every process.

    One size may be -1: it takes the devices the other two leave. The product must equal
    ``jax.device_count()``. Devices are laid out process-major, so the innermost axes
    (``tensor``, then ``fsdp``) stay within a process when its devices allow.
    """
    sizes = {"data": data, "fsdp": fsdp, "tensor": tensor}
    n = jax.device_count()
    for name, size in sizes.items():
        if not isinstance(size, int) or (size < 1 and size != -1):
            raise ValueError(f"mesh.{name} must be a positive integer or -1, got {size!r}")
    free = [name for name, size in sizes.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {sizes}")
    if free:
        known = math.prod(size for size in sizes.values() if size != -1)
        if n % known:
            raise ValueError(
                f"mesh {sizes}: {n} devices are not divisible by the fixed axes' product {known}"
            )
        sizes[free[0]] = n // known
    if math.prod(sizes.values()) != n:
        raise ValueError(
            f"mesh data={sizes['data']} x fsdp={sizes['fsdp']} x tensor={sizes['tensor']} = "
            f"{math.prod(sizes.values())} devices, but jax.device_count() is {n}"
        )
    shape = tuple(sizes[name] for name in MESH_AXES)
    # sort by (process, id) so that the innermost axes span devices of one process first
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices, dtype=object).reshape(shape), MESH_AXES)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a (batch, length, ...) array: batch over the rules table's batch axes."""
    if ndim < 1:
        raise ValueError(f"a batch array needs at least one axis, got ndim={ndim}")
    spec = logical_to_spec((BATCH, LENGTH)[:ndim])
    return NamedSharding(mesh, PartitionSpec(*spec, *([None] * (ndim - len(spec)))))


def process_batch_slice(mesh: Mesh, global_batch_size: int) -> tuple[int, int]:
    """``(start, size)``: the rows of a global batch that this process must supply.

    Processes whose devices replicate the same rows get the same slice. The global batch
    must divide evenly over the mesh's batch axes.
    """
    sharding = batch_sharding(mesh, 1)
    shards = math.prod(mesh.shape[a] for a in ("data", "fsdp"))
    if global_batch_size < 1 or global_batch_size % shards:
        raise ValueError(
            f"global batch size {global_batch_size} does not divide over the mesh's "
            f"data x fsdp = {shards} batch shards (mesh {dict(mesh.shape)})"
        )
    index_map = sharding.addressable_devices_indices_map((global_batch_size,))
    rows = sorted({(s[0].start or 0, s[0].stop or global_batch_size) for s in index_map.values()})
    start, stop = rows[0][0], rows[-1][1]
    covered = sum(b - a for a, b in rows)
    if covered != stop - start:
        raise ValueError(
            f"process {jax.process_index()} holds non-contiguous batch rows {rows} on mesh "
            f"{dict(mesh.shape)}; order the mesh so each process owns one block of rows"
        )
    return start, stop - start


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Global arrays from each process's ``(local_batch, T)`` slice of the batch.

    The global batch is ``local_batch`` times the number of distinct batch slices across
    processes (the rows this process holds are those of :func:`process_batch_slice`);
    arrays are sharded by ``logical_to_spec((BATCH, LENGTH))``.
    """
    if not local:
        raise ValueError("global_batch needs at least one array")
    out: dict[str, jax.Array] = {}
    lead = None
    for name, value in local.items():
        arr = np.asarray(value)
        if arr.ndim < 1:
            raise ValueError(f"batch array {name!r} is a scalar; expected (local_batch, ...)")
        if lead is None:
            lead = arr.shape[0]
        elif arr.shape[0] != lead:
            raise ValueError(f"batch array {name!r} has {arr.shape[0]} rows, the others {lead}")
        sharding = batch_sharding(mesh, arr.ndim)
        try:
            out[name] = jax.make_array_from_process_local_data(sharding, arr)
        except ValueError as exc:
            raise ValueError(
                f"batch array {name!r} of local shape {arr.shape} does not fit mesh "
                f"{dict(mesh.shape)} ({jax.process_count()} processes, "
                f"{jax.local_device_count()} local devices): {exc}"
            ) from exc
    return out
