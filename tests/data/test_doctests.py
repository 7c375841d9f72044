"""The examples in the data modules' docstrings run and are right."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["exact", "lsh", "minhash", "pack"])
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(f"codegen_core.data.{name}")
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert attempted > 0 and failed == 0
