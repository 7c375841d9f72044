"""The checked-in stub _core.pyi names exactly what the built module has."""

from __future__ import annotations

import ast
from pathlib import Path

import codegen_core
from codegen_core import _core


def _stub_names() -> dict[str, set[str]]:
    stub = Path(codegen_core.__file__).with_name("_core.pyi")
    tree = ast.parse(stub.read_text())
    names: dict[str, set[str]] = {"": set()}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names[node.name] = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef) and n.name != "__init__"
            }
            names[""].add(node.name)
        elif isinstance(node, ast.FunctionDef):
            names[""].add(node.name)
    return names


def test_stub_matches_module() -> None:
    stub = _stub_names()
    public = {n for n in dir(_core) if not n.startswith("_")}
    assert stub[""] == public
    for cls, methods in stub.items():
        if cls:
            actual = {n for n in dir(getattr(_core, cls)) if not n.startswith("_")}
            assert methods == actual, cls
