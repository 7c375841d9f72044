"""HumanEval-Infilling: canonical middles pass in all four sets; the CodeGen2 format."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from codegen_core.eval.humaneval import Problem, Sample, build_program, evaluate_samples
from codegen_core.eval.infilling import (
    INFILLING_SETS,
    SET_SIZES,
    generate_infill_samples,
    infill_prompt,
    load_infilling,
    truncate_infill,
)
from codegen_core.eval.sampler import SamplingParams
from codegen_core.eval.sandbox import Limits, SandboxPool

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "humaneval-infilling"
# Fast subsets (every k-th task): the full sets run in the slow test.
STRIDE = {"single-line": 10, "multi-line": 60, "random-span": 16, "random-span-light": 2}


@pytest.fixture(scope="module")
def sets() -> dict[str, dict[str, Problem]]:
    if not DATA.is_dir():
        pytest.skip(f"HumanEval-Infilling data not found at {DATA}")
    return {name: load_infilling(name, DATA) for name in INFILLING_SETS}


@pytest.fixture(scope="module")
def pool() -> Iterator[SandboxPool]:
    with SandboxPool(workers=2, limits=Limits(timeout=3.0)) as p:
        yield p


def test_sizes_and_program(sets: dict[str, dict[str, Problem]]) -> None:
    assert {name: len(problems) for name, problems in sets.items()} == SET_SIZES
    p = next(iter(sets["single-line"].values()))
    assert build_program(p, "MID") == (
        p.prompt + "MID" + p.suffix + "\n" + p.test + "\n" + f"check({p.entry_point})"
    )


def _canonical(problems: dict[str, Problem], stride: int) -> list[Sample]:
    return [Sample(t, p.canonical_solution) for t, p in list(problems.items())[::stride]]


@pytest.mark.parametrize("name", list(INFILLING_SETS))
def test_canonical_middles_pass(
    sets: dict[str, dict[str, Problem]], pool: SandboxPool, name: str
) -> None:
    problems = sets[name]
    samples = _canonical(problems, STRIDE[name])
    report = evaluate_samples(samples, problems, ks=(1,), pool=pool, ignore_incomplete=True)
    failing = [
        (s.task_id, r.reason) for s, r in zip(samples, report.results, strict=True) if not r.passed
    ]
    assert failing == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(INFILLING_SETS))
def test_canonical_middles_pass_full_sets(sets: dict[str, dict[str, Problem]], name: str) -> None:
    problems = sets[name]
    report = evaluate_samples(_canonical(problems, 1), problems, ks=(1,))
    assert report.pass_at_k == {"pass@1": 1.0}


def test_wrong_middles_fail(sets: dict[str, dict[str, Problem]], pool: SandboxPool) -> None:
    problems = sets["random-span-light"]
    samples = [Sample(t, "") for t in list(problems)[::8]]
    report = evaluate_samples(samples, problems, ks=(1,), pool=pool, ignore_incomplete=True)
    assert not any(r.passed for r in report.results)


def test_codegen2_format() -> None:
    assert infill_prompt("def f():\n", "\n    return x\n") == (
        "def f():\n<mask_1>\n    return x\n<|endoftext|><sep><mask_1>"
    )
    assert truncate_infill("    x = 1<eom>junk") == "    x = 1"
    assert truncate_infill("    x = 1<|endoftext|>") == "    x = 1"
    assert truncate_infill("    x = 1") == "    x = 1"
    with pytest.raises(ValueError, match="unknown infilling set"):
        load_infilling("two-line", DATA)


class MiddleSampler:
    def __init__(self, problems: dict[str, Problem]) -> None:
        self.by_prompt = {
            infill_prompt(p.prompt, p.suffix): p.canonical_solution for p in problems.values()
        }
        self.stops: list[tuple[str, ...]] = []

    def sample(self, prompts: list[str], params: SamplingParams) -> list[list[str]]:
        self.stops.append(params.stop)
        return [[self.by_prompt[p] + "<eom>more"] * params.n for p in prompts]


def test_generate_infill_samples(sets: dict[str, dict[str, Problem]], pool: SandboxPool) -> None:
    problems = dict(list(sets["random-span-light"].items())[:5])
    sampler = MiddleSampler(problems)
    samples = generate_infill_samples(problems, sampler, SamplingParams(n=1))
    assert "<eom>" in sampler.stops[0]
    report = evaluate_samples(samples, problems, ks=(1,), pool=pool)
    assert report.pass_at_k == {"pass@1": 1.0}
