"""distributed: initialize, make_mesh and global batches on 1, 8 simulated devices, 2 processes."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec

from codegen_core.train import distributed

from .procs import HERE, run_group, run_python

WORKER = HERE / "dist_worker.py"
ROW_SUM = sum(range(8)) * 4  # the worker's global batch: row r holds r in 4 columns


def test_initialize_is_a_no_op_for_one_process_and_checks_its_arguments() -> None:
    distributed.initialize(coordinator=None, num_processes=1, process_id=0)
    distributed.initialize(coordinator=None, num_processes=1, process_id=0)
    assert jax.process_count() == 1
    with pytest.raises(ValueError, match="num_processes must be an integer >= 1, got 0"):
        distributed.initialize(coordinator=None, num_processes=0, process_id=0)
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\).*got 2"):
        distributed.initialize(coordinator="127.0.0.1:1234", num_processes=2, process_id=2)
    with pytest.raises(ValueError, match="needs a coordinator address"):
        distributed.initialize(coordinator=None, num_processes=2, process_id=0)
    with pytest.raises(ValueError, match="'host:port', got 'localhost'"):
        distributed.initialize(coordinator="localhost", num_processes=2, process_id=0)


def test_make_mesh_fills_minus_one_and_names_the_numbers_when_they_do_not_fit() -> None:
    mesh = distributed.make_mesh(-1, 1, 1)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": 1}
    with pytest.raises(ValueError, match=r"data=2 x fsdp=1 x tensor=1 = 2 devices, but jax"):
        distributed.make_mesh(2, 1, 1)
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        distributed.make_mesh(-1, -1, 1)
    with pytest.raises(ValueError, match=r"mesh\.fsdp must be a positive integer or -1, got 0"):
        distributed.make_mesh(1, 0, 1)
    with pytest.raises(ValueError, match="not divisible by the fixed axes' product 3"):
        distributed.make_mesh(3, -1, 1)


def test_global_batch_on_one_device() -> None:
    mesh = distributed.make_mesh(1, 1, 1)
    local = {"tokens": np.arange(12, dtype=np.int32).reshape(3, 4)}
    batch = distributed.global_batch(local, mesh)
    assert batch["tokens"].sharding.spec == PartitionSpec(("data", "fsdp"), None)
    np.testing.assert_array_equal(np.asarray(batch["tokens"]), local["tokens"])
    assert distributed.process_batch_slice(mesh, 3) == (0, 3)
    with pytest.raises(ValueError, match="'b' has 2 rows, the others 3"):
        distributed.global_batch({"a": local["tokens"], "b": np.zeros((2, 4))}, mesh)
    with pytest.raises(ValueError, match="'a' is a scalar"):
        distributed.global_batch({"a": np.int32(1)}, mesh)
    with pytest.raises(ValueError, match="needs at least one array"):
        distributed.global_batch({}, mesh)


def _lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_eight_simulated_devices() -> None:
    (got,) = _lines(run_python([WORKER, "--mesh=2,2,2"], devices=8).stdout)
    assert got["devices"] == 8
    assert got["mesh"] == {"data": 2, "fsdp": 2, "tensor": 2}
    assert got["slice"] == [0, 8]
    assert got["sum"] == ROW_SUM
    (got,) = _lines(run_python([WORKER, "--mesh=-1,2,1"], devices=8).stdout)
    assert got["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
    assert got["sum"] == ROW_SUM


def test_two_processes_each_feed_their_own_rows() -> None:
    outs = run_group(lambda c, i: [WORKER, "--mesh=2,2,2", "--dist", f"{c},2,{i}"], 2, devices=4)
    got = sorted((line for o in outs for line in _lines(o.stdout)), key=lambda d: d["process"])
    assert [d["process"] for d in got] == [0, 1]
    assert all(d["devices"] == 8 for d in got)
    # the tensor axis stays inside a process; the batch splits between the processes
    assert [d["slice"] for d in got] == [[0, 4], [4, 4]]
    assert all(d["sum"] == ROW_SUM for d in got)


def test_two_processes_that_replicate_the_batch_both_feed_all_rows() -> None:
    # a (1, 1, 2) mesh over two one-device processes: tensor parallel across them
    outs = run_group(lambda c, i: [WORKER, "--mesh=1,1,2", "--dist", f"{c},2,{i}"], 2)
    got = [line for o in outs for line in _lines(o.stdout)]
    assert [d["slice"] for d in got] == [[0, 8], [0, 8]]
    assert all(d["sum"] == ROW_SUM for d in got)
