"""The npcnn command line: help, usage and user errors, summary, gradcheck."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.cli.main import main
from npcnn.models import get_preset


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("npcnn: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_help_lists_the_commands_and_the_quick_trial_options(capsys) -> None:
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("train", "evaluate", "predict", "summary", "gradcheck"):
        assert command in out
    code, out, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and "--limit-train" in out and "quick trials" in out and "--resume" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and npcnn.__version__ in out


@pytest.mark.parametrize("command", ["summary", "export", "evaluate", "predict"])
def test_model_help_names_every_kind_of_model_file_taken(command) -> None:
    """MODEL may be an .npz, an .onnx file or a training checkpoint (load_model)."""
    import argparse

    from npcnn.cli.main import build_parser

    subparsers = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    )
    (model,) = [a for a in subparsers.choices[command]._actions if a.metavar == "MODEL"]
    assert ".npz" in model.help and ".onnx" in model.help and "checkpoint" in model.help
    assert "written by 'npcnn train'" not in model.help


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["train", "--epochs", "-1"], ["--epochs", "positive"]),
        (["train", "--epochs", "many"], ["--epochs", "'many'"]),
        (["train", "--lr", "0"], ["--lr", "> 0"]),
        (["train", "--lr", "nan"], ["--lr", "finite"]),
        (["train", "--momentum", "1.5"], ["--momentum"]),
        (["train", "--batch-size", "0"], ["--batch-size"]),
        (["train", "--preset", "huge"], ["--preset", "huge"]),
        (["train", "--optimizer", "rmsprop"], ["--optimizer"]),
        (["train", "--optimizer", "adam", "--momentum", "0.9"], ["momentum", "sgd"]),
        (["summary", "m.npz", "--preset", "small"], ["either"]),
        (["frobnicate"], ["frobnicate"]),
        (["predict", "model.npz"], ["IMAGE"]),
    ],
)
def test_usage_errors_exit_2_with_one_line(capsys, argv, fragments) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert_one_line_error(err, *fragments)
    assert out == ""


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    code, _, err = run_cli(capsys)
    assert code == 2 and "COMMAND" in err


def test_user_errors_exit_1_with_one_line(capsys, tmp_path) -> None:
    not_a_model = tmp_path / "weights.npz"
    np.savez(not_a_model, w=np.zeros(3))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    model = tmp_path / "model.npz"
    npcnn.save(get_preset("small").model(seed=0), model)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"GIF89a garbage")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    cases = [
        (["evaluate", tmp_path / "missing.npz"], ["no such model file"]),
        (["evaluate", not_a_model], ["not an npcnn model"]),
        (["summary", text], ["not an npcnn model"]),
        (["evaluate", tmp_path], ["directory"]),
        (["predict", model, junk], ["junk.png", "cannot decode"]),
        (["predict", model, tmp_path / "nothing.png"], ["no such image file"]),
        (["train", "--data", "no-such-set"], ["unknown data set 'no-such-set'"]),
        (["train", "--data", empty_dir], ["missing IDX"]),
        (["evaluate", model, "--data", "no-such-set"], ["unknown data set"]),
        (["train", "--resume", tmp_path / "missing.npz"], ["no such checkpoint"]),
        (["train", "--resume", model], ["not a training checkpoint"]),
    ]
    for argv, fragments in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 1, (argv, err)
        assert_one_line_error(err, *fragments)
    # nothing was written by the failed runs
    assert not (tmp_path / "runs").exists()


def test_offline_download_failure_is_one_line(capsys, tmp_path, monkeypatch) -> None:
    from npcnn.data import DownloadError
    from npcnn.data import load as data_load

    def offline(*args, **kwargs):
        raise DownloadError("network is unreachable")

    monkeypatch.setenv("NPCNN_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(data_load, "fetch", offline)
    code, _, err = run_cli(capsys, "train", "--data", "kmnist", "--out", tmp_path / "run")
    assert code == 1
    # The one line still says what to download and where to put it.
    assert_one_line_error(
        err,
        "kmnist",
        "not on disk",
        "train-images-idx3-ubyte.gz",
        str(tmp_path / "cache" / "kmnist"),
    )


def test_missing_optional_dependency_names_the_extra(capsys, tmp_path, monkeypatch) -> None:
    model = tmp_path / "model.npz"
    npcnn.save(get_preset("small").model(seed=0), model)
    (tmp_path / "x.png").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes "import PIL" fail
    code, _, err = run_cli(capsys, "predict", model, tmp_path / "x.png")
    assert code == 1
    assert_one_line_error(err, 'pip install "npcnn[cli]"')


def test_summary_of_a_preset_and_of_a_saved_model(capsys, tmp_path) -> None:
    code, out, _ = run_cli(capsys, "summary", "--preset", "notebook")
    assert code == 0
    total = sum(p.data.size for p in get_preset("notebook").model().parameters())
    assert f"Total params: {total:,}" in out and "(None, 18, 13, 13)" in out
    path = tmp_path / "m.npz"
    npcnn.save(get_preset("small").model(seed=3), path)
    code, out, _ = run_cli(capsys, "summary", path)
    small_total = sum(p.data.size for p in get_preset("small").model().parameters())
    assert code == 0 and f"Total params: {small_total:,}" in out


def test_gradcheck_passes_for_the_presets(capsys) -> None:
    code, out, _ = run_cli(capsys, "gradcheck", "--preset", "notebook", "--elements", "16")
    assert code == 0, out
    assert "0.weight" in out and "input" in out and out.strip().endswith("OK")
    errors = [float(line.split()[-1]) for line in out.splitlines() if line.startswith("8.weight")]
    assert errors and errors[0] < 1e-6


def test_gradcheck_checks_a_saved_graph_and_refuses_what_is_no_classifier(tmp_path, capsys):
    npcnn.save(get_preset("resnet").model(seed=1), tmp_path / "resnet.npz")
    code, out, _ = run_cli(capsys, "gradcheck", tmp_path / "resnet.npz", "--elements", "4")
    assert code == 0 and out.startswith(f"Gradient check of {tmp_path / 'resnet.npz'}"), out
    assert "layer2.1.conv2.weight" in out and out.strip().endswith("OK")
    rows = out.splitlines()[1:-1]  # the header and a row per tensor: columns line up
    assert len({len(row) for row in rows}) == 1 and len({row.index(" ") for row in rows}) > 1
    x = nn.Input((1, 28, 28))
    npcnn.save(nn.Model(x, nn.Conv2D(1, 2, 3)(x)), tmp_path / "maps.npz")
    code, _, err = run_cli(capsys, "gradcheck", tmp_path / "maps.npz")
    assert code == 1 and err == (
        f"npcnn: error: {tmp_path / 'maps.npz'} outputs shape (2, 26, 26) per image, "
        "not class scores\n"
    )
    code, _, err = run_cli(capsys, "gradcheck", tmp_path / "maps.npz", "--preset", "small")
    assert code == 2 and "give either MODEL or --preset, not both" in err


def test_gradcheck_exits_1_when_a_gradient_is_wrong(capsys, monkeypatch) -> None:
    from npcnn.nn import ReLU

    # A broken backward (gradient doubled) must be caught and reported.
    original = ReLU.backward
    monkeypatch.setattr(ReLU, "backward", lambda self, dy: 2 * original(self, dy))
    code, out, _ = run_cli(capsys, "gradcheck", "--preset", "small", "--elements", "8")
    assert code == 1 and "FAILED" in out


def test_python_dash_m_runs_the_same_tool() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "npcnn", "train", "--lr", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("npcnn: error: argument --lr") and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "npcnn", "summary"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "Total params" in done.stdout
