"""Tokenizer throughput: codegen-core vs HF `tokenizers` vs tiktoken, in one run.

    BENCH_ROUNDS=5 pytest benchmarks/bench_tokenizer.py --benchmark-enable -s

The corpus is the Python standard library on this machine (UTF-8 ``.py`` files, without its
``test`` packages). Every contender is timed on the same texts in the same process; the last
test prints medians and the ratios ours/peer (and writes them to ``.benchmarks/tokenizer.json``).
Single-threaded numbers pin every library to one thread (RAYON_NUM_THREADS=1 for HF).

Encoders keep caches (ours: piece -> ids per worker; HF: word -> tokens), so every encode
contender is timed twice per round: **cold**, the first pass of a freshly loaded tokenizer
over the corpus (inputs it has never seen; loading is not timed), and **warm**, a second pass
right after (its caches filled by the first). Medians over BENCH_ROUNDS rounds, each with a
new tokenizer. Decode and the pathological inputs (pieces too long for any cache) are timed
after one untimed warm-up pass.
"""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import string
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

os.environ.setdefault("RAYON_NUM_THREADS", "1")  # HF: one thread unless we ask for more
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import pytest

from codegen_core import Tokenizer

hf_tokenizers = pytest.importorskip("tokenizers")
tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import data_gym_to_mergeable_bpe_ranks

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "tokenizers"
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
MAX_FILES = int(os.environ.get("BENCH_MAX_FILES", "0"))  # > 0: only the first files (a quick check)
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
T = TypeVar("T")
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
    if MAX_FILES > 0:
        texts = texts[:MAX_FILES]
    RESULTS["loadavg_start"] = os.getloadavg()[0]
    CORPUS_BYTES["stdlib"] = sum(len(t.encode()) for t in texts)
    return texts


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent: the benchmark needs ../shared/tokenizers")
    return path


@pytest.fixture(scope="module")
def ours() -> Tokenizer:
    return _load_ours()


@pytest.fixture(scope="module")
def ours_gpt2() -> Tokenizer:
    return _load_ours_gpt2()


@pytest.fixture(scope="module")
def hf():
    return _load_hf()


@pytest.fixture(scope="module")
def tt():
    return _load_tiktoken()


def _time(benchmark, name: str, fn: Callable[[], object]) -> object:
    """One untimed warm-up call, then ROUNDS timed calls through pytest-benchmark; records
    our own median too."""
    times: list[float] = []
    result: list[object] = []

    def timed() -> None:
        start = time.perf_counter()
        result.append(fn())
        times.append(time.perf_counter() - start)

    benchmark.pedantic(timed, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    RESULTS[name] = statistics.median(times[-ROUNDS:])
    return result[-1]


def _cold_warm(name: str, make: Callable[[], T], run: Callable[[T], object]) -> object:
    """Per round: a fresh encoder from ``make`` (not timed), then ``run`` timed twice: the
    cold first pass and the warm second. Records both medians; returns the first output."""
    cold: list[float] = []
    warm: list[float] = []
    first: object = None
    for r in range(ROUNDS):
        encoder = make()
        start = time.perf_counter()
        out = run(encoder)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        run(encoder)
        warm.append(time.perf_counter() - start)
        if r == 0:
            first = out
        del encoder, out
    RESULTS[f"{name}/cold"] = statistics.median(cold)
    RESULTS[f"{name}/warm"] = statistics.median(warm)
    return first


def _load_ours() -> Tokenizer:
    return Tokenizer.from_file(_need(SHARED / "codegen" / "tokenizer.json"))


def _load_ours_gpt2() -> Tokenizer:
    return Tokenizer.from_file(_need(SHARED / "gpt2" / "tokenizer.json"))


def _load_hf():
    return hf_tokenizers.Tokenizer.from_file(str(_need(SHARED / "codegen" / "tokenizer.json")))


def _load_tiktoken():
    return tiktoken.Encoding(
        "gpt2-shared", pat_str=GPT2_PATTERN, mergeable_ranks=_gpt2_ranks(),
        special_tokens={"<|endoftext|>": 50256},
    )  # fmt: skip


@functools.cache
def _gpt2_ranks() -> dict[bytes, int]:
    return data_gym_to_mergeable_bpe_ranks(
        str(_need(SHARED / "gpt2" / "merges.txt")), str(_need(SHARED / "gpt2" / "vocab.json"))
    )


# ---- single thread, CodeGen tokenizer work (same output as HF) -------------------------
def test_encode_ours(corpus) -> None:
    _cold_warm("encode/ours", _load_ours, lambda tok: [tok.encode(t) for t in corpus])


def test_encode_ours_gpt2(corpus) -> None:
    _cold_warm("encode/ours-gpt2", _load_ours_gpt2, lambda tok: [tok.encode(t) for t in corpus])


def test_encode_hf(corpus, ours) -> None:
    got = _cold_warm("encode/hf", _load_hf, lambda tok: [tok.encode(t).ids for t in corpus])
    assert got == [ours.encode(t) for t in corpus]  # same work, same output


def test_encode_tiktoken(corpus, ours_gpt2) -> None:
    got = _cold_warm(
        "encode/tiktoken", _load_tiktoken, lambda tok: [tok.encode_ordinary(t) for t in corpus]
    )
    assert got[:50] == [ours_gpt2.encode(t) for t in corpus[:50]]


# ---- batched, all cores ----------------------------------------------------------------
THREADS = os.cpu_count() or 1


def test_batch_ours(corpus) -> None:
    _cold_warm("batch/ours", _load_ours, lambda tok: tok.encode_batch(corpus, num_threads=THREADS))


def test_batch_ours_1thread(corpus) -> None:
    _cold_warm("batch/ours-1", _load_ours, lambda tok: tok.encode_batch(corpus, num_threads=1))


def test_batch_ours_flat(corpus) -> None:
    _cold_warm(
        "batch/ours-flat", _load_ours,
        lambda tok: tok.encode_batch_flat(corpus, num_threads=THREADS),
    )  # fmt: skip


def test_batch_tiktoken(corpus) -> None:
    _cold_warm(
        "batch/tiktoken", _load_tiktoken,
        lambda tok: tok.encode_ordinary_batch(corpus, num_threads=THREADS),
    )  # fmt: skip


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
    load = os.getloadavg()[0]
    lines = [f"corpus: stdlib, {len(corpus)} files, {mb:.1f} MB; {THREADS} cores; {ROUNDS} rounds"]
    lines.append(f"load average at the report: {load:.2f}")
    lines.append(f"load average at the start: {RESULTS.pop('loadavg_start', float('nan')):.2f}")
    for name, seconds in sorted(RESULTS.items()):
        size = 1.0 if name.startswith("patho/") else mb
        lines.append(f"  {name:28s} median {seconds * 1e3:9.1f} ms  {size / seconds:8.1f} MB/s")

    def speedup(peer: str, mine: str) -> str:
        if peer in RESULTS and mine in RESULTS:
            return f"{RESULTS[peer] / RESULTS[mine]:.2f}x (time ratio ours/peer {RESULTS[mine] / RESULTS[peer]:.3f})"
        return "n/a"

    pairs = (
        ("encode 1 thread vs HF tokenizers", "encode/hf", "encode/ours"),
        ("encode 1 thread vs tiktoken", "encode/tiktoken", "encode/ours"),
        ("encode gpt2 1 thread vs tiktoken", "encode/tiktoken", "encode/ours-gpt2"),
        ("batch vs tiktoken batch", "batch/tiktoken", "batch/ours"),
        (f"batch scaling {THREADS} threads vs 1", "batch/ours-1", "batch/ours"),
    )
    for state in ("cold", "warm"):
        for label, peer, mine in pairs:
            lines.append(f"[{state}] {label:34s} {speedup(f'{peer}/{state}', f'{mine}/{state}')}")
    lines += [
        f"encode 1 thread, ours warm vs cold:        {speedup('encode/ours/cold', 'encode/ours/warm')}",
        f"decode vs tiktoken:               {speedup('decode/tiktoken', 'decode/ours')}",
        f"decode vs HF tokenizers:          {speedup('decode/hf', 'decode/ours')}",
    ]
    if "encode/ours/warm" in RESULTS:
        # per-byte time of ordinary code, warm (the pathological inputs are timed warm too)
        ordinary = RESULTS["encode/ours/warm"] / (mb * 1e6)
        lines.append(f"ordinary code, warm: {ordinary * 1e9:.1f} ns/byte")
        for kind in PATHOLOGICAL:
            if f"patho/{kind}" in RESULTS:
                per_byte = RESULTS[f"patho/{kind}"] / 1e6
                lines.append(
                    f"pathological {kind:15s} per-byte time / ordinary: {per_byte / ordinary:.2f}"
                )
    print("\n" + "\n".join(lines))
    out = Path(".benchmarks")
    out.mkdir(exist_ok=True)
    (out / "tokenizer.json").write_text(
        json.dumps({"medians_s": RESULTS, "mb": mb, "loadavg_report": load}, indent=1)
    )
