"""MB/s of the whole ``data prepare`` pipeline on the Python standard library.

Filter -> exact dedup -> near dedup (C++) -> tokenize (codegen_core.Tokenizer) -> pack ->
shards, exactly what ``codegen-core data prepare --out DIR`` does with its default input.
Also times the tokenize stage against Hugging Face ``tokenizers`` (the peer) on a sample.

``test_engines_local_vs_ray`` runs ``data prepare`` with ``--engine local`` and with
``--engine ray`` at 1 and 2 workers in the same run, alternating the order round by round,
each run in its own subprocess (so each driver's peak RSS is its own): MB/s (filtered input
bytes / wall seconds of the pipeline), the ratio to local, the driver's peak RSS, and the
Ray start-up time, which is reported separately and not included in the pipeline time (on a
cluster Ray is already running). It also checks that every run wrote the same manifest.

Run: ``pytest benchmarks/bench_pipeline.py -s``; only the engines:
``pytest benchmarks/bench_pipeline.py -s -k engines`` (about 1.5 minutes on 2 cores, quiet;
``BENCH_PIPELINE_ROUNDS`` (default 5) rounds; ``BENCH_PIPELINE_SITE_PACKAGES=1`` adds the
interpreter's site-packages to the standard library, ~5x the input, ~3 minutes). The stage
timings printed are the medians over the rounds, per stage.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from codegen_core.data import sources
from codegen_core.data.prepare import PrepareConfig, load_tokenizer, prepare, scan

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CONFIG = PrepareConfig(exclude_dirs=(*sources.DEFAULT_EXCLUDE, "site-packages"))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def test_prepare_stdlib(benchmark, tmp_path: Path) -> None:
    tokenizer = load_tokenizer("codegen")
    inputs = sources.default_inputs()
    cpu0, wall0 = _cpu(), time.perf_counter()
    scanned = scan(inputs, CONFIG, progress=False)
    scan_cpu, scan_wall = _cpu() - cpu0, time.perf_counter() - wall0
    mb = scanned.bytes_in / 1e6

    cpu0, wall0 = _cpu(), time.perf_counter()
    report = benchmark.pedantic(
        prepare,
        args=(inputs, tmp_path / "out", CONFIG),
        kwargs={"tokenizer": tokenizer, "progress": False},
        rounds=1,
        iterations=1,
    )
    cpu, wall = _cpu() - cpu0, time.perf_counter() - wall0
    print(f"\ninput after filters: {mb:.1f} MB in {report['filters']['kept']} files")
    print(
        f"scan (read+filter+exact+near dedup): {mb / scan_wall:.1f} MB/s wall, "
        f"{mb / scan_cpu:.1f} MB/CPU-s"
    )
    print(
        f"whole prepare: {wall:.1f} s wall, {cpu:.1f} CPU-s -> {mb / wall:.1f} MB/s wall, "
        f"{mb / cpu:.1f} MB/CPU-s; {report['tokens']['tokens_written']} tokens, "
        f"{report['output']['num_sequences']} sequences of 2048"
    )


def test_tokenize_stage_vs_hf_tokenizers(benchmark) -> None:
    hf = pytest.importorskip("tokenizers")
    path = SHARED / "tokenizers" / "codegen" / "tokenizer.json"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    peer = hf.Tokenizer.from_file(str(path))
    ours = load_tokenizer("codegen")
    scanned = scan(sources.default_inputs(), CONFIG, progress=False)
    texts = [sources.read_document(r, CONFIG.filters) for r, _ in scanned.kept_refs()[:800]]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    cpu0, wall0 = _cpu(), time.perf_counter()
    theirs = [e.ids for e in peer.encode_batch(texts, add_special_tokens=False)]
    peer_cpu, peer_wall = _cpu() - cpu0, time.perf_counter() - wall0
    cpu0, wall0 = _cpu(), time.perf_counter()
    mine = benchmark.pedantic(ours.encode_batch, args=(texts,), rounds=1, iterations=1)
    our_cpu, our_wall = _cpu() - cpu0, time.perf_counter() - wall0
    assert mine == theirs
    print(
        f"\ntokenize {mb:.1f} MB: ours {mb / our_cpu:.1f} MB/CPU-s ({mb / our_wall:.1f} MB/s "
        f"wall), tokenizers {mb / peer_cpu:.1f} MB/CPU-s ({mb / peer_wall:.1f} MB/s wall), "
        f"ratio {peer_cpu / our_cpu:.1f}x per CPU-s"
    )


def _engine_inputs() -> tuple[list[Path], tuple[str, ...]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if os.environ.get("BENCH_PIPELINE_SITE_PACKAGES") == "1":
        return [stdlib], sources.DEFAULT_EXCLUDE
    return [stdlib], (*sources.DEFAULT_EXCLUDE, "site-packages")


def _child(engine: str, workers: int, out: str) -> None:
    """One measured run (in a subprocess): prints a JSON line."""
    import dataclasses  # noqa: PLC0415

    inputs, exclude = _engine_inputs()
    config = dataclasses.replace(CONFIG, exclude_dirs=exclude)
    init = 0.0
    if engine == "ray":
        import ray  # noqa: PLC0415

        from codegen_core.data import ray_engine  # noqa: PLC0415

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, logging_level="ERROR")
        init = time.perf_counter() - t
        t = time.perf_counter()
        result = ray_engine.prepare(
            inputs, out, config, ray_engine.RayOptions(num_workers=workers), progress=False
        )
        wall = time.perf_counter() - t
        report, stages = result.report, result.timings
        ray.shutdown()
    else:
        t = time.perf_counter()
        report = prepare(inputs, out, config, progress=False)
        wall = time.perf_counter() - t
        stages = {}
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    line = {"wall": wall, "mb": report["bytes_after_filters"] / 1e6, "rss_mb": rss_mb}
    print(json.dumps({**line, "init": init, "stages": stages}))


def test_engines_local_vs_ray(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="the ray extra is not installed")
    rounds = int(os.environ.get("BENCH_PIPELINE_ROUNDS", "5"))
    configs = [("local", 1), ("ray", 1), ("ray", 2)]
    results: dict[tuple[str, int], list[dict]] = {c: [] for c in configs}
    manifests = set()
    load_before = os.getloadavg()
    loads = []
    for r in range(rounds):
        loads.append(os.getloadavg()[0])
        order = configs[r % 3 :] + configs[: r % 3]  # alternate who runs first
        for engine, workers in order:
            out = tmp_path / f"{engine}{workers}-{r}"
            proc = subprocess.run(
                [sys.executable, __file__, "--child", engine, str(workers), str(out)],
                capture_output=True,
                text=True,
                check=False,
            )
            assert proc.returncode == 0, proc.stderr[-3000:]
            results[(engine, workers)].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            manifests.add((out / "manifest.json").read_bytes())
    load_after = os.getloadavg()
    assert len(manifests) == 1, "the engines wrote different manifests"
    mb = results[configs[0]][0]["mb"]
    local = statistics.median(x["wall"] for x in results[("local", 1)])
    print(f"\ninput after filters: {mb:.1f} MB; {rounds} rounds; medians")
    print(
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
        f"at each round's start: {', '.join(f'{x:.2f}' for x in loads)}"
    )
    print(
        f"{'engine':<10}{'wall s':>8}{'MB/s':>8}{'vs local':>10}{'driver RSS':>12}{'ray init':>10}"
        f"{'vs local incl. init':>21}{'per round':>11}"
    )
    local_runs = [x["wall"] for x in results[("local", 1)]]
    for (engine, workers), runs in results.items():
        wall = statistics.median(x["wall"] for x in runs)
        rss = max(x["rss_mb"] for x in runs)
        init = statistics.median(x["init"] for x in runs)
        name = engine if engine == "local" else f"ray x{workers}"
        # the median of each round's ratio (a round runs all three back to back, so this
        # follows a load that changes over the run less than the ratio of medians does)
        paired = statistics.median(a / x["wall"] for a, x in zip(local_runs, runs, strict=True))
        print(
            f"{name:<10}{wall:>8.2f}{mb / wall:>8.1f}{local / wall:>9.2f}x{rss:>9.0f} MB"
            f"{init:>9.1f}s{local / (wall + init):>20.2f}x{paired:>10.2f}x"
        )
    _record_engines(results, mb, load_before[0])
    for (engine, workers), runs in results.items():
        if engine == "ray":
            names = list(runs[0]["stages"])
            stages = {k: statistics.median(x["stages"].get(k, 0.0) for x in runs) for k in names}
            shown = ", ".join(f"{k} {v:.2f}" for k, v in stages.items())
            print(f"ray x{workers} stages (s, medians): {shown}")


def _record_engines(results: dict[tuple[str, int], list[dict]], mb: float, load: float) -> None:
    from _record import record, row  # noqa: PLC0415 (benchmarks/ is on sys.path)

    def median(engine: str, workers: int, key: str) -> float:
        return statistics.median(x[key] for x in results[(engine, workers)])

    local_wall = median("local", 1, "wall")
    local = mb / local_wall
    site = os.environ.get("BENCH_PIPELINE_SITE_PACKAGES") == "1"
    corpus = "stdlib + site-packages" if site else "stdlib"
    rows = []
    for workers in (1, 2):
        ours = mb / median("ray", workers, "wall")
        rows.append(
            row(
                f"data prepare, {corpus} ({mb:.0f} MB): --engine ray, {workers} worker(s)",
                ours,
                local,
                unit="MB/s",
                peer="--engine local",
                ratio=ours / local,
                target=0.8 if workers == 2 else None,
                note=(
                    f"Ray start-up {median('ray', workers, 'init'):.1f} s not included "
                    f"({local_wall / (median('ray', workers, 'wall') + median('ray', workers, 'init')):.2f}x "
                    "with it); "
                    f"driver peak RSS {max(x['rss_mb'] for x in results[('ray', workers)]):.0f}"
                    f" MB vs local {max(x['rss_mb'] for x in results[('local', 1)]):.0f} MB"
                ),
            )
        )
    record(
        "pipeline",
        rows,
        command=("BENCH_PIPELINE_SITE_PACKAGES=1 " if site else "")
        + "pytest benchmarks/bench_pipeline.py -s -k engines",
        load_start=load,
    )


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    _child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
