"""Warnings under the command line: one line each, never noise before an error."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest

from npcnn.cli import summary
from npcnn.cli.errors import CLIError
from npcnn.cli.main import main


def _overflow_then_fail(args: argparse.Namespace) -> int:
    # As a diverging network does: NumPy warns at the first overflow, NaN spreads
    # through the next operations (which warn too), then the command gives up.
    big = np.full(3, 1e30, dtype=np.float32)
    product = big * big
    _ = product - product
    raise CLIError("training diverged: the loss became nan")


def test_a_warning_then_an_error_print_one_line_each(capsys, monkeypatch) -> None:
    monkeypatch.setattr(summary, "run", _overflow_then_fail)
    assert main(["summary"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "npcnn: warning: overflow encountered in multiply",
        "npcnn: error: training diverged: the loss became nan",
    ]


def _warn_then_fail(args: argparse.Namespace) -> int:
    warnings.warn("Glyph 25968 missing from font(s) DejaVu Sans.\nmore detail", stacklevel=1)
    raise CLIError("cannot write the picture")


def test_a_multi_line_warning_shows_its_first_line(capsys, monkeypatch) -> None:
    monkeypatch.setattr(summary, "run", _warn_then_fail)
    assert main(["summary"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "npcnn: warning: Glyph 25968 missing from font(s) DejaVu Sans.",
        "npcnn: error: cannot write the picture",
    ]


def test_main_leaves_the_warning_machinery_as_it_found_it(capsys, monkeypatch) -> None:
    monkeypatch.setattr(summary, "run", _warn_then_fail)
    before = warnings.showwarning
    main(["summary"])
    assert warnings.showwarning is before
    with pytest.warns(UserWarning, match="still a warning"):
        warnings.warn("still a warning", stacklevel=1)


def test_outside_pytest_a_numpy_warning_is_one_line_too(tmp_path) -> None:
    # pytest captures warnings itself; a child process shows what a user's terminal gets.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys, numpy as np\n"
        "from npcnn.cli import summary\n"
        "from npcnn.cli.errors import CLIError\n"
        "from npcnn.cli.main import main\n"
        "def run(args):\n"
        "    np.exp(np.float32(1000))\n"
        "    raise CLIError('the loss became nan')\n"
        "summary.run = run\n"
        "sys.exit(main(['summary']))\n"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "npcnn: warning: overflow encountered in exp",
        "npcnn: error: the loss became nan",
    ]
