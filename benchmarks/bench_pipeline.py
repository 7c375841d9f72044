"""MB/s of the whole ``data prepare`` pipeline on the Python standard library.

Filter -> exact dedup -> near dedup (C++) -> tokenize (codegen_core.Tokenizer) -> pack ->
shards, exactly what ``codegen-core data prepare --out DIR`` does with its default input.
Also times the tokenize stage against Hugging Face ``tokenizers`` (the peer) on a sample.

Run: ``pytest benchmarks/bench_pipeline.py -s``.
"""

from __future__ import annotations

import resource
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
