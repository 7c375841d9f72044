"""``eval --model`` never loses work: samples are written as they are made, and a run given
the same output resumes where an interrupted one stopped, with the same pass@k."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from codegen_core.eval import cli
from codegen_core.eval.humaneval import read_jsonl, write_jsonl
from codegen_core.eval.mtpb import load_mtpb
from codegen_core.eval.sampler import SamplingParams

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
HUMANEVAL = SHARED / "humaneval" / "HumanEval.jsonl.gz"
MTPB = SHARED / "mtpb" / "mtpb.jsonl"


class FakeSampler:
    """Right answers for some prompts, wrong for the rest; raises KeyboardInterrupt (a
    kill) on call ``stop_at``; records every prompt it is asked for."""

    def __init__(self, answers: dict[str, str], stop_at: int | None = None) -> None:
        self.answers, self.stop_at = answers, stop_at
        self.calls: list[list[str]] = []

    def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
        if self.stop_at is not None and len(self.calls) + 1 == self.stop_at:
            raise KeyboardInterrupt
        self.calls.append(list(prompts))

        def answer(p: str, j: int) -> str:
            return self.answers.get(p, "    return None\n") if j == 0 else "    return 0\n"

        return [[answer(p, j) for j in range(params.n)] for p in prompts]


@pytest.fixture
def problems(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The first 6 HumanEval problems; answers for 3 of them."""
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    rows = list(read_jsonl(HUMANEVAL))[:6]
    path = tmp_path / "problems.jsonl"
    write_jsonl(path, rows)
    return path, {r["prompt"]: r["canonical_solution"] for r in rows[::2]}


def _run(monkeypatch: pytest.MonkeyPatch, sampler: FakeSampler, argv: list[str]) -> int:
    def fake(args: argparse.Namespace, **_: Any) -> FakeSampler:
        return sampler

    monkeypatch.setattr(cli, "_sampler", fake)
    return cli.main(argv)


def _argv(problems: Path, out: Path) -> list[str]:
    return ["eval", "humaneval", "--model", "fake", "--problems", str(problems), "--n", "2",
            "-k", "1,2", "--batch-rows", "1", "--out", str(out), "--no-progress",
            "--workers", "2"]  # fmt: skip


def test_killed_run_resumes_with_the_same_pass_at_k(
    problems: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, answers = problems
    whole = FakeSampler(answers)
    assert _run(monkeypatch, whole, _argv(path, tmp_path / "whole.json")) == 0
    assert [len(c) for c in whole.calls] == [2, 2, 2]  # 4 rows per call (--batch-rows 1)
    expected = json.loads((tmp_path / "whole.json").read_text())["pass_at_k"]
    assert expected == {"pass@1": 0.25, "pass@2": 0.5}

    out = tmp_path / "run.json"
    killed = FakeSampler(answers, stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        _run(monkeypatch, killed, _argv(path, out))
    samples = tmp_path / "run.samples.jsonl"  # next to --out
    first = samples.read_text().splitlines()
    assert len(first) == 4 and not out.exists()  # the first call's 2 problems x 2 samples
    samples.write_text(samples.read_text() + '{"task_id": "HumanEval/4", "compl')  # cut off

    again = FakeSampler(answers)
    with pytest.warns(UserWarning, match="cut-off last line"):
        assert _run(monkeypatch, again, _argv(path, out)) == 0
    asked = [p for call in again.calls for p in call]
    assert len(asked) == 4 and not set(asked) & set(killed.calls[0])  # only the rest
    assert json.loads(out.read_text())["pass_at_k"] == expected
    lines = samples.read_text().splitlines()
    assert lines[:4] == first and len(lines) == 12
    assert all(json.loads(x)["task_id"].startswith("HumanEval/") for x in lines)

    done = FakeSampler(answers)  # a finished file: nothing sampled, same report
    assert _run(monkeypatch, done, _argv(path, out)) == 0
    assert done.calls == [] and json.loads(out.read_text())["pass_at_k"] == expected


def test_resume_refuses_a_file_from_other_settings(
    problems: tuple[Path, dict[str, str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    path, answers = problems
    out = tmp_path / "r.json"
    assert _run(monkeypatch, FakeSampler(answers), _argv(path, out)) == 0
    argv = _argv(path, out)
    argv[argv.index("--n") + 1] = "1"
    assert _run(monkeypatch, FakeSampler(answers), argv) == 2
    assert "has 2 samples but this run makes 1" in capsys.readouterr().err
    gz = [*_argv(path, out), "--samples-out", str(tmp_path / "s.jsonl.gz")]
    assert _run(monkeypatch, FakeSampler(answers), gz) == 2
    assert "cannot be gzipped" in capsys.readouterr().err


def test_mtpb_resumes_by_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MTPB: a problem's records are written when it is done; a rerun samples the rest, one
    call per turn with all of a problem's histories."""
    if not MTPB.is_file():
        pytest.skip(f"MTPB data not found at {MTPB}")
    ids = ["3", "4"]
    turns = {pid: len(p.prompts) for pid, p in load_mtpb(MTPB).items() if str(pid) in ids}
    argv = ["eval", "mtpb", "--model", "fake", "--problems", str(MTPB), "--problem-ids", *ids,
            "--samples-out", str(tmp_path / "m.jsonl"), "--no-progress", "--workers", "2"]  # fmt: skip
    killed = FakeSampler({}, stop_at=turns[3] + 1)  # dies in problem 4's first turn
    with pytest.raises(KeyboardInterrupt):
        _run(monkeypatch, killed, argv)
    assert [len(c) for c in killed.calls] == [5] * turns[3]  # 5 inputs per turn
    rows = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [(r["problem_id"], r["input_index"]) for r in rows] == [(3, i) for i in range(5)]
    again = FakeSampler({})
    assert _run(monkeypatch, again, argv) == 0
    assert len(again.calls) == turns[4]
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 10


def test_infill_prompts_and_middles_are_resumed_too(tmp_path: Path) -> None:
    """HumanEval-Infilling goes through the same writer: the infill format in, the middle
    (cut at <eom>) out, and a rerun samples only what is missing."""
    from codegen_core.eval import infilling  # noqa: PLC0415
    from codegen_core.eval.resume import humaneval_samples  # noqa: PLC0415

    data = SHARED / "humaneval-infilling"
    if not (data / infilling.INFILLING_SETS["random-span-light"]).is_file():
        pytest.skip(f"HumanEval-Infilling data not found in {data}")
    problems = dict(list(infilling.load_infilling("random-span-light", data).items())[:4])
    options: dict[str, Any] = {
        "prompt_of": lambda p: infilling.infill_prompt(p.prompt, p.suffix),
        "finish": infilling.truncate_infill,
        "rows_per_call": 2,
        "path": tmp_path / "s.jsonl",
    }
    seen: list[str] = []

    class Middle:
        def sample(self, prompts: Sequence[str], params: SamplingParams) -> list[list[str]]:
            seen.extend(prompts)
            return [["x = 1<eom>junk"] for _ in prompts]

    samples, resumed = humaneval_samples(problems, Middle(), SamplingParams(), **options)
    assert resumed == 0 and [s.completion for s in samples] == ["x = 1"] * 4
    assert all(p.endswith("<|endoftext|><sep><mask_1>") for p in seen)
    lines = (tmp_path / "s.jsonl").read_text().splitlines()
    (tmp_path / "s.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed after 2
    seen.clear()
    again, resumed = humaneval_samples(problems, Middle(), SamplingParams(), **options)
    assert resumed == 2 and len(seen) == 2 and again == samples
