"""The ``eval`` CLI: scores samples files, writes reports, explains a missing model."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import pytest

from codegen_core.eval import cli
from codegen_core.eval.humaneval import Sample, load_problems, write_samples
from codegen_core.eval.mtpb import MTPBRecord, write_records

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"


def test_register_adds_eval_with_subcommands() -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "humaneval", "--samples", "s.jsonl", "-k", "1,10"])
    assert args.benchmark == "humaneval" and args.func is not None
    with pytest.raises(SystemExit):  # --samples and --model are exclusive
        parser.parse_args(["eval", "mtpb", "--samples", "a", "--model", "b", "--problems", "p"])


def test_humaneval_samples_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    if not data.is_file():
        pytest.skip(f"HumanEval data not found at {data}")
    problems = load_problems(data)
    tasks = list(problems)[:4]
    samples = [Sample(t, problems[t].canonical_solution) for t in tasks]
    samples += [Sample(t, "    return None\n") for t in tasks]
    write_samples(tmp_path / "s.jsonl", samples)
    out = tmp_path / "report.json"
    argv = ["eval", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--problems", str(data)]
    argv += ["--ignore-incomplete", "-k", "1,2", "--out", str(out), "--no-progress"]
    argv += ["--workers", "2", "--results-jsonl", str(tmp_path / "r.jsonl")]
    plot = tmp_path / "passk.png"
    if importlib.util.find_spec("matplotlib") is not None:  # the optional plot extra
        argv += ["--plot", str(plot)]
    assert cli.main(argv) == 0
    if importlib.util.find_spec("matplotlib") is not None:
        assert plot.read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "pass@k" in printed and "50.0%" in printed and "HumanEval/0" in printed
    report = json.loads(out.read_text())
    assert report["pass_at_k"] == {"pass@1": 0.5, "pass@2": 1.0}
    assert len(report["results"]) == 8 and report["status_counts"] == {"passed": 4, "failed": 4}
    rows = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True] * 4 + [False] * 4


def test_mtpb_samples_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = SHARED / "mtpb" / "mtpb.jsonl"
    if not data.is_file():
        pytest.skip(f"MTPB data not found at {data}")
    turns = (
        "def f(m):\n    return m * 60",
        "def g(h):\n    return h * 3600",
        "print(g(2) + f(13))",
    )
    write_records(tmp_path / "m.jsonl", [MTPBRecord(3, 0, turns), MTPBRecord(3, 1, turns)])
    argv = ["eval", "mtpb", "--samples", str(tmp_path / "m.jsonl"), "--problems", str(data)]
    argv += ["--problem-ids", "3", "--no-progress", "--out", str(tmp_path / "m.json")]
    assert cli.main(argv) == 0
    assert "pass rate: 50.0%" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["pass_rate"] == 0.5


def test_model_without_generator_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "codegen_core.sampling.generate", None)  # not importable
    data = SHARED / "humaneval" / "HumanEval.jsonl.gz"
    if not data.is_file():
        pytest.skip(f"HumanEval data not found at {data}")
    argv = ["eval", "humaneval", "--model", str(tmp_path), "--problems", str(data)]
    assert cli.main(argv) == 2
    assert "cannot load the JAX model" in capsys.readouterr().err


def test_bad_k_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="ks"):
        cli._ks("1,x")
    with pytest.raises(SystemExit, match="positive"):
        cli._ks("0")
