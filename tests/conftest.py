"""Shared fixtures: the data beside the checkout and the peers we compare against."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test saying what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (tests expect ../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def stdlib_texts() -> list[tuple[str, str]]:
    """(relative path, text) of every UTF-8 .py file of the standard library, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "site-packages" in rel.parts or "dist-packages" in rel.parts:
            continue
        try:
            out.append((str(rel), path.read_bytes().decode("utf-8")))
        except (OSError, UnicodeDecodeError):
            continue  # a handful of test fixtures are deliberately not UTF-8
    assert len(out) > 500, f"found only {len(out)} stdlib files under {root}"
    return out
