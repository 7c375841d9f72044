"""Near-dedup: codegen-core vs datasketch, same shingles, same threshold, one run.

Corpus: every ``.py`` file under this interpreter's standard library directory, which holds
its ``site-packages`` too (pip's and setuptools' vendored copies are real near-duplicates),
plus synthetic mutants with Jaccards spread around the threshold.

* speed and memory: each side runs end to end (read files -> shingles -> MinHash -> LSH ->
  exact-Jaccard check of every candidate pair -> clusters) in its own subprocess; we report
  CPU seconds (user + sys, all threads) and peak RSS from ``getrusage``, and the ratios.
  datasketch gets the same code tokens and 5-gram shingles and the same check, built in
  Python as a datasketch user would (it has no verification of its own).
* accuracy: duplicate pairs against exact Jaccard from an all-pairs join (prefix filtering,
  exact), at 0.85. Both sides are scored twice: the LSH candidate pairs (their recall bounds
  everything after; their precision is what an unverified LSH returns), and the pairs left
  after the same exact-Jaccard verification (``_core.exact_jaccard``, what our pipeline
  runs). datasketch runs with our (bands, rows) and with its default weights.

Run: ``pytest benchmarks/bench_dedup.py -s --benchmark-enable``; ``BENCH_DEDUP_MB=40`` caps
the corpus (first files in sorted order) for a quicker run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

THRESHOLD = 0.85
NUM_PERM = 256


def corpus_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    cap = float(os.environ.get("BENCH_DEDUP_MB", "inf")) * 1e6
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if total + size > cap:
            break
        files.append(path)
        total += size
    return files


def read_texts(files: list[Path]) -> tuple[list[str], list[Path]]:
    texts, kept = [], []
    for path in files:
        try:
            texts.append(path.read_bytes().decode("utf-8"))
            kept.append(path)
        except (OSError, UnicodeDecodeError):
            continue
    return texts, kept


# ----------------------------------------------------------------------------- workers
# Each runs in a fresh interpreter: `python bench_dedup.py WORKER LISTFILE [SCHEME]`.


def _worker_ours(files: list[Path], scheme: str) -> int:
    from codegen_core.data.lsh import NearDuplicateIndex  # noqa: PLC0415
    from codegen_core.data.minhash import MinHashConfig  # noqa: PLC0415

    index = NearDuplicateIndex(MinHashConfig(scheme=scheme))
    kept: list[Path] = []
    batch: list[str] = []
    for path in files:  # streaming: texts are not kept
        try:
            batch.append(path.read_bytes().decode("utf-8"))
        except (OSError, UnicodeDecodeError):
            continue
        kept.append(path)
        if len(batch) == 512:
            index.add(batch)
            batch = []
    index.add(batch)
    result = index.find_duplicates(lambda ids: [kept[i].read_text("utf-8") for i in ids])
    return result.num_removed


def _py_shingles(data: bytes, n: int = 5) -> set[bytes]:
    """5-gram shingles of code tokens, built in Python as a datasketch user would."""
    from codegen_core.data.minhash_reference import _TOKEN_RE  # noqa: PLC0415

    tokens = _TOKEN_RE.findall(data)
    if not tokens:
        return set()
    return {b" ".join(tokens[i : i + n]) for i in range(max(1, len(tokens) - n + 1))}


def _worker_datasketch(files: list[Path]) -> int:
    """datasketch's LSH, then the same exact-Jaccard check of every candidate pair that our
    pipeline does (documents re-read for the pairs, as ours fetches them), then clusters."""
    from datasketch import MinHash, MinHashLSH  # noqa: PLC0415

    from codegen_core.data.minhash import MinHashConfig  # noqa: PLC0415

    cfg = MinHashConfig()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, weights=(cfg.fp_weight, cfg.fn_weight))
    template = MinHash(num_perm=NUM_PERM, seed=1)
    kept: list[Path] = []
    candidates: list[tuple[int, int]] = []
    for path in files:
        try:
            data = path.read_bytes()
            data.decode("utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        doc = len(kept)
        kept.append(path)
        shingles = _py_shingles(data)
        if not shingles:
            continue
        m = MinHash(num_perm=NUM_PERM, permutations=template.permutations, scheme=template.scheme)
        m.update_batch(list(shingles))
        candidates.extend((other, doc) for other in lsh.query(m))
        lsh.insert(doc, m)
    parent = list(range(len(kept)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    candidates.sort()
    chunk = 4096  # pairs verified per batch of re-read documents, as ours
    for start in range(0, len(candidates), chunk):
        pairs = candidates[start : start + chunk]
        involved = sorted({d for pair in pairs for d in pair})
        sets = {d: _py_shingles(kept[d].read_bytes()) for d in involved}
        for i, j in pairs:
            a, b = sets[i], sets[j]
            common = len(a & b)
            if common / (len(a) + len(b) - common) >= THRESHOLD:
                ri, rj = find(i), find(j)
                parent[max(ri, rj)] = min(ri, rj)
    return sum(1 for i in range(len(parent)) if find(i) != i)


def _run_worker(argv: list[str]) -> None:
    import resource  # noqa: PLC0415

    worker, listfile = argv[0], argv[1]
    files = [Path(p) for p in Path(listfile).read_text().splitlines()]
    start = time.perf_counter()
    removed = _worker_ours(files, argv[2]) if worker == "ours" else _worker_datasketch(files)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "removed": removed,
                "cpu_s": usage.ru_utime + usage.ru_stime,
                "wall_s": time.perf_counter() - start,
                "peak_rss_mb": usage.ru_maxrss / 1024,
            }
        )
    )


def _measure(listfile: Path, *args: str) -> dict[str, float]:
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run(
        [sys.executable, __file__, *args[:1], str(listfile), *args[1:]],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":  # a worker: keep its imports (and so its memory) minimal
    _run_worker(sys.argv[1:])
    sys.exit(0)

# ----------------------------------------------------------------------------- benchmarks
# (imported only under pytest)
import numpy as np
import pytest

from codegen_core import _core
from codegen_core.data import accuracy
from codegen_core.data.lsh import near_dedup
from codegen_core.data.minhash import MinHashConfig, minhash_signatures


@pytest.fixture(scope="module")
def listfile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    files = corpus_files()
    path = tmp_path_factory.mktemp("bench") / "files.txt"
    path.write_text("".join(f"{f}\n" for f in files))
    return path, sum(f.stat().st_size for f in files) / 1e6


def test_speed_and_memory_vs_datasketch(benchmark, listfile: tuple[Path, float]) -> None:
    pytest.importorskip("datasketch")
    path, mb = listfile
    runs = {
        "codegen-core (permutations)": _measure(path, "ours", "permutations"),
        "codegen-core (oph)": _measure(path, "ours", "oph"),
        "datasketch": _measure(path, "datasketch"),
    }
    peer = runs["datasketch"]
    print(f"\ncorpus: {mb:.1f} MB of .py under {sysconfig.get_paths()['stdlib']}")
    for name, r in runs.items():
        print(
            f"{name:30s} {mb / r['cpu_s']:7.1f} MB/CPU-s  cpu {r['cpu_s']:7.2f} s  "
            f"wall {r['wall_s']:7.2f} s  peak RSS {r['peak_rss_mb']:7.1f} MB  "
            f"removed {r['removed']}"
        )
    for name in ("codegen-core (permutations)", "codegen-core (oph)"):
        r = runs[name]
        print(
            f"{name}: throughput/CPU-s ours/peer = {peer['cpu_s'] / r['cpu_s']:.1f}x, "
            f"peak memory ours/peer = {r['peak_rss_mb'] / peer['peak_rss_mb']:.3f}"
        )
    # In-process timing of our default end to end, for pytest-benchmark's table.
    texts, _ = read_texts(Path(p) for p in path.read_text().splitlines())
    benchmark.pedantic(near_dedup, args=(texts,), rounds=1, iterations=1)


def _predicted(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(j)) for i, j in pairs}


def _datasketch_candidates(
    sets: list[np.ndarray], weights: tuple[float, float]
) -> tuple[set[tuple[int, int]], tuple[int, int]]:
    """datasketch's LSH candidate pairs (i < j) over the very same shingles, and its (b, r)."""
    datasketch = pytest.importorskip("datasketch")
    lsh = datasketch.MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, weights=weights)
    template = datasketch.MinHash(num_perm=NUM_PERM, seed=1)
    pairs = set()
    for i, s in enumerate(sets):
        if s.size == 0:
            continue
        m = datasketch.MinHash(
            num_perm=NUM_PERM, permutations=template.permutations, scheme=template.scheme
        )
        m.update_batch([int(x).to_bytes(4, "little") for x in s])  # the very same shingles
        pairs |= {(j, i) for j in lsh.query(m)}
        lsh.insert(i, m)
    return pairs, (lsh.b, lsh.r)


def _verified(texts: list[str], candidates: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """The candidates whose exact Jaccard reaches the threshold, by the very function our
    pipeline verifies its own candidates with (``_core.exact_jaccard`` on the texts)."""
    if not candidates:
        return set()
    pairs = np.array(sorted(candidates), dtype=np.uint32)
    similarity = _core.exact_jaccard(texts, pairs, MinHashConfig().ngram, 0)
    return _predicted(pairs[similarity >= THRESHOLD])


Row = dict[str, float]


def _row(candidates: set[tuple[int, int]], final: set[tuple[int, int]], truth: set) -> Row:
    cand_p, cand_r = accuracy.pair_scores(candidates, truth)
    p, r = accuracy.pair_scores(final, truth)
    return {"candidates": len(candidates), "cand_precision": cand_p, "cand_recall": cand_r,
            "precision": p, "recall": r}  # fmt: skip


def _accuracy_table(name: str, texts: list[str]) -> dict[str, Row]:
    """Both sides: LSH candidates (recall = true pairs among them), then the same exact
    Jaccard verification; final precision/recall of the accepted pairs."""
    sets = accuracy.shingle_sets(texts)
    start = time.perf_counter()
    truth = set(accuracy.exact_similar_pairs(sets, THRESHOLD))
    print(
        f"\n{name}: {len(texts)} docs, {len(truth)} pairs with Jaccard >= {THRESHOLD} "
        f"(exact all-pairs join: {time.perf_counter() - start:.1f} s)"
    )
    cfg = MinHashConfig()
    rows: dict[str, Row] = {}
    for scheme in ("permutations", "oph"):
        result = near_dedup(texts, MinHashConfig(scheme=scheme))
        rows[f"codegen-core {scheme}, (b, r) = {cfg.lsh_params()}"] = _row(
            _predicted(result.pairs), _predicted(result.duplicate_pairs()), truth
        )
    for label, weights in (("same weights", (cfg.fp_weight, cfg.fn_weight)),
                           ("default weights", (0.5, 0.5))):  # fmt: skip
        candidates, br = _datasketch_candidates(sets, weights)
        rows[f"datasketch {label}, (b, r) = {br}, + exact verification"] = _row(
            candidates, _verified(texts, candidates), truth
        )
    for label, row in rows.items():
        print(f"  {label}")
        print(
            f"      LSH candidates {int(row['candidates']):7d}: recall {row['cand_recall']:.4f}, "
            f"precision {row['cand_precision']:.4f} (= the result without verification)"
        )
        print(f"      after verification: precision {row['precision']:.4f}, "
              f"recall {row['recall']:.4f}")  # fmt: skip
    return rows


def _check(rows: dict[str, Row]) -> None:
    for label, row in rows.items():
        if label.startswith("codegen-core"):
            assert row["precision"] >= 0.97 and row["recall"] >= 0.97, (label, row)
        # verification only removes pairs: final recall cannot exceed the candidates'
        assert row["recall"] <= row["cand_recall"] + 1e-12, (label, row)


def test_accuracy_real_corpus(listfile: tuple[Path, float]) -> None:
    texts, _ = read_texts(Path(p) for p in listfile[0].read_text().splitlines())
    _check(_accuracy_table("stdlib + site-packages", texts))


def test_accuracy_synthetic_mutants() -> None:
    texts = accuracy.synthetic_mutants(1, families=300, mutants=8, length=400)
    texts += accuracy.synthetic_mutants(2, families=300, mutants=4, length=60)  # short docs
    _check(_accuracy_table("synthetic mutants", texts))


def test_estimator_error_by_scheme() -> None:
    """Jaccard-estimate error of each scheme on pairs of known similarity (mutant families):
    the measurement behind choosing one-permutation hashing as the default."""
    long_docs = accuracy.synthetic_mutants(1, families=200, mutants=8, length=400)
    short_docs = accuracy.synthetic_mutants(2, families=200, mutants=8, length=60)
    for label, texts in (("~400 shingles", long_docs), ("~60 shingles", short_docs)):
        sets = accuracy.shingle_sets(texts)
        pairs = [
            (f * 9 + a, f * 9 + b) for f in range(200) for a in range(9) for b in range(a + 1, 9)
        ]
        exact = np.array([accuracy.exact_jaccard(sets[i], sets[j]) for i, j in pairs])
        line = []
        for scheme in ("permutations", "oph"):
            sigs, _ = minhash_signatures(texts, MinHashConfig(scheme=scheme))
            idx = np.array(pairs)
            estimate = (sigs[idx[:, 0]] == sigs[idx[:, 1]]).mean(axis=1)
            rmse = float(np.sqrt(np.mean((estimate - exact) ** 2)))
            line.append(f"{scheme} RMSE {rmse:.4f} (bias {float(np.mean(estimate - exact)):+.4f})")
            # Binomial standard deviation of a 256-permutation estimate is <= 0.031.
            assert rmse < 0.035, (scheme, label, rmse)
        print(f"\n{label}: {len(pairs)} pairs: " + ", ".join(line))
