"""Tokenizer throughput: codegen-core vs fastokens vs HF `tokenizers` vs tiktoken, one run.

    BENCH_ROUNDS=5 pytest benchmarks/bench_tokenizer.py -s --benchmark-enable -p no:cacheprovider

The corpus is the Python standard library on this machine (UTF-8 ``.py`` files, without its
``test`` packages). All contenders are timed round robin in one process: every round loads
each tokenizer afresh (not timed) and times its **cold** pass (the first over the corpus:
inputs it has never seen, its caches empty - ours: the per-thread piece table starts as the
vocabulary's whole tokens and the per-thread hot cache empty, and a batch's workers share
the pieces they learned when the batch ends; fastokens: its segment cache is off by
default; HF: its word cache) and then its **warm** pass (the same inputs again). Medians over BENCH_ROUNDS rounds,
as wall time and as the process's CPU time (the machine may be shared: CPU time is less
disturbed by other jobs, and CPU / wall > 1 would show a library using a second core).

Work compared: with the CodeGen1 file (``../shared/tokenizers/codegen/tokenizer.json``)
ours, fastokens and HF (exact ids, asserted on every file); with the GPT-2 file ours,
fastokens and tiktoken (GPT-2 ranks from the same vocabulary; asserted equal on every file).
Every encode returns a Python list of ints (fastokens: ``encode(text).ids``). Batches use
``os.cpu_count()`` threads and flat outputs (ours ``encode_batch_flat`` -> numpy, fastokens
``encode_batch_flat`` -> bytes, tiktoken ``encode_ordinary_batch`` -> lists). Decode is timed
after a warm-up; the pathological 1 MB inputs (single pieces too long for any cache) too, as
CPU time per byte against the warm CPU time per byte of code (CodeGen1 file).
Writes ``benchmarks/results/tokenizer.json`` (``python -m benchmarks.report``).

Batch CPU times depend on the process's allocator state: ours keeps the last two freed ids
arrays for reuse (no page faults), and fastokens' GPT-2 batch measured 36-40 ms CPU in a
process where our build before that freed its arrays, 57-60 ms alone or next to ours now
(stdlib, 2 threads, load ~1.5): for the batch ratio, also compare each in its own process.
"""

from __future__ import annotations

import functools
import os
import random
import statistics
import string
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

THREADS = os.cpu_count() or 1
os.environ.setdefault("RAYON_NUM_THREADS", str(THREADS))  # fastokens and HF batches
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np
import pytest

from codegen_core.tokenizer.core import Tokenizer

hf_tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
fastokens = pytest.importorskip("fastokens")
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
HF_ROUNDS = int(os.environ.get("BENCH_HF_ROUNDS", "1"))  # HF is ~30x slower: fewer rounds
MAX_FILES = int(os.environ.get("BENCH_MAX_FILES", "0"))  # > 0: only the first files (a quick check)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
COMMAND = (
    "BENCH_ROUNDS=5 pytest benchmarks/bench_tokenizer.py -s --benchmark-enable -p no:cacheprovider"
)


def _corpus() -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if {"site-packages", "dist-packages", "test", "tests"} & set(parts):
            continue
        try:
            texts.append(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            continue
    return texts[:MAX_FILES] if MAX_FILES > 0 else texts


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the benchmark needs ../shared/tokenizers")
    return path


def _file(name: str) -> Path:
    return _need(SHARED / name / "tokenizer.json")


@functools.cache
def _gpt2_ranks() -> dict[bytes, int]:
    return data_gym_to_mergeable_bpe_ranks(
        str(_need(SHARED / "gpt2" / "merges.txt")), str(_need(SHARED / "gpt2" / "vocab.json"))
    )


def _tiktoken():
    return tiktoken.Encoding(
        "gpt2-shared", pat_str=GPT2_PATTERN, mergeable_ranks=_gpt2_ranks(),
        special_tokens={"<|endoftext|>": 50256},
    )  # fmt: skip


class Contender:
    """A name, how to load a fresh tokenizer, and the timed pass over the corpus."""

    def __init__(self, name: str, load: Callable[[], object], run: Callable[[object], object]):
        self.name, self.load, self.run = name, load, run


def _contenders(texts: list[str]) -> list[Contender]:
    codegen, gpt2 = _file("codegen"), _file("gpt2")
    # encode_ordinary: special-token text stays text (the stdlib has none; same ids as HF).
    ours_run = lambda tok: [tok.encode_ordinary(t) for t in texts]
    fast_run = lambda tok: [tok.encode(t).ids for t in texts]
    return [
        Contender("encode/ours", lambda: Tokenizer.from_file(codegen), ours_run),
        Contender("encode/fastokens", lambda: fastokens.Tokenizer.from_file(str(codegen)), fast_run),
        Contender("encode/ours-gpt2", lambda: Tokenizer.from_file(gpt2), ours_run),
        Contender("encode/fastokens-gpt2", lambda: fastokens.Tokenizer.from_file(str(gpt2)), fast_run),
        Contender("encode/tiktoken-gpt2", _tiktoken, lambda tok: [tok.encode_ordinary(t) for t in texts]),
        Contender("batch/ours", lambda: Tokenizer.from_file(codegen),
                  lambda tok: tok.encode_batch_flat(texts, num_threads=THREADS, disallowed_special=())),
        Contender("batch/fastokens", lambda: fastokens.Tokenizer.from_file(str(codegen)),
                  lambda tok: tok.encode_batch_flat(texts)),
        Contender("batch/ours-gpt2", lambda: Tokenizer.from_file(gpt2),
                  lambda tok: tok.encode_batch_flat(texts, num_threads=THREADS, disallowed_special=())),
        Contender("batch/fastokens-gpt2", lambda: fastokens.Tokenizer.from_file(str(gpt2)),
                  lambda tok: tok.encode_batch_flat(texts)),
        Contender("batch/tiktoken-gpt2", _tiktoken,
                  lambda tok: tok.encode_ordinary_batch(texts, num_threads=THREADS)),
        Contender("encode/hf", lambda: hf_tokenizers.Tokenizer.from_file(str(codegen)), fast_run),
    ]  # fmt: skip


def _timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def _flat_lists(out: object) -> list[list[int]]:
    """A batch output (ours: (ids, offsets) numpy; fastokens: (bytes, bytes)) as lists."""
    ids, offsets = out  # type: ignore[misc]
    if isinstance(ids, bytes):
        ids, offsets = np.frombuffer(ids, np.uint32), np.frombuffer(offsets, np.uint64)
    return [ids[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]


_rnd = random.Random(0)
PATHOLOGICAL = {
    "one letter repeated": "a" * 1_000_000,
    "999,999 spaces then a letter": " " * 999_999 + "x",
    "newlines": "\n" * 1_000_000,
    "digits": "7" * 1_000_000,
    "braces": "{" * 1_000_000,
    "random ASCII letters": "".join(_rnd.choice(string.ascii_letters) for _ in range(1_000_000)),
}


def test_tokenizer_round_robin(benchmark) -> None:
    load_start = os.getloadavg()[0]
    texts = _corpus()
    mb = sum(len(t.encode()) for t in texts) / 1e6
    contenders = _contenders(texts)
    times: dict[str, dict[str, list[float]]] = {}
    outputs: dict[str, object] = {}
    for r in range(ROUNDS):
        for c in contenders:
            if c.name == "encode/hf" and r >= HF_ROUNDS:
                continue
            tok = c.load()
            out, cold_w, cold_c = _timed(lambda: c.run(tok))  # noqa: B023
            _, warm_w, warm_c = _timed(lambda: c.run(tok))  # noqa: B023
            t = times.setdefault(c.name, {})
            for key, v in (
                ("cold", cold_w),
                ("warm", warm_w),
                ("cold_cpu", cold_c),
                ("warm_cpu", warm_c),
            ):
                t.setdefault(key, []).append(v)
            if r == 0:
                outputs[c.name] = out
            del tok, out
    med = {n: {k: statistics.median(v) for k, v in t.items()} for n, t in times.items()}

    # Same ids: CodeGen1 file ours == HF == fastokens; GPT-2 file ours == fastokens == tiktoken;
    # the batches equal the single encodes.
    ours = outputs["encode/ours"]
    assert ours == outputs["encode/hf"], "ours != HF tokenizers (CodeGen1)"
    assert ours == outputs["encode/fastokens"], "ours != fastokens (CodeGen1)"
    assert _flat_lists(outputs["batch/ours"]) == ours
    assert _flat_lists(outputs["batch/fastokens"]) == ours
    ours_gpt2 = outputs["encode/ours-gpt2"]
    assert ours_gpt2 == outputs["encode/fastokens-gpt2"], "ours != fastokens (GPT-2)"
    assert ours_gpt2 == outputs["encode/tiktoken-gpt2"], "ours != tiktoken (GPT-2)"
    assert _flat_lists(outputs["batch/ours-gpt2"]) == ours_gpt2
    assert outputs["batch/tiktoken-gpt2"] == ours_gpt2

    # Decode (GPT-2 ids of the corpus, every library's own output), after a warm-up.
    ours_tok, tt = Tokenizer.from_file(_file("gpt2")), _tiktoken()
    decode = {"ours": (lambda: [ours_tok.decode(i) for i in ours_gpt2]),
              "tiktoken": (lambda: [tt.decode(i) for i in ours_gpt2])}  # fmt: skip
    dec: dict[str, list[float]] = {}
    for _ in range(ROUNDS + 1):
        for name, fn in decode.items():
            dec.setdefault(name, []).append(_timed(fn)[1])
    dec_med = {n: statistics.median(v[1:]) for n, v in dec.items()}

    # Pathological inputs, ours (and fastokens once, for the record): after a warm-up.
    patho: dict[str, float] = {}
    patho_fast: dict[str, float] = {}
    ours_cg = Tokenizer.from_file(_file("codegen"))
    fast_cg = fastokens.Tokenizer.from_file(str(_file("codegen")))
    for kind, text in PATHOLOGICAL.items():
        ids = ours_cg.encode_ordinary(text)
        # CPU time, like the per-byte time of code it is compared with (warm_cpu).
        patho[kind] = statistics.median(_timed(lambda: ours_cg.encode_ordinary(text))[2]  # noqa: B023
                                        for _ in range(3))  # fmt: skip
        fast_out, _, patho_fast[kind] = _timed(lambda: fast_cg.encode(text).ids)  # noqa: B023
        assert fast_out == ids, kind

    _report(mb=mb, files=len(texts), med=med, dec_med=dec_med, patho=patho, patho_fast=patho_fast,
            load_start=load_start)  # fmt: skip
    # pytest-benchmark's own table: ours, one warm pass.
    tok = Tokenizer.from_file(_file("codegen"))
    benchmark.pedantic(lambda: [tok.encode_ordinary(t) for t in texts], rounds=1, iterations=1)


def _report(*, mb, files, med, dec_med, patho, patho_fast, load_start) -> None:
    load = os.getloadavg()[0]
    lines = [(f"corpus: stdlib, {files} files, {mb:.1f} MB; {THREADS} threads in batches; "
              f"{ROUNDS} rounds (HF {HF_ROUNDS}); load average {load_start:.2f} at the start, "
              f"{load:.2f} now")]  # fmt: skip
    lines.append(f"  {'contender':24s} {'cold ms':>9s} {'warm ms':>9s} {'cold MB/s':>9s} "
                 f"{'warm MB/s':>9s} {'cold cpu':>9s} {'warm cpu':>9s}")  # fmt: skip
    for name, m in med.items():
        lines.append(f"  {name:24s} {m['cold'] * 1e3:9.1f} {m['warm'] * 1e3:9.1f} "
                     f"{mb / m['cold']:9.1f} {mb / m['warm']:9.1f} {m['cold_cpu'] * 1e3:9.1f} "
                     f"{m['warm_cpu'] * 1e3:9.1f}")  # fmt: skip

    def ratio(peer: str, mine: str, key: str) -> float:
        return med[peer][key] / med[mine][key]  # peer time / our time: > 1 = we are faster

    pairs = [
        ("encode 1 thread, CodeGen1 file, vs fastokens", "encode/fastokens", "encode/ours"),
        ("encode 1 thread, GPT-2 file, vs fastokens", "encode/fastokens-gpt2", "encode/ours-gpt2"),
        ("encode 1 thread, CodeGen1 file, vs HF tokenizers", "encode/hf", "encode/ours"),
        ("encode 1 thread, GPT-2 file, vs tiktoken", "encode/tiktoken-gpt2", "encode/ours-gpt2"),
        (f"batch {THREADS} threads, CodeGen1 file, vs fastokens", "batch/fastokens", "batch/ours"),
        (f"batch {THREADS} threads, GPT-2 file, vs fastokens", "batch/fastokens-gpt2", "batch/ours-gpt2"),
        (f"batch {THREADS} threads, GPT-2 file, vs tiktoken", "batch/tiktoken-gpt2", "batch/ours-gpt2"),
    ]  # fmt: skip
    lines.append("speed-ups (peer time / our time), wall [cpu]:")
    for label, peer, mine in pairs:
        lines.append(f"  {label:48s} cold {ratio(peer, mine, 'cold'):5.2f}x "
                     f"[{ratio(peer, mine, 'cold_cpu'):5.2f}x]  warm {ratio(peer, mine, 'warm'):5.2f}x "
                     f"[{ratio(peer, mine, 'warm_cpu'):5.2f}x]")  # fmt: skip
    decode_x = dec_med["tiktoken"] / dec_med["ours"]
    lines.append(f"decode (GPT-2 ids of the corpus): ours {dec_med['ours'] * 1e3:.1f} ms, tiktoken "
                 f"{dec_med['tiktoken'] * 1e3:.1f} ms: {decode_x:.2f}x")  # fmt: skip
    ordinary = med["encode/ours"]["warm_cpu"] / (mb * 1e6)  # CPU s per byte of code, warm
    lines.append(
        f"pathological 1 MB inputs, CPU time (ours; code: {ordinary * 1e9:.1f} ns/byte warm):"
    )
    worst = 0.0
    for kind, seconds in patho.items():
        x = seconds / 1e6 / ordinary
        worst = max(worst, x)
        fast_x = patho_fast[kind] / 1e6 / (med["encode/fastokens"]["warm_cpu"] / (mb * 1e6))
        lines.append(f"  {kind:30s} {seconds * 1e3:7.1f} ms  {x:5.2f}x our code per byte "
                     f"(fastokens {patho_fast[kind] * 1e3:7.1f} ms, {fast_x:6.2f}x its own)")  # fmt: skip
    print("\n" + "\n".join(lines))
    _record_rows(mb=mb, med=med, ratio=ratio, decode_x=decode_x, worst=worst, load_start=load_start)


def _record_rows(*, mb, med, ratio, decode_x, worst, load_start) -> None:
    from _record import record, row  # noqa: PLC0415 (benchmarks/ is on sys.path)

    def rate(name: str, key: str) -> float:
        return mb / med[name][key]

    rows = [
        row("tokenizer encode, 1 thread, warm (CodeGen1 file)", rate("encode/ours", "warm"),
            rate("encode/fastokens", "warm"), unit="MB/s", peer="fastokens",
            ratio=ratio("encode/fastokens", "encode/ours", "warm"), target=1.0),
        row("tokenizer encode, 1 thread, cold (CodeGen1 file)", rate("encode/ours", "cold"),
            rate("encode/fastokens", "cold"), unit="MB/s", peer="fastokens",
            ratio=ratio("encode/fastokens", "encode/ours", "cold"), target=1.2),
        row("tokenizer encode, 1 thread, warm (GPT-2 file)", rate("encode/ours-gpt2", "warm"),
            rate("encode/fastokens-gpt2", "warm"), unit="MB/s", peer="fastokens",
            ratio=ratio("encode/fastokens-gpt2", "encode/ours-gpt2", "warm"), target=1.0),
        row("tokenizer encode, 1 thread, cold (GPT-2 file)", rate("encode/ours-gpt2", "cold"),
            rate("encode/fastokens-gpt2", "cold"), unit="MB/s", peer="fastokens",
            ratio=ratio("encode/fastokens-gpt2", "encode/ours-gpt2", "cold"), target=1.2),
        row(f"tokenizer batch, {THREADS} threads, warm (CodeGen1 file)", rate("batch/ours", "warm"),
            rate("batch/fastokens", "warm"), unit="MB/s", peer="fastokens",
            ratio=ratio("batch/fastokens", "batch/ours", "warm"), target=1.0),
        row(f"tokenizer batch, {THREADS} threads, warm (GPT-2 file)", rate("batch/ours-gpt2", "warm"),
            rate("batch/fastokens-gpt2", "warm"), unit="MB/s", peer="fastokens",
            ratio=ratio("batch/fastokens-gpt2", "batch/ours-gpt2", "warm"), target=1.0),
        row("tokenizer decode vs tiktoken", decode_x, unit="x", target=2.0, compare="figure"),
        row("tokenizer worst 1 MB input, per byte vs code", worst, unit="x code", target=3.0,
            op="<=", compare="figure"),
    ]  # fmt: skip
    record("tokenizer", rows, command=COMMAND, load_start=load_start)
