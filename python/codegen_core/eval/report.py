"""Reports: a JSON document with every result, and a readable summary table."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from codegen_core.eval.humaneval import ScoreReport
from codegen_core.eval.mtpb import MTPBReport
from codegen_core.eval.sandbox import ExecResult

__all__ = [
    "flag_counts",
    "format_table",
    "humaneval_report",
    "humaneval_summary",
    "mtpb_report",
    "mtpb_summary",
    "write_json",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with right-aligned numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(row[i], (int, float)) for row in rows) if rows else False
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(parts).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(list(headers)), sep, *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _status_table(statuses: Counter[str]) -> str:
    total = sum(statuses.values()) or 1
    rows = [(s, n, 100.0 * n / total) for s, n in statuses.most_common()]
    return format_table(["status", "count", "%"], rows)


def flag_counts(results: Sequence[ExecResult]) -> dict[str, int]:
    """How many programs raised each flag (see :class:`~codegen_core.eval.sandbox.ExecResult`),
    and how many were ``tampered`` (a pass voided because the verdict cannot be trusted)."""
    counts: Counter[str] = Counter()
    for result in results:
        counts.update(result.flags)
        counts["tampered"] += result.tampered
    return {name: n for name, n in counts.most_common() if n}


def _flag_lines(results: Sequence[ExecResult]) -> list[str]:
    counts = flag_counts(results)
    if not counts:
        return []
    return [
        "",
        (
            "Flagged programs (exits before the checks, introspection of the harness; a "
            "'tampered' run is never passed):"
        ),
        format_table(["flag", "programs"], list(counts.items())),
    ]


def humaneval_report(report: ScoreReport, *, meta: Mapping[str, Any] | None = None) -> dict:
    """JSON-ready document: settings, pass@k, per-task counts and every sample's result."""
    return {
        "benchmark": "humaneval",
        "meta": dict(meta or {}),
        "pass_at_k": report.pass_at_k,
        "status_counts": report.status_counts(),
        "flag_counts": flag_counts(report.results),
        "protections": list(report.protections),
        "per_task": report.per_task,
        "results": [
            {"task_id": s.task_id, "completion": s.completion, **r.to_json()}
            for s, r in zip(report.samples, report.results, strict=True)
        ],
    }


def humaneval_summary(report: ScoreReport, *, title: str = "HumanEval") -> str:
    ks = sorted(report.pass_at_k, key=lambda key: int(key.split("@")[1]))
    lines = [
        f"{title}: {len(report.per_task)} problems, {len(report.samples)} samples",
        "",
        format_table(["k", "pass@k (%)"], [(k, 100.0 * report.pass_at_k[k]) for k in ks])
        if ks
        else "(no k with enough samples per problem)",
        "",
        _status_table(Counter(r.status.value for r in report.results)),
        *_flag_lines(report.results),
    ]
    failing = [(t, v["c"], v["n"]) for t, v in report.per_task.items() if v["c"] < v["n"]]
    if failing and len(failing) <= 20:
        lines += ["", format_table(["task", "passed", "samples"], failing)]
    return "\n".join(lines)


def mtpb_report(report: MTPBReport, *, meta: Mapping[str, Any] | None = None) -> dict:
    return {
        "benchmark": "mtpb",
        "meta": dict(meta or {}),
        "pass_rate": report.pass_rate,
        "pass_at_k": report.pass_at_k,
        "status_counts": dict(Counter(r.status.value for r in report.results)),
        "flag_counts": flag_counts(report.results),
        "protections": list(report.protections),
        "errata": report.errata,
        "per_problem": {str(k): v for k, v in report.per_problem.items()},
        "results": [
            {"record": rec.to_json(), **res.to_json()}
            for rec, res in zip(report.records, report.results, strict=True)
        ],
    }


def mtpb_summary(report: MTPBReport) -> str:
    lines = [
        f"MTPB: {len(report.per_problem)} problems, {len(report.records)} histories",
        f"pass rate: {100.0 * report.pass_rate:.2f}%",
    ]
    if report.pass_at_k:
        lines.append(
            ", ".join(f"{k}: {100.0 * v:.2f}%" for k, v in sorted(report.pass_at_k.items()))
        )
    lines += ["", _status_table(Counter(r.status.value for r in report.results))]
    lines += _flag_lines(report.results)
    rows = [(pid, v["c"], v["n"], 100.0 * v["pass_rate"]) for pid, v in report.per_problem.items()]
    lines += ["", format_table(["problem", "passed", "runs", "pass rate (%)"], rows)]
    if report.errata:
        lines += ["", "Known dataset errata among the scored cases (the ceiling is below 100%):"]
        lines += [f"  {key}: {text}" for key, text in report.errata.items()]
    return "\n".join(lines)


def write_json(path: str | Path, document: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
