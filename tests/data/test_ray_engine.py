"""``--engine ray`` writes byte-identical shards, manifest, report and dedup lists to the local
path, also when a Ray worker dies mid-run, and refuses to overwrite a finished output."""

from __future__ import annotations

import argparse
import json
import sysconfig
from pathlib import Path

import pytest

from codegen_core.data import cli

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")

from codegen_core.data import ray_engine

FAULT_ENV = ray_engine.FAULT_ENV
STDLIB = Path(sysconfig.get_paths()["stdlib"])


@pytest.fixture(scope="module")
def fault_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("faults")


@pytest.fixture(scope="module", autouse=True)
def ray_instance(fault_dir: Path):
    """One local Ray for the module (2 CPUs); its workers see the fault-injection folder."""
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="ERROR",
        runtime_env={"env_vars": {FAULT_ENV: str(fault_dir)}},
    )
    yield
    ray.shutdown()


def _edit(text: str, k: int) -> str:
    """A near-duplicate: one line changed every ~40 lines."""
    lines = text.splitlines(keepends=True)
    for i in range(k % 7, len(lines), 40):
        lines[i] = f"# edited {k} {i}\n"
    return "".join(lines)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """250 standard-library modules, near-duplicates with small edits, exact copies, a JSONL
    file with duplicates of files, and files every filter drops."""
    root = tmp_path_factory.mktemp("corpus")
    picked = []
    for path in sorted(STDLIB.rglob("*.py")):
        if {"site-packages", "dist-packages", "test", "tests"} & set(path.parts):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if 1_000 <= len(text) <= 20_000:
            picked.append((f"{len(picked):03d}_{path.name}", text))
        if len(picked) == 250:
            break
    assert len(picked) == 250
    for i, (name, text) in enumerate(picked):
        sub = root / f"d{i % 5}"
        sub.mkdir(exist_ok=True)
        (sub / name).write_text(text)
        if i % 9 == 0:
            (root / "near").mkdir(exist_ok=True)
            (root / "near" / f"v1_{name}").write_text(_edit(text, i))
            (root / "near" / f"v2_{name}").write_text(_edit(text, i + 1))
        if i % 23 == 0:
            (root / "copies").mkdir(exist_ok=True)
            (root / "copies" / name).write_text(text)
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.py").write_text("")
    (bad / "blob.py").write_bytes(b"\x00\x01binary")
    (bad / "latin1.py").write_bytes(b"caf\xe9 = 1\n")
    (bad / "wide.py").write_text("x = 1\n" * 10 + "y = '" + "a" * 2000 + "'\n")
    (bad / "notes.txt").write_text("not python")
    (bad / "dangling.py").symlink_to(root / "missing.py")
    records = [json.dumps({"content": picked[3][1]}), "{not json"]
    records += [json.dumps({"content": _edit(picked[5][1], 99)}), json.dumps({"text": "x = 1\n"})]
    (root / "data.jsonl").write_text("\n".join(records) + "\n")
    return root


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="codegen-core")
    cli.register(parser.add_subparsers(dest="command", required=True))
    return parser


PREPARE = ["--seq-len", "256", "--min-tail", "16", "--sequences-per-shard", "37"]


def _run(command: str, corpus: Path, out: Path, *extra: str) -> int:
    argv = ["data", command, str(corpus), "--out", str(out), "--no-progress", *extra]
    if command == "prepare":
        argv += PREPARE
    args = _parser().parse_args(argv)
    return args.func(args)


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def local_prepare(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("local") / "prepare"
    assert _run("prepare", corpus, out) == 0
    return _files(out)


def test_prepare_is_byte_identical(
    corpus: Path, local_prepare: dict[str, bytes], tmp_path: Path
) -> None:
    out = tmp_path / "ray"
    assert _run("prepare", corpus, out, "--engine", "ray") == 0
    got = _files(out)
    assert sorted(got) == sorted(local_prepare)
    for name, data in local_prepare.items():
        assert got[name] == data, name
    report = json.loads(local_prepare["report.json"])
    # The corpus exercises every stage: several shards, both kinds of duplicate.
    assert report["output"]["shards"] >= 3 and report["exact_dedup"]["removed"] >= 10
    assert report["near_dedup"]["clusters"] >= 20 and len(report["filters"]["dropped"]) >= 6


@pytest.mark.parametrize(
    "extra", [[], ["--no-near-dedup"], ["--verify", "none"], ["--verify", "signature"]]
)
def test_dedup_same_clusters(corpus: Path, tmp_path: Path, extra: list[str]) -> None:
    assert _run("dedup", corpus, tmp_path / "local", *extra) == 0
    assert _run("dedup", corpus, tmp_path / "ray", *extra, "--engine", "ray") == 0
    local, got = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(got) == ["kept.txt", "removed.txt", "report.json"]
    assert got == local
    near = [line for line in got["removed.txt"].decode().splitlines() if "\tnear\t" in line]
    assert bool(near) == ("--no-near-dedup" not in extra)


def test_dedup_large_bucket(tmp_path: Path) -> None:
    """A bucket past max_bucket (100) is linked as star + chain, as the local path does."""
    root = tmp_path / "corpus"
    root.mkdir()
    base = "".join(f"def f{i}(x):\n    return x * {i} + {i * i}\n\n" for i in range(60))
    for i in range(130):
        (root / f"m{i:03d}.py").write_text(f"{base}VALUE_{i} = {i}\n")
    assert _run("dedup", root, tmp_path / "local") == 0
    assert _run("dedup", root, tmp_path / "ray", "--engine", "ray") == 0
    local, got = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert got == local
    report = json.loads(got["report.json"])
    assert report["near_dedup"]["removed"] == 129
    assert report["near_dedup"]["candidate_pairs"] < 130 * 129 // 2  # not all pairs


@pytest.mark.parametrize("fault", ["minhash-1", "write-2"])
def test_worker_killed_mid_run(
    fault: str,
    corpus: Path,
    local_prepare: dict[str, bytes],
    fault_dir: Path,
    tmp_path: Path,
) -> None:
    """A worker dies (in the MinHash stage; after writing a shard, before reporting it): Ray
    retries the task and the output is the same."""
    (fault_dir / fault).touch()  # the task kills its worker once
    try:
        assert _run("prepare", corpus, tmp_path / "ray", "--engine", "ray") == 0
    finally:
        (fault_dir / fault).unlink()
    assert (fault_dir / f"{fault}.fired").exists(), "the worker was not killed"
    assert _files(tmp_path / "ray") == local_prepare


@pytest.mark.parametrize("fault", [None, "write-1"])
def test_shard_in_pieces_and_distributed_components(  # noqa: PLR0917 (pytest fixtures)
    fault: str | None,
    corpus: Path,
    local_prepare: dict[str, bytes],
    fault_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Several tasks pack and write each shard (pieces of 10 of its 37 rows; a worker killed
    after writing a piece), and connected components by label propagation over node
    partitions (forced: the corpus is small enough for one task): the same output."""
    monkeypatch.setattr(ray_engine, "COMPONENTS_ON_ONE_TASK", -1)
    out = tmp_path / "ray"
    args = _parser().parse_args(["data", "prepare", str(corpus), "--out", str(out), *PREPARE])
    inputs, config = cli._config(args)
    if fault:
        (fault_dir / fault).touch()
    try:
        result = ray_engine.prepare(
            inputs, out, config, ray_engine.RayOptions(rows_per_piece=10), progress=False
        )
    finally:
        if fault:
            (fault_dir / fault).unlink()
    assert not fault or (fault_dir / f"{fault}.fired").exists(), "the worker was not killed"
    assert result.timings["components_rounds"] >= 2  # init + at least one round
    assert _files(out) == local_prepare


def test_blocks_by_size(corpus: Path) -> None:
    """Blocks are consecutive runs of the listing, of about equal bytes, each at most
    batch_documents files."""
    from codegen_core.data import sources  # noqa: PLC0415
    from codegen_core.data.prepare import PrepareConfig  # noqa: PLC0415

    indexed = list(enumerate(ray_engine._list_files([corpus], sources.DEFAULT_EXCLUDE)))
    config = PrepareConfig()
    blocks = ray_engine._blocks_by_size(indexed, config, 8)
    assert [x for b in blocks for x in b] == indexed
    sizes = [sum(ray_engine._file_weight(n, config) for _, n in b) for b in blocks]
    biggest = max(ray_engine._file_weight(n, config) for _, n in indexed)
    target = sum(sizes) // 8
    assert len(blocks) in (8, 9) and all(target <= w < target + biggest for w in sizes[:-1])
    capped = ray_engine._blocks_by_size(indexed, PrepareConfig(batch_documents=40), 2)
    assert [x for b in capped for x in b] == indexed and all(0 < len(b) <= 40 for b in capped)
    assert ray_engine._blocks_by_size([], config, 8) == [[]]


def test_rerun_refused_without_overwrite(
    corpus: Path, local_prepare: dict[str, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "ray"
    out.mkdir()
    (out / "notes.md").write_text("mine")  # other files in --out are left alone
    (out / "manifest.json").write_text("{}")  # a finished (here: fake) output
    assert _run("prepare", corpus, out, "--engine", "ray") == 2
    assert "already holds prepared data" in capsys.readouterr().err
    assert (out / "manifest.json").read_text() == "{}"
    assert _run("prepare", corpus, out, "--engine", "ray", "--overwrite") == 0
    got = _files(out)
    assert got.pop("notes.md") == b"mine"
    assert got == local_prepare
    assert not [p for p in out.iterdir() if p.is_dir()], "the temporary directory is left"


@pytest.mark.parametrize("root", [".", "NAME", "./NAME/", "ABS"])
def test_driver_listing_spells_paths_as_the_local_walk(
    root: str, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Document names come from the listing, so it must match ``sources._walk`` exactly."""
    from codegen_core.data import sources  # noqa: PLC0415

    monkeypatch.chdir(corpus if root == "." else corpus.parent)
    start = Path(str(corpus) if root == "ABS" else root.replace("NAME", corpus.name))
    exclude = (*sources.DEFAULT_EXCLUDE, "near")
    want = [str(p) for p in sources._walk(start, exclude)]
    assert len(want) > 200
    assert list(ray_engine._walk_names(start, exclude)) == want


@pytest.mark.parametrize("piece", [0, 2])
@pytest.mark.parametrize("final", ["pad", "drop"])
def test_pack_plan_replays_the_packer(final: str, piece: int) -> None:
    """The driver's length-only replay gives the Packer's statistics and, for every shard
    (or piece of ``piece`` rows of a shard), the (block, document, offset) its first
    sequence starts at."""
    import numpy as np  # noqa: PLC0415

    from codegen_core.data.pack import PackConfig, Packer  # noqa: PLC0415

    rng = np.random.default_rng(0)
    config = PackConfig(seq_len=64, min_tail=8, eos_id=0, pad_id=0, final=final)
    blocks = [rng.integers(0, 150, size=int(rng.integers(0, 30))) for _ in range(12)]
    plan = ray_engine._PackPlan(config, sequences_per_shard=3, rows_per_piece=piece)
    packer = Packer(config)
    where, seqs = [], []  # where[g] = (block, doc, length) of document g
    for b, lengths in enumerate(blocks):
        plan.add(b, lengths)
        for d, n in enumerate(lengths.tolist()):
            # token = 1000 * document + position + 1 (EOS is 0): sequences say where they start
            seqs += packer.add(1000 * len(where) + np.arange(1, n + 1))
            where.append((b, d, n))
    seqs += packer.finish()
    plan.finish()
    firsts = []
    for i, seq in enumerate(seqs):
        first = int(seq.tokens[0])
        if first:  # inside a document
            b, d, _ = where[(first - 1) // 1000]
            firsts.append((b, d, (first - 1) % 1000))
        else:  # the EOS of the document that ended the previous sequence
            b, d, n = where[(int(seqs[i - 1].tokens[-1]) - 1) // 1000]
            firsts.append((b, d, n))
    stats = packer.stats
    assert (plan.documents, plan.tokens_in, plan.dropped, plan.tails, plan.sequences) == (
        stats.documents,
        stats.tokens_in,
        stats.tokens_dropped,
        stats.tails_dropped,
        stats.sequences,
    )
    assert plan.padding == stats.padding and stats.sequences == len(seqs) > 20
    assert plan.num_shards == -(-len(seqs) // 3)
    pieces = list(plan.pieces())
    if piece:  # pieces start at rows 0 and 2 of every shard of 3
        want = [i for i in range(len(seqs)) if i % 3 in (0, 2)]
        assert [3 * shard + row for shard, row, _, _ in pieces] == want
        assert [n for _, row, n, _ in pieces] == [
            min(2 if row == 0 else 1, len(seqs) - (3 * shard + row)) for shard, row, _, _ in pieces
        ]
    else:
        want = list(range(0, len(seqs), 3))
        assert plan.starts[: plan.num_shards] == firsts[::3]
    # A sequence that starts with an EOS (0) may start at an empty document or at the EOS
    # of the document before: ``firsts`` cannot tell which, so those are left out here.
    clear = [k for k, i in enumerate(want) if int(seqs[i].tokens[0]) != 0]
    assert len(clear) > len(want) // 2
    assert [pieces[k][3] for k in clear] == [firsts[want[k]] for k in clear]
