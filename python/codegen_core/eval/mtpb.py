"""The Multi-Turn Programming Benchmark (CodeGen, Nijkamp et al. 2022), exact protocol.

Sampling (CodeGen ``mtpb_sample.py``): for every test input of a problem the context starts
as ``"# Import libraries.\\n\\nimport numpy as np\\n\\n"``; each turn appends
``"# {prompt.format(**input)}\\n"``, the model continues for up to ``max_gen_length`` tokens
(256 where the problem has none), the completion is cut by :func:`truncate_completion` and
appended with ``"\\n\\n"``; the history carries into the next turn.

Execution (CodeGen ``mtpb_exec.py``, 20 s): the last statement is rewritten into a print when
it is not one, ``print`` is overloaded to record its arguments, and the first argument of the
last print is compared with the expected output by the reference ``check_equivalence``. Both
run inside the sandbox (``mode="mtpb"``; rules in :mod:`codegen_core.eval._child`).

Recorded completions (our JSONL format, one line per history)::

    {"problem_id": 3, "input_index": 0, "sample_index": 0, "completions": ["...", "..."]}

``completions`` holds one raw model completion per turn (truncation is applied when the
history is rebuilt; it is idempotent, so already-truncated text is fine). Files written by
CodeGen's ``mtpb_sample.py`` (``id``, ``input``, ``gold_output``, ``completions`` = the whole
history) are scored too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from codegen_core.eval.humaneval import read_jsonl, write_jsonl
from codegen_core.eval.passk import pass_at_k
from codegen_core.eval.sampler import Sampler, SamplingParams, check_samples, truncate_completion
from codegen_core.eval.sandbox import ExecResult, Limits, Program, SandboxPool, run_programs

__all__ = [
    "ERRATA",
    "PREFIX",
    "MTPBProblem",
    "MTPBRecord",
    "MTPBReport",
    "build_history",
    "evaluate_records",
    "generate_records",
    "load_mtpb",
    "read_records",
    "unpassable_cases",
    "write_records",
]

PREFIX = "# Import libraries.\n\nimport numpy as np\n\n"
DEFAULT_MAX_GEN_LENGTH = 256  # mtpb_sample.py's default, used where a problem has none
DEFAULT_TIMEOUT = 20.0  # mtpb_exec.py's time_limit
NUM_INPUTS = 5

# Expected outputs that contradict their own prompts (scored as the reference does).
ERRATA: dict[tuple[int, int], str] = {
    (9, 2): "expects 'Mike'; the prompt's top-note rule gives 'John'",
    (56, 3): "expects a list ending in 8; the merged lists end in 6",
    (87, 0): "mean + 2 std equals 100.0 exactly, so 'larger than' keeps nothing; expects [100]",
    (89, 2): "str(type(1)) is \"<class 'int'>\", not 'int'",
}
PROBLEM_NOTES: dict[int, str] = {
    1: "name and description belong to another problem (the prompts are consistent)",
    57: "lists 6 outputs for 5 inputs; the first 5 are scored",
    38: "reads ./datasets/mlbootcamp5_train.csv, which is not distributed with mtpb.jsonl",
    46: "reads ./datasets/melb_data.csv (and needs sklearn); the file is not distributed",
}
_COMPARABLE = (str, int, float, bool, list, set, tuple)


@dataclass(frozen=True)
class MTPBProblem:
    id: int
    name: str
    description: str
    category: str
    prompts: tuple[str, ...]
    inputs: tuple[Mapping[str, Any], ...]
    outputs: tuple[Any, ...]
    max_gen_length: int  # DEFAULT_MAX_GEN_LENGTH where the file has none

    def turns(self, input_index: int) -> list[str]:
        """The formatted prompt of every turn for one test input, as ``# ...\\n`` lines."""
        inputs = self.inputs[self._check(input_index)]
        return [f"# {p.format(**inputs)}\n" for p in self.prompts]

    def expected(self, input_index: int) -> Any:
        return self.outputs[self._check(input_index)]

    def _check(self, input_index: int) -> int:
        if not 0 <= input_index < len(self.inputs):
            raise IndexError(
                f"problem {self.id} has {len(self.inputs)} test inputs; got index {input_index}"
            )
        return input_index


def load_mtpb(path: str | Path) -> dict[int, MTPBProblem]:
    """Problems by integer id, sorted by id (as mtpb_sample.py orders them)."""
    problems: dict[int, MTPBProblem] = {}
    for obj in read_jsonl(path):
        try:
            pid = int(obj["id"])
            prompts = tuple(obj["prompts"])
            inputs = tuple(obj["inputs"])
            outputs = tuple(obj["outputs"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: malformed problem {obj.get('id')!r}: {exc}") from None
        if len(outputs) < len(inputs):
            raise ValueError(f"{path}: problem {pid} has fewer outputs than inputs")
        problems[pid] = MTPBProblem(
            id=pid,
            name=obj.get("name", ""),
            description=obj.get("description", ""),
            category=obj.get("category", ""),
            prompts=prompts,
            inputs=inputs,
            outputs=outputs[: len(inputs)],  # zip(inputs, outputs): problem 57's 6th is unused
            max_gen_length=int(obj.get("max_gen_length", DEFAULT_MAX_GEN_LENGTH)),
        )
    if not problems:
        raise ValueError(f"{path}: no problems")
    return dict(sorted(problems.items()))


def build_history(problem: MTPBProblem, input_index: int, completions: Sequence[str]) -> str:
    """The program after all turns: prefix, then per turn prompt + truncated completion."""
    turns = problem.turns(input_index)
    if len(completions) != len(turns):
        raise ValueError(
            f"problem {problem.id} has {len(turns)} turns; got {len(completions)} completions"
        )
    history = PREFIX
    for prompt, completion in zip(turns, completions, strict=True):
        history += prompt + truncate_completion(completion) + "\n\n"
    return history


def unpassable_cases(problems: Mapping[int, MTPBProblem]) -> dict[tuple[int, int], str]:
    """Cases the reference check can never pass: expected value of an unsupported type."""
    cases = {}
    for problem in problems.values():
        for i, expected in enumerate(problem.outputs):
            if not isinstance(expected, _COMPARABLE):
                cases[(problem.id, i)] = (
                    f"expected {type(expected).__name__}: check_equivalence raises "
                    "'Unsupported type' for it"
                )
    return cases


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MTPBRecord:
    """One sampled history: per-turn completions, or a whole program (reference files)."""

    problem_id: int
    input_index: int
    completions: tuple[str, ...] = ()
    sample_index: int = 0
    program: str | None = None  # reference format: the history as sampled
    expected: Any = None  # reference format: its gold_output
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        if self.program is not None:
            return {
                "id": str(self.problem_id),
                "input_index": self.input_index,
                "gold_output": self.expected,
                "completions": self.program,
                **self.extra,
            }
        return {
            "problem_id": self.problem_id,
            "input_index": self.input_index,
            "sample_index": self.sample_index,
            "completions": list(self.completions),
            **self.extra,
        }


def read_records(
    path: str | Path, problems: Mapping[int, MTPBProblem] | None = None
) -> list[MTPBRecord]:
    """Read our per-turn format or CodeGen's mtpb_sample.py output (detected per line)."""
    records = []
    for index, obj in enumerate(read_jsonl(path)):
        where = f"{path}: record {index}"
        if isinstance(obj.get("completions"), str):  # CodeGen's format
            if "id" not in obj or "gold_output" not in obj:
                raise ValueError(f"{where}: a reference record needs 'id' and 'gold_output'")
            pid = int(obj["id"])
            input_index = obj.get("input_index", -1)
            if input_index == -1 and problems is not None and pid in problems:
                matches = [i for i, x in enumerate(problems[pid].inputs) if x == obj.get("input")]
                input_index = matches[0] if matches else -1
            extra = {k: v for k, v in obj.items() if k not in ("id", "completions", "gold_output")}
            records.append(
                MTPBRecord(
                    pid,
                    int(input_index),
                    program=obj["completions"],
                    expected=obj["gold_output"],
                    extra=extra,
                )
            )
            continue
        try:
            pid = int(obj["problem_id"])
            input_index = int(obj["input_index"])
            completions = obj["completions"]
        except (KeyError, TypeError, ValueError):
            raise ValueError(
                f"{where}: needs 'problem_id', 'input_index' and 'completions' (a list of "
                "per-turn strings)"
            ) from None
        if not isinstance(completions, list) or not all(isinstance(c, str) for c in completions):
            raise ValueError(f"{where}: 'completions' must be a list of strings")
        extra = {
            k: v
            for k, v in obj.items()
            if k not in ("problem_id", "input_index", "completions", "sample_index")
        }
        records.append(
            MTPBRecord(
                pid, input_index, tuple(completions), int(obj.get("sample_index", 0)), extra=extra
            )
        )
    return records


def write_records(path: str | Path, records: Sequence[MTPBRecord]) -> None:
    write_jsonl(path, (r.to_json() for r in records))


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MTPBReport:
    records: list[MTPBRecord]
    results: list[ExecResult]
    pass_rate: float  # n_success / n_total over all records (mtpb_exec.py's overall stat)
    per_problem: dict[int, dict[str, Any]]  # id -> {"n", "c", "pass_rate", "pass@k"...}
    pass_at_k: dict[str, float]  # mean over (problem, input) pairs
    errata: dict[str, str]  # "id/input" -> note, for the cases that were scored
    protections: tuple[str, ...] = ()


def _program_for(record: MTPBRecord, problems: Mapping[int, MTPBProblem]) -> tuple[str, Any]:
    if record.program is not None:
        return record.program, record.expected
    if record.problem_id not in problems:
        raise KeyError(f"record for unknown MTPB problem id {record.problem_id}")
    problem = problems[record.problem_id]
    return build_history(problem, record.input_index, record.completions), problem.expected(
        record.input_index
    )


def evaluate_records(
    records: Sequence[MTPBRecord],
    problems: Mapping[int, MTPBProblem],
    *,
    ks: Sequence[int] = (1,),
    pool: SandboxPool | None = None,
    workers: int | None = None,
    limits: Limits | None = None,
    progress: bool = False,
) -> MTPBReport:
    """Execute every history and score it (pass rate, per-problem counts, pass@k)."""
    limits = limits or Limits(timeout=DEFAULT_TIMEOUT)
    programs = []
    for i, record in enumerate(records):
        code, expected = _program_for(record, problems)
        programs.append(Program(code, mode="mtpb", expected=expected, key=i))
    results, protections = run_programs(
        programs,
        pool=pool,
        workers=workers,
        limits=limits,
        progress=progress and "mtpb",
        preload=("numpy",),
    )

    by_case: dict[tuple[int, int], list[bool]] = {}
    for record, result in zip(records, results, strict=True):
        by_case.setdefault((record.problem_id, record.input_index), []).append(result.passed)
    per_problem: dict[int, dict[str, Any]] = {}
    for (pid, _), outcomes in sorted(by_case.items()):
        entry = per_problem.setdefault(pid, {"n": 0, "c": 0, "cases": 0})
        entry["n"] += len(outcomes)
        entry["c"] += sum(outcomes)
        entry["cases"] += 1
    pass_k: dict[str, float] = {}
    for k in ks:
        if by_case and all(len(v) >= k for v in by_case.values()):
            values = {case: pass_at_k(len(v), sum(v), k) for case, v in by_case.items()}
            pass_k[f"pass@{k}"] = sum(values.values()) / len(values)
            for pid, entry in per_problem.items():
                mine = [v for (p, _), v in values.items() if p == pid]
                entry[f"pass@{k}"] = sum(mine) / len(mine)
    for entry in per_problem.values():
        entry["pass_rate"] = entry["c"] / entry["n"]
    n_total = len(results)
    n_success = sum(r.passed for r in results)
    notes = {**ERRATA, **unpassable_cases(problems)}
    scored = set(by_case)
    errata = {f"{p}/{i}": text for (p, i), text in sorted(notes.items()) if (p, i) in scored}
    for pid, text in PROBLEM_NOTES.items():
        if pid in per_problem:
            errata[str(pid)] = text
    return MTPBReport(
        list(records),
        results,
        n_success / n_total if n_total else 0.0,
        per_problem,
        pass_k,
        errata,
        protections,
    )


def generate_records(
    problems: Mapping[int, MTPBProblem],
    sampler: Sampler,
    params: SamplingParams,
    *,
    progress: bool = False,
) -> list[MTPBRecord]:
    """Sample ``params.n`` histories per (problem, input), turn by turn (mtpb_sample.py).

    Each turn is one sampler call with the ``params.n`` histories as prompts (n=1 each) and
    ``max_new_tokens`` set to the problem's ``max_gen_length``.
    """
    bar = None
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415 - only when showing progress

        bar = tqdm(total=sum(len(p.inputs) for p in problems.values()), desc="mtpb", unit="case")
    records: list[MTPBRecord] = []
    try:
        for problem in problems.values():
            turn_params = replace(params, n=1, max_new_tokens=problem.max_gen_length)
            for input_index in range(len(problem.inputs)):
                histories = [PREFIX] * params.n
                completions: list[list[str]] = [[] for _ in range(params.n)]
                for prompt in problem.turns(input_index):
                    histories = [h + prompt for h in histories]
                    out = check_samples(
                        histories, turn_params, sampler.sample(histories, turn_params)
                    )
                    for j, (row,) in enumerate(out):
                        completions[j].append(row)
                        histories[j] += truncate_completion(row) + "\n\n"
                records += [
                    MTPBRecord(problem.id, input_index, tuple(c), sample_index=j)
                    for j, c in enumerate(completions)
                ]
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return records
