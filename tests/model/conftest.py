"""Fixtures for the model tests: tiny random transformers models saved to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hf_models import make_hf_model, save_hf

from codegen_core.model import get_preset


@pytest.fixture(scope="module")
def codegen_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model = make_hf_model(get_preset("tiny-codegen"))
    return model, save_hf(model, tmp_path_factory.mktemp("codegen"))


@pytest.fixture(scope="module")
def llama_hf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model = make_hf_model(get_preset("tiny-llama"), seed=1)
    return model, save_hf(model, tmp_path_factory.mktemp("llama"))
