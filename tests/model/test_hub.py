"""Models by name: Hub ids resolve from a cache laid out as huggingface_hub lays it (offline)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen_core.model.hub import is_hub_id, resolve_model_dir

pytest.importorskip("huggingface_hub", reason="huggingface_hub (optional) is not installed")

REPO = "acme/tiny-codegen"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _build_cache(hf_home: Path, source: Path) -> Path:
    """hub/models--acme--tiny-codegen/{blobs,refs/main,snapshots/COMMIT/<file> -> blob}."""
    repo = hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in source.iterdir():
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / f.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def _tiny_model(path: Path) -> Path:
    import jax  # noqa: PLC0415

    from codegen_core.model.config import get_preset  # noqa: PLC0415
    from codegen_core.model.hf_io import save_hf_checkpoint  # noqa: PLC0415
    from codegen_core.model.transformer import init  # noqa: PLC0415

    config = get_preset("tiny-codegen").replace(vocab_size=51200, n_layer=1, d_model=32,
                                                n_head=4, rotary_dim=4)  # fmt: skip
    return save_hf_checkpoint(path, init(config, jax.random.key(0)), config)


def _offline_env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return {**env, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}


def test_hub_ids_and_paths() -> None:
    assert is_hub_id("Salesforce/codegen-350M-mono") and is_hub_id("gpt2")
    assert not is_hub_id("/abs/dir") and not is_hub_id("./rel") and not is_hub_id("a/b/c")
    assert not is_hub_id("../up")


def test_directory_is_returned_and_missing_path_is_named(tmp_path: Path) -> None:
    assert resolve_model_dir(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_dir(tmp_path / "nope" / "deeper")
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        resolve_model_dir(tmp_path / "f")


def test_offline_sample_from_a_cached_hub_id_and_a_clear_miss(tmp_path: Path) -> None:
    """The CLI resolves an id from a cache it never downloaded to, offline; a missing id
    names the id and the cache and exits non-zero."""
    snapshot = _build_cache(tmp_path / "hf", _tiny_model(tmp_path / "model"))
    env = _offline_env(tmp_path / "hf")
    argv = ["-m", "codegen_core.cli", "sample", "--model", REPO, "--prompt", "def f():",
            "--max-new-tokens", "3"]  # fmt: skip
    run = subprocess.run([sys.executable, *argv], check=False, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("def f():")
    assert f"loading {snapshot} ..." in run.stderr  # the cached snapshot, resolved offline
    argv[argv.index(REPO)] = "acme/missing-model"
    run = subprocess.run([sys.executable, *argv], check=False, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert run.returncode != 0
    assert "'acme/missing-model'" in run.stderr and str(tmp_path / "hf" / "hub") in run.stderr
    assert "HF_HUB_OFFLINE" in run.stderr and "Traceback" not in run.stderr


def test_trainer_init_from_takes_a_hub_id(tmp_path: Path) -> None:
    """train.init_from=owner/name reads the model config and weights from the cache."""
    _build_cache(tmp_path / "hf", _tiny_model(tmp_path / "model"))
    code = (
        "from codegen_core.train import loop\n"
        "from codegen_core.train.config import load_config\n"
        f"cfg = load_config('tiny', ['train.init_from={REPO}'])\n"
        "cfg, model, load = loop._model_config(cfg)\n"
        "params = load()\n"
        "print(model.vocab_size, model.d_model, params['wte']['embedding'].shape)\n"
    )
    got = subprocess.run([sys.executable, "-c", code], env=_offline_env(tmp_path / "hf"),
                         capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert got.stdout.split()[:2] == ["51200", "32"]


def test_init_writes_a_model_of_the_real_vocabulary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from codegen_core.cli import main  # noqa: PLC0415
    from codegen_core.model.hf_io import load_hf_checkpoint  # noqa: PLC0415
    from codegen_core.model.init_cli import SMALL_PRESETS  # noqa: PLC0415
    from codegen_core.tokenizer.core import Tokenizer  # noqa: PLC0415

    config, _ = SMALL_PRESETS["small-codegen"]
    assert 9_000_000 < config.num_params() < 11_000_000
    assert Tokenizer.codegen2().vocab_size <= config.vocab_size
    out = tmp_path / "small"
    assert main(["init", "--preset", "small-codegen", "--out", str(out)]) == 0
    loaded, _ = load_hf_checkpoint(out)
    assert loaded.vocab_size == 51200 and loaded.n_layer == config.n_layer
    assert main(["init", "--out", str(out)]) == 1  # never overwrites without --force
    assert "--force" in capsys.readouterr().err
    assert main(["init", "--preset", "nope", "--out", str(tmp_path / "x")]) == 1
    assert "small-codegen" in capsys.readouterr().err  # the error lists the presets


def test_missing_huggingface_hub_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not importable
    with pytest.raises(RuntimeError, match="pip install huggingface_hub"):
        resolve_model_dir("acme/some-model")
