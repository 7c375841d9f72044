"""Tokenizer throughput: codegen-core vs HF `tokenizers` vs tiktoken, in one run.

    pytest benchmarks/bench_tokenizer.py --benchmark-enable -s

The corpus is the Python standard library on this machine (UTF-8 ``.py`` files, without its
``test`` packages). Every contender is timed on the same texts in the same process; the last
test prints medians and the ratios ours/peer (and writes them to ``.benchmarks/tokenizer.json``).
Single-threaded numbers pin every library to one thread (RAYON_NUM_THREADS=1 for HF).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import string
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF: one thread unless we ask for more
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import pytest

from codegen_core import Tokenizer

hf_tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
RESULTS: dict[str, float] = {}  # name -> median seconds
CORPUS_BYTES: dict[str, int] = {}


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
    return texts


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = _corpus()
    CORPUS_BYTES["stdlib"] = sum(len(t.encode()) for t in texts)
    return texts


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the benchmark needs ../shared/tokenizers")
    return path


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return Tokenizer.from_file(_need(SHARED / "codegen" / "tokenizer.json"))


@pytest.fixture(scope="module")
def ours_gpt2() -> Tokenizer:
    return Tokenizer.from_file(_need(SHARED / "gpt2" / "tokenizer.json"))


@pytest.fixture(scope="module")
def hf():
    return hf_tokenizers.Tokenizer.from_file(str(_need(SHARED / "codegen" / "tokenizer.json")))


@pytest.fixture(scope="module")
def tt():
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(_need(SHARED / "gpt2" / "merges.txt")), str(_need(SHARED / "gpt2" / "vocab.json"))
    )
    return tiktoken.Encoding(
        "gpt2-shared", pat_str=GPT2_PATTERN, mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
    )  # fmt: skip


def _time(benchmark, name: str, fn: Callable[[], object]) -> object:
    """Run fn ROUNDS times through pytest-benchmark and record our own median too."""
    times: list[float] = []
    result: list[object] = []

    def timed() -> None:
        start = time.perf_counter()
        result.append(fn())
        times.append(time.perf_counter() - start)

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=0)
    RESULTS[name] = statistics.median(times)
    return result[-1]


# ---- single thread, CodeGen tokenizer work (same output as HF) -------------------------
def test_encode_ours(benchmark, ours, corpus) -> None:
    _time(benchmark, "encode/ours", lambda: [ours.encode(t) for t in corpus])


def test_encode_ours_gpt2(benchmark, ours_gpt2, corpus) -> None:
    _time(benchmark, "encode/ours-gpt2", lambda: [ours_gpt2.encode(t) for t in corpus])


def test_encode_hf(benchmark, hf, corpus, ours) -> None:
    got = _time(benchmark, "encode/hf", lambda: [hf.encode(t).ids for t in corpus])
    assert got == [ours.encode(t) for t in corpus]  # same work, same output


def test_encode_tiktoken(benchmark, tt, corpus, ours_gpt2) -> None:
    got = _time(benchmark, "encode/tiktoken", lambda: [tt.encode_ordinary(t) for t in corpus])
    assert got[:50] == [ours_gpt2.encode(t) for t in corpus[:50]]


# ---- batched, all cores ----------------------------------------------------------------
THREADS = os.cpu_count() or 1


def test_batch_ours(benchmark, ours, corpus) -> None:
    _time(benchmark, "batch/ours", lambda: ours.encode_batch(corpus, num_threads=THREADS))


def test_batch_ours_1thread(benchmark, ours, corpus) -> None:
    _time(benchmark, "batch/ours-1", lambda: ours.encode_batch(corpus, num_threads=1))


def test_batch_ours_flat(benchmark, ours, corpus) -> None:
    _time(benchmark, "batch/ours-flat", lambda: ours.encode_batch_flat(corpus, num_threads=THREADS))


def test_batch_tiktoken(benchmark, tt, corpus) -> None:
    _time(
        benchmark, "batch/tiktoken", lambda: tt.encode_ordinary_batch(corpus, num_threads=THREADS)
    )


# ---- decode ----------------------------------------------------------------------------
def test_decode_ours(benchmark, ours, corpus) -> None:
    ids = [ours.encode(t) for t in corpus]
    _time(benchmark, "decode/ours", lambda: [ours.decode(i) for i in ids])


def test_decode_tiktoken(benchmark, tt, corpus) -> None:
    ids = [tt.encode_ordinary(t) for t in corpus]
    _time(benchmark, "decode/tiktoken", lambda: [tt.decode(i) for i in ids])


def test_decode_hf(benchmark, hf, ours, corpus) -> None:
    ids = [ours.encode(t) for t in corpus]
    _time(benchmark, "decode/hf", lambda: hf.decode_batch(ids, skip_special_tokens=False))


# ---- pathological 1 MB inputs: per-byte time vs ordinary code --------------------------
_rnd = random.Random(0)
PATHOLOGICAL = {
    "letter": "a" * 1_000_000,
    "spaces+letter": " " * 999_999 + "x",
    "newlines": "\n" * 1_000_000,
    "digits": "7" * 1_000_000,
    "braces": "{" * 1_000_000,
    "random-letters": "".join(_rnd.choice(string.ascii_letters) for _ in range(1_000_000)),
}


@pytest.mark.parametrize("kind", list(PATHOLOGICAL))
def test_pathological_ours(benchmark, ours, kind: str) -> None:
    text = PATHOLOGICAL[kind]
    _time(benchmark, f"patho/{kind}", lambda: ours.encode(text))


def test_report(corpus) -> None:
    """Print medians and ratios (ours / peer time, so below 1 means we are faster)."""
    mb = CORPUS_BYTES["stdlib"] / 1e6
    lines = [f"corpus: stdlib, {len(corpus)} files, {mb:.1f} MB; {THREADS} cores; rounds={ROUNDS}"]
    for name, seconds in sorted(RESULTS.items()):
        size = 1.0 if name.startswith("patho/") else mb
        lines.append(f"  {name:24s} median {seconds * 1e3:9.1f} ms  {size / seconds:8.1f} MB/s")

    def speedup(peer: str, mine: str) -> str:
        if peer in RESULTS and mine in RESULTS:
            return f"{RESULTS[peer] / RESULTS[mine]:.2f}x (time ratio ours/peer {RESULTS[mine] / RESULTS[peer]:.3f})"
        return "n/a"

    lines += [
        f"encode 1 thread vs HF tokenizers: {speedup('encode/hf', 'encode/ours')}",
        f"encode 1 thread vs tiktoken:      {speedup('encode/tiktoken', 'encode/ours')}",
        f"encode gpt2 1 thread vs tiktoken: {speedup('encode/tiktoken', 'encode/ours-gpt2')}",
        f"batch vs tiktoken batch:          {speedup('batch/tiktoken', 'batch/ours')}",
        f"batch scaling {THREADS} threads vs 1:   {speedup('batch/ours-1', 'batch/ours')}",
        f"decode vs tiktoken:               {speedup('decode/tiktoken', 'decode/ours')}",
        f"decode vs HF tokenizers:          {speedup('decode/hf', 'decode/ours')}",
    ]
    if "encode/ours" in RESULTS:
        ordinary = RESULTS["encode/ours"] / (mb * 1e6)  # seconds per byte
        for kind in PATHOLOGICAL:
            if f"patho/{kind}" in RESULTS:
                per_byte = RESULTS[f"patho/{kind}"] / 1e6
                lines.append(
                    f"pathological {kind:15s} per-byte time / ordinary: {per_byte / ordinary:.2f}"
                )
    print("\n" + "\n".join(lines))
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "tokenizer.json").write_text(json.dumps({"medians_s": RESULTS, "mb": mb}, indent=1))
