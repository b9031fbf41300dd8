"""What a demanding user tried on the commands: damaged models and records, closed
consoles, batches too small for batch norm, thread counts, lazy subpackages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.cli.main import main

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

QUICK = ["--limit-train", "96", "--limit-test", "32", "--no-progress"]


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory of one epoch of the small preset."""
    out = tmp_path_factory.mktemp("trained") / "run"
    threads = npcnn.get_num_threads()
    argv = ["train", "--epochs", "1", "--out", out, "--threads", "2", *QUICK]
    assert main([str(a) for a in argv]) == 0
    npcnn.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def digit(tmp_path_factory) -> Path:
    from npcnn.data import load_dataset

    path = tmp_path_factory.mktemp("img") / "digit.png"
    Image.fromarray(load_dataset("sample").test_images[0]).save(path)
    return path


def _edited_model(trained: Path, tmp_path: Path, edit) -> Path:
    arrays = dict(np.load(trained / "model.npz"))
    record = json.loads(str(arrays["__npcnn_architecture__"]))
    edit(arrays, record["model"]["config"]["layers"])
    arrays["__npcnn_architecture__"] = np.array(json.dumps(record))
    path = tmp_path / "edited" / "model.npz"
    path.parent.mkdir()
    np.savez(path, **arrays)
    return path


def test_a_model_whose_outputs_are_nan_is_refused(trained, tmp_path, digit, capsys) -> None:
    def huge_weights(arrays, layers):  # finite, but the logits overflow
        last = max((k for k in arrays if k.endswith(".weight")), key=lambda k: int(k.split(".")[0]))
        arrays[last] = np.full_like(arrays[last], 3e38)

    path = _edited_model(trained, tmp_path, huge_weights)
    for command in (["evaluate", path], ["predict", path, digit]):
        code, out, err = run_cli(capsys, *command)
        assert code == 1 and "nan%" not in out, out
        assert "outputs are NaN or infinite" in err.splitlines()[-1], err


def test_a_model_for_other_images_is_refused_naming_the_shapes_per_batch(tmp_path, capsys):
    x = nn.Input((3, 32, 32))
    npcnn.save(nn.Model(x, nn.Conv2D(3, 2, 3)(x)), tmp_path / "colour.npz")
    code, _, err = run_cli(capsys, "evaluate", tmp_path / "colour.npz", "--data", "sample")
    assert code == 1 and err.count("\n") == 1, err
    # The probe is a batch of 0 images: the message speaks of any batch (N), not of 0.
    assert err.endswith("expects input of shape (N, 3, 32, 32), got (N, 1, 28, 28)\n"), err


@pytest.mark.parametrize("command", ["evaluate", "summary"])
def test_a_crafted_padding_is_refused_before_it_allocates(tmp_path, capsys, command) -> None:
    import tracemalloc

    from npcnn.models import get_preset

    path = tmp_path / "model.npz"
    npcnn.save(get_preset("notebook").model(seed=0), path)  # batch norm after the conv
    arrays = dict(np.load(path))
    record = json.loads(str(arrays["__npcnn_architecture__"]))
    record["model"]["config"]["layers"][0]["config"]["padding"] = 3000  # 2 GB per image
    arrays["__npcnn_architecture__"] = np.array(json.dumps(record))
    np.savez(path, **arrays)
    tracemalloc.start()
    try:
        code, _, err = run_cli(capsys, command, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 1 and err.count("\n") == 1, err
    assert "does not take 1x28x28 images: Dense expects" in err
    assert peak < 200 << 20


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"config": {"data": [[1]]}}', "'data' is [[1]]"),
        ("{not json", "not JSON"),
    ],
)
def test_a_damaged_run_record_is_one_line_naming_it(
    trained, tmp_path, digit, capsys, text, fragment
) -> None:
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    (run_dir / "model.npz").write_bytes((trained / "model.npz").read_bytes())
    (run_dir / "run.json").write_text(text)
    commands = [["evaluate", run_dir / "model.npz"], ["predict", run_dir / "model.npz", digit]]
    # predict reads no 'data' setting: only the class names, and they are not damaged
    for command in commands[: 1 if "'data'" in fragment else 2]:
        code, _, err = run_cli(capsys, *command)
        assert code == 1 and err.count("\n") == 1, err
        assert f"{run_dir / 'run.json'}: damaged run record" in err and fragment in err


def test_batch_norm_over_features_needs_two_images_per_batch(tmp_path, capsys) -> None:
    code, _, err = run_cli(
        capsys, "train", "--preset", "notebook", "--limit-train", "1", "--out", tmp_path / "r"
    )
    assert code == 1 and "needs at least 2 images per batch" in err
    assert not (tmp_path / "r").exists()


def test_a_resume_with_another_thread_count_says_so(trained, capsys) -> None:
    threads = npcnn.get_num_threads()
    argv = ["train", "--resume", trained / "checkpoint.npz", "--epochs", "2", "--threads", "1"]
    try:
        code, out, _ = run_cli(capsys, *argv)
    finally:
        npcnn.set_num_threads(threads)
    assert code == 0 and json.loads((trained / "run.json").read_text())["config"]["threads"] == 2
    assert "the checkpoint's run used 2 threads, this one 1" in out


@pytest.mark.parametrize("closed", [">&-", "2>&-", "> /dev/full"])
def test_a_closed_or_full_console_does_not_stop_a_run(tmp_path, closed) -> None:
    out_dir = tmp_path / "run"
    argv = [sys.executable, "-m", "npcnn", "train", "--epochs", "1", "--out", str(out_dir), *QUICK]
    shell = " ".join(argv) + " " + closed
    result = subprocess.run(shell, shell=True, stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out_dir / "model.npz").is_file() and (out_dir / "metrics.json").is_file()
    if "2>" not in closed:
        assert result.stderr == ""


def test_subpackages_load_on_first_use() -> None:
    code = "import npcnn; print(npcnn.training.Trainer.__name__, npcnn.data.BatchIterator.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["Trainer", "BatchIterator"]
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        npcnn.nonsense  # noqa: B018


def test_softmax_of_integer_logits_does_not_wrap_around() -> None:
    probs = nn.softmax(np.array([[0, 255]], np.uint8))
    np.testing.assert_allclose(probs, [[np.exp(-255.0), 1.0]], rtol=1e-12)


def test_loading_a_directory_says_it_is_one(tmp_path) -> None:
    with pytest.raises(IsADirectoryError, match="is a directory, not a model file"):
        npcnn.load(tmp_path)


def test_weights_that_overflow_stop_training_and_leave_no_directory(tmp_path, capsys) -> None:
    out_dir = tmp_path / "r"
    code, _, err = run_cli(
        capsys, "train", "--epochs", "1", "--optimizer", "sgd", "--lr", "100", "--out", out_dir,
        "--limit-train", "256", "--limit-test", "20", "--no-progress",
    )  # fmt: skip
    assert code == 1 and "training diverged: the weights became NaN or infinite" in err
    assert not out_dir.exists()  # no checkpoint was written: nothing worth keeping


def test_save_refuses_weights_that_load_would_refuse(tmp_path) -> None:
    model = nn.Sequential(nn.Dense(2, 2, rng=0))
    model[0].weight.data[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"cannot save: the model's weights contain NaN"):
        npcnn.save(model, tmp_path / "m.npz")
    assert not (tmp_path / "m.npz").exists()


def test_a_signal_after_the_last_epoch_saves_the_model(tmp_path) -> None:
    """SIGTERM while the last reports run (after the loop's last check): the training is
    complete, so model.npz is written and the message says how to get the report."""
    import signal

    from npcnn.training import Trainer, callbacks

    class SignalAtTrainEnd(callbacks.Callback):
        def on_train_end(self, trainer, logs) -> None:
            signal.raise_signal(signal.SIGTERM)

    original = Trainer.__init__

    def with_signal(self, *args, **kwargs):
        kwargs["callbacks"] = [*kwargs.get("callbacks", ()), SignalAtTrainEnd()]
        original(self, *args, **kwargs)

    out_dir = tmp_path / "r"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "__init__", with_signal)
        code = main([str(a) for a in ["train", "--epochs", "1", "--out", out_dir, *QUICK]])
    assert code == 128 + signal.SIGTERM
    assert (out_dir / "model.npz").is_file() and not (out_dir / "metrics.json").exists()


def test_a_result_that_cannot_be_written_is_an_error() -> None:
    """summary's output is its result: a full disk fails it (a closed pipe does not)."""
    argv = f"{sys.executable} -m npcnn summary --preset small"
    full = subprocess.run(argv + " > /dev/full", shell=True, stderr=subprocess.PIPE, text=True)
    assert full.returncode == 1
    assert full.stderr == "npcnn: error: cannot write the output: No space left on device\n"
    piped = subprocess.run(argv + " | head -1", shell=True, capture_output=True, text=True)
    assert piped.returncode == 0 and piped.stdout.startswith("Preset: small")


def test_running_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    import npcnn.cli.train as train_command

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(train_command, "_training_data", no_memory)
    assert main(["train", "--out", str(tmp_path / "r"), "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert (
        err.strip() == "npcnn: error: out of memory: try a smaller --batch-size, or fewer --threads"
    )


def test_an_empty_out_is_a_usage_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", "--out", "", "--epochs", "1", *QUICK)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(
        "npcnn: error: argument --out: expected a directory path, got an empty string"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["train", "--resume", ""], "--resume"),
        (["evaluate", ""], "MODEL"),
        (["predict", "", "x.png"], "MODEL"),
        (["predict", "model.npz", ""], "IMAGE"),
        (["export", "model.npz", ""], "OUT.onnx"),
        (["import", "", "out.npz"], "MODEL.onnx"),
        (["import", "m.onnx", ""], "OUT.npz"),
    ],
)
def test_an_empty_file_argument_is_a_usage_error(argv, name, tmp_path, capsys, monkeypatch):
    """An unset shell variable gives an empty argument, which would name the current
    directory; each command refuses it by name."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(f"npcnn: error: argument {name}: expected a file path, got an empty")
    assert err.count("\n") == 1


def test_a_signal_that_python_would_drop_still_stops_the_command(capsys, monkeypatch) -> None:
    # SIGTERM's handler raises; when it runs inside a weakref callback, Python prints
    # "Exception ignored in ..." with a traceback and the command went on to exit 0.
    import weakref

    from npcnn.cli import summary
    from npcnn.training.interrupts import Terminated

    class Anything:
        pass

    def signal_inside_a_callback(args) -> int:
        def callback(_ref) -> None:
            raise Terminated

        thing = Anything()
        probe = weakref.ref(thing, callback)
        del thing  # the callback runs here, and its exception cannot propagate
        assert probe() is None
        return 0

    monkeypatch.setattr(summary, "run", signal_inside_a_callback)
    code, _, err = run_cli(capsys, "summary")
    assert code == 128 + 15 and err == "npcnn: stopped by SIGTERM\n", err
