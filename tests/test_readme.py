"""The README's library example runs as printed and does what its comments say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading) :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_library_example_runs(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # it saves model.npz in the current directory
    namespace: dict = {}
    exec(_first_python_block_after("## The library"), namespace)
    probs, model = namespace["probs"], namespace["model"]
    assert probs.shape == (500, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (tmp_path / "model.npz").is_file()
    assert namespace["check"].passed(), namespace["check"]
    printed = capsys.readouterr().out
    assert printed.startswith("Input shape: (None, 1, 28, 28)")  # the summary table
    assert len(model.parameters()) == 11


def test_the_step_timer_example_prints_the_three_slowest_steps(capsys) -> None:
    exec(_first_python_block_after("## How it is fast"), {})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(line.split()[1] == "ms" for line in lines)
    assert lines[0].endswith("backward  Conv2D"), lines
    assert "Model" not in "".join(lines)
