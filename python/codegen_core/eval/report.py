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
    "per_task_table",
    "percent",
    "plot_pass_at_k",
    "write_json",
]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table with right-aligned numbers."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(row[i], (int, float)) or _is_percent(row[i]) for row in rows)
        if rows
        else False
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


def _is_percent(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("%")


def percent(fraction: float) -> str:
    """A fraction as people write a percentage: 0.5 -> '50.0%', 0.0003 -> '0.03%'."""
    value = 100.0 * fraction
    if value == 0 or value >= 0.1:
        return f"{value:.1f}%"
    return f"{value:.2g}%"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _status_table(statuses: Counter[str]) -> str:
    total = sum(statuses.values()) or 1
    rows = [(s, n, percent(n / total)) for s, n in statuses.most_common()]
    return format_table(["status", "count", "share"], rows)


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
        format_table(["k", "pass@k"], [(k, percent(report.pass_at_k[k])) for k in ks])
        if ks
        else "(no k with enough samples per problem)",
        "",
        _status_table(Counter(r.status.value for r in report.results)),
        *_flag_lines(report.results),
        "",
        "Per problem:",
        per_task_table(report.per_task, ks),
    ]
    return "\n".join(lines)


def per_task_table(per_task: Mapping[str, Mapping[str, Any]], ks: Sequence[str]) -> str:
    """One row per problem: samples, passed, and each pass@k."""
    rows = [
        (task, v["n"], v["c"], *(percent(v[k]) if k in v else "-" for k in ks))
        for task, v in per_task.items()
    ]
    return format_table(["problem", "samples", "passed", *ks], rows)


def plot_pass_at_k(path: str | Path, document: Mapping[str, Any]) -> None:
    """Draw a report's pass@k against k (log scale) to an image file (needs matplotlib)."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install matplotlib") from None
    points = sorted((int(k.split("@")[1]), v) for k, v in document["pass_at_k"].items())
    fig, ax = plt.subplots(figsize=(5, 3.5))
    try:
        if points:
            ks, values = zip(*points, strict=True)
            ax.plot(ks, [100.0 * v for v in values], marker="o")
            for k, v in points:
                ax.annotate(percent(v), (k, 100.0 * v), textcoords="offset points", xytext=(0, 6),
                            ha="center", fontsize=8)  # fmt: skip
            ax.set_xscale("log")
            ax.set_xticks(list(ks), [str(k) for k in ks])
        else:
            ax.text(0.5, 0.5, "no k with enough samples", ha="center", transform=ax.transAxes)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.set_ylim(0, 100)
        ax.set_title(str(document.get("benchmark", "")))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


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
        f"pass rate: {percent(report.pass_rate)}",
    ]
    if report.pass_at_k:
        lines.append(", ".join(f"{k}: {percent(v)}" for k, v in sorted(report.pass_at_k.items())))
    lines += ["", _status_table(Counter(r.status.value for r in report.results))]
    lines += _flag_lines(report.results)
    rows = [(pid, v["c"], v["n"], percent(v["pass_rate"])) for pid, v in report.per_problem.items()]
    lines += ["", format_table(["problem", "passed", "runs", "pass rate"], rows)]
    if report.errata:
        lines += ["", "Known dataset errata among the scored cases (the ceiling is below 100%):"]
        lines += [f"  {key}: {text}" for key, text in report.errata.items()]
    return "\n".join(lines)


def write_json(path: str | Path, document: Mapping[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
