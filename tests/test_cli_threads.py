"""--threads above the number of cores: a one-line warning, and the command still runs."""

from __future__ import annotations

import os
import warnings

import pytest

import npcnn
from npcnn.cli import common
from npcnn.cli.main import main
from npcnn.models import get_preset


@pytest.fixture
def restore_threads():
    before = npcnn.get_num_threads()
    yield
    npcnn.set_num_threads(before)


def test_more_threads_than_cores_warns_and_is_used(monkeypatch, restore_threads) -> None:
    monkeypatch.setattr(common, "available_cores", lambda: 2)
    with pytest.warns(UserWarning, match=r"^--threads 3 is more than the 2 cores available"):
        common.set_threads(3)
    assert npcnn.get_num_threads() == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        common.set_threads(2)
    assert npcnn.get_num_threads() == 2


def test_available_cores_is_what_this_process_may_use() -> None:
    assert 1 <= common.available_cores() <= (os.cpu_count() or 1)


def test_evaluate_with_too_many_threads_warns_once_and_runs(
    capsys, tmp_path, restore_threads
) -> None:
    path = tmp_path / "model.npz"
    npcnn.save(get_preset("small").model(seed=0), path)
    too_many = common.available_cores() + 1
    code = main(["evaluate", str(path), "--limit-test", "20", "--threads", str(too_many)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.err.splitlines() == [
        f"npcnn: warning: --threads {too_many} is more than the "
        f"{common.available_cores()} cores available; the extra threads only take turns "
        "on them, which slows every step"
    ]
    assert "accuracy" in captured.out


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_number_of_threads_that_cannot_be_started_is_a_usage_error(capsys, command) -> None:
    # 100,000 threads: the system refuses to start them ("can't start new thread").
    assert main([command, "--threads", "100000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--threads: must be from 1 to 1024, got 100000" in err, err
