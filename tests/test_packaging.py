"""What a plain install of npcnn pulls in, read from pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower() for r in requirements}


def test_a_plain_install_keeps_blas_single_threaded_inside_npcnn() -> None:
    # Without threadpoolctl every convolution takes about twice as long.
    assert {"numpy", "threadpoolctl"} <= _names(_project()["dependencies"])


def test_the_fast_extra_still_exists_and_adds_nothing() -> None:
    extras = _project()["optional-dependencies"]
    assert extras["fast"] == []
    assert "threadpoolctl" not in _names(extras["cli"])
