"""Bad inputs a new user meets: each gets a message naming the input and a non-zero exit (no
traceback, no silent success)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from codegen_core.cli import main

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HUMANEVAL = SHARED / "humaneval" / "HumanEval.jsonl.gz"
MTPB = SHARED / "mtpb" / "mtpb.jsonl"


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], *names: str) -> str:
    """Run the CLI; it must exit non-zero with every one of ``names`` in its message."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code != 0, err
    for name in names:
        assert name in err, (name, err)
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer model of the real vocabulary and a 128-token context."""
    import jax  # noqa: PLC0415

    from codegen_core.model.config import get_preset  # noqa: PLC0415
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415
    from codegen_core.model.transformer import init  # noqa: PLC0415

    config = get_preset("tiny-codegen").replace(vocab_size=51200, n_layer=1, d_model=32,
                                                n_head=4, rotary_dim=4)  # fmt: skip
    path = tmp_path_factory.mktemp("model") / "m"
    return save_hf_checkpoint(path, init(config, jax.random.key(0)), config)


def test_version_and_defaults_in_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("codegen-core 0.")
    with pytest.raises(SystemExit):
        main(["eval", "humaneval", "--help"])
    out = capsys.readouterr().out
    assert "(default: 1,10,100)" in out and "(default: 0.95)" in out


def test_data_on_an_empty_or_missing_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not code")
    out = tmp_path / "out"
    _fails(["data", "prepare", str(empty), "--out", str(out), "--no-progress"], capsys,
           str(empty), "no input documents")  # fmt: skip
    assert not out.exists()  # nothing written
    _fails(["data", "dedup", str(tmp_path / "nope"), "--out", str(out), "--no-progress"],
           capsys, str(tmp_path / "nope"), "does not exist")  # fmt: skip


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder whatever its mode")
def test_data_on_an_unreadable_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    locked = tmp_path / "locked"
    (locked / "inner").mkdir(parents=True)
    (locked / "inner").chmod(0)
    try:
        _fails(["data", "dedup", str(locked), "--out", str(tmp_path / "o"), "--no-progress"],
               capsys, "cannot be read", "inner")  # fmt: skip
    finally:
        (locked / "inner").chmod(0o755)


def test_data_bad_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("x = 1\n")
    _fails(["data", "dedup", str(src), "--threads", "-3", "--out", str(tmp_path / "o")],
           capsys, "--threads", "-3")  # fmt: skip


def test_eval_mtpb_empty_samples(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if not MTPB.is_file():
        pytest.skip(f"MTPB data not found at {MTPB}")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    _fails(["eval", "mtpb", "--samples", str(empty), "--problems", str(MTPB), "--no-progress"],
           capsys, str(empty), "no records")  # fmt: skip


def test_eval_unknown_task_id_and_bad_utf8(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/9999", "completion": "x"}) + "\n")
    base = ["eval", "humaneval", "--problems", str(HUMANEVAL), "--no-progress"]
    _fails([*base, "--samples", str(samples)], capsys, "HumanEval/9999", str(samples))
    samples.write_bytes(b'{"task_id": "HumanEval/0", "completion": "\xff\xfe"}\n')
    _fails([*base, "--samples", str(samples)], capsys, str(samples), "UTF-8")
    _fails([*base, "--samples", str(tmp_path / "none.jsonl")], capsys, "none.jsonl")


def test_eval_k_beyond_the_samples_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    samples = tmp_path / "s.jsonl"
    samples.write_text(json.dumps({"task_id": "HumanEval/0", "completion": "    pass\n"}) + "\n")
    argv = ["eval", "humaneval", "--problems", str(HUMANEVAL), "--samples", str(samples),
            "--ignore-incomplete", "-k", "1,10,100", "--no-progress", "--workers", "1"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "pass@10, pass@100 cannot be computed" in out and "there are 1" in out


def test_eval_checks_outputs_and_numbers_before_sampling(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing output folder fails at once: the model (a missing one here) is never read."""
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    base = ["eval", "humaneval", "--model", str(tmp_path / "no-model"), "--problems",
            str(HUMANEVAL)]  # fmt: skip
    out = tmp_path / "missing" / "r.json"
    _fails([*base, "--out", str(out)], capsys, "--out", str(out.parent), "does not exist")
    _fails([*base, "--samples-out", str(tmp_path)], capsys, "--samples-out", "is a directory")
    _fails([*base, "--workers", "0"], capsys, "--workers must be >= 1")
    _fails([*base, "--n", "0"], capsys, "--n must be >= 1")


def test_truncated_checkpoint_files_are_named(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    config = (model_dir / "config.json").read_text()
    (bad / "config.json").write_text(config[: len(config) // 2])
    weights = (model_dir / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(weights)
    argv = ["sample", "--model", str(bad), "--prompt", "x", "--max-new-tokens", "2"]
    _fails(argv, capsys, str(bad / "config.json"), "not valid JSON")
    (bad / "config.json").write_text(config)
    (bad / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    _fails(argv, capsys, str(bad / "model.safetensors"), "truncated")


def test_sample_bad_numbers_and_context(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["sample", "--model", str(model_dir), "--prompt", "def f():"]
    _fails([*base, "--mp-num", "0"], capsys, "--mp-num", "0")
    _fails([*base, "--max-new-tokens", "500"], capsys, "--max-new-tokens 500", "context of 128")


def test_eval_max_new_tokens_past_the_context(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not HUMANEVAL.is_file():
        pytest.skip(f"HumanEval data not found at {HUMANEVAL}")
    argv = ["eval", "humaneval", "--model", str(model_dir), "--problems", str(HUMANEVAL),
            "--max-new-tokens", "128", "--no-progress"]  # fmt: skip
    _fails(argv, capsys, "--max-new-tokens 128", "context of 128")


def test_prompt_escapes_are_honoured(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "sample",
        "--model",
        str(model_dir),
        "--prompt",
        r"def f():\n\treturn",
        "--max-new-tokens",
        "1",
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("def f():\n\treturn")
