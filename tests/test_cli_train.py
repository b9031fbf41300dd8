"""``npcnn train`` end to end on a slice of the packaged sample, then evaluate and predict."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn.cli.main import main
from npcnn.data import load_dataset
from npcnn.training import load_checkpoint

pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
QUICK = ["--limit-train", "300", "--limit-test", "100", "--no-progress", "--threads", "2"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A 2-epoch run of the small preset on 300 training images; (run dir, stdout)."""
    out_dir = tmp_path_factory.mktemp("runs") / "small"
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main(["train", "--epochs", "2", "--seed", "1", "--out", str(out_dir), *QUICK])
    assert code == 0, buffer.getvalue()
    return out_dir, buffer.getvalue()


def test_run_directory_holds_every_report(trained_run) -> None:
    run_dir, stdout = trained_run
    for name in ("curves.png", "confusion.png", "misclassified.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_SIGNATURE, name
    rows = (run_dir / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,loss,accuracy,val_loss,val_accuracy")
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]
    log = json.loads((run_dir / "log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2]
    assert load_checkpoint(run_dir / "checkpoint.npz")["epoch"] == 2
    model = npcnn.load(run_dir / "model.npz")
    assert model.forward(np.zeros((1, 1, 28, 28), np.float32)).shape == (1, 10)
    assert re.search(r"^epoch 2/2  train loss [\d.]+ acc .*test loss [\d.]+ acc", stdout, re.M)
    assert "using the first 300 of 2,000 training images" in stdout


def test_metrics_json_matches_npcnn_evaluate(trained_run, capsys) -> None:
    run_dir, _ = trained_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "test", "per_class", "confusion_matrix", "classes", "timings", "arguments", "seed",
        "npcnn_version", "data", "config",
    ):  # fmt: skip
        assert key in metrics, key
    assert metrics["seed"] == 1 and metrics["npcnn_version"] == npcnn.__version__
    assert metrics["command"].startswith("npcnn train --epochs 2 --seed 1 --out ")
    assert metrics["arguments"]["epochs"] == 2 and metrics["arguments"]["limit_train"] == 300
    cm = np.array(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 100 == metrics["test"]["count"]
    assert metrics["test"]["accuracy"] == pytest.approx(np.trace(cm) / 100)
    assert len(metrics["per_class"]) == 10 and {"precision", "recall"} <= set(
        metrics["per_class"][0]
    )
    assert metrics["timings"]["train_seconds"] > 0

    code, out, _ = run_cli(capsys, "evaluate", run_dir / "model.npz", "--limit-test", "100")
    assert code == 0
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    loss = float(re.search(r"test loss: ([\d.]+)", out).group(1))
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=5e-5)
    assert loss == pytest.approx(metrics["test"]["loss"], abs=5e-5)
    assert "precision" in out and "recall" in out and "true\\pred" in out


def test_a_second_run_never_overwrites_the_first(trained_run, capsys) -> None:
    run_dir, _ = trained_run
    before = hashlib.sha256((run_dir / "model.npz").read_bytes()).hexdigest()
    code, out, _ = run_cli(
        capsys, "train", "--epochs", "1", "--out", run_dir, "--limit-train", "64", *QUICK[2:]
    )
    assert code == 0
    assert hashlib.sha256((run_dir / "model.npz").read_bytes()).hexdigest() == before
    second = run_dir.with_name(run_dir.name + "-2")
    assert (second / "model.npz").is_file() and f"writing to {second}" in out


def save_digit(image: np.ndarray, path: Path, size: tuple[int, int]) -> None:
    """An MNIST digit as a black-on-white PNG of another size (dark ink, like paper)."""
    Image.fromarray(255 - image).resize(size, Image.Resampling.BICUBIC).save(path)


def test_predict_agrees_with_the_model_on_the_preprocessed_image(trained_run, capsys, tmp_path):
    from npcnn import nn
    from npcnn.imaging import prepare_image

    run_dir, _ = trained_run
    data = load_dataset("sample")
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"digit{i}.png")
        save_digit(data.test_images[400 + i], paths[-1], (84 + 10 * i, 120))
    code, out, _ = run_cli(capsys, "predict", run_dir / "model.npz", *paths)
    assert code == 0
    model = npcnn.load(run_dir / "model.npz")
    lines = out.strip().splitlines()
    assert len(lines) == len(paths)
    for path, line in zip(paths, lines, strict=True):
        probs = nn.softmax(model.forward(prepare_image(path)[None]))[0]
        ranked = re.findall(r"(\S+) \(([\d.]+)%\)", line.split(": ", 1)[1])
        assert len(ranked) == 3 and line.startswith(str(path))
        assert [int(c) for c, _ in ranked] == list(np.argsort(-probs)[:3])
        assert float(ranked[0][1]) == pytest.approx(100 * probs.max(), abs=0.06)


def test_predict_reads_class_names_from_the_data_set(trained_run, capsys, tmp_path) -> None:
    run_dir, _ = trained_run
    path = tmp_path / "d.png"
    save_digit(load_dataset("sample").test_images[0], path, (60, 60))
    code, out, _ = run_cli(capsys, "predict", run_dir / "model.npz", path, "--data", "fashion")
    assert code == 1  # not a data set name
    code, out, _ = run_cli(
        capsys, "predict", run_dir / "model.npz", path, "--data", "fashion-mnist", "--top", "2"
    )
    assert code == 0
    names = re.findall(r"([A-Za-z][\w/ -]*?) \([\d.]+%\)", out.split(": ", 1)[1])
    assert len(names) == 2 and all(
        n in ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
              "Sneaker", "Bag", "Ankle boot")
        for n in names
    )  # fmt: skip


def test_a_model_trained_on_the_sample_reads_handwritten_pngs(tmp_path, capsys) -> None:
    # 3 epochs on 1,000 digits reach ~90%; of 20 test digits saved as inverted,
    # resized PNGs, most must come back with the right label.
    run_dir = tmp_path / "run"
    code, _, _ = run_cli(
        capsys, "train", "--epochs", "3", "--limit-train", "1000", "--limit-test", "20",
        "--out", run_dir, "--no-progress",
    )  # fmt: skip
    assert code == 0
    data = load_dataset("sample")
    picks = range(0, 500, 25)
    paths = []
    for i in picks:
        paths.append(tmp_path / f"t{i}.png")
        save_digit(data.test_images[i], paths[-1], (70, 90))
    code, out, _ = run_cli(capsys, "predict", run_dir / "model.npz", *paths)
    assert code == 0
    predicted = [int(line.split(": ")[1].split(" ")[0]) for line in out.strip().splitlines()]
    correct = sum(p == data.test_labels[i] for p, i in zip(predicted, picks, strict=True))
    assert correct >= 15, (predicted, [data.test_labels[i] for i in picks])


def test_resume_continues_and_equals_an_uninterrupted_run(tmp_path, capsys) -> None:
    common = ["--seed", "3", "--limit-train", "128", "--limit-test", "32", "--batch-size", "32"]
    common += ["--augment", "flip"]  # the flips' random draws must resume exactly too
    common += ["--label-smoothing", "0.2"]  # and the loss, with its smoothed targets
    assert run_cli(capsys, "train", "--epochs", "1", "--out", tmp_path / "a", *common)[0] == 0
    first = tmp_path / "a" / "checkpoint.npz"
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    code, out, _ = run_cli(capsys, "train", "--resume", first, "--epochs", "2")
    assert code == 0, out
    resumed = tmp_path / "a-resumed"
    assert "resuming training" in out and f"run directory: {resumed}" in out
    assert "augment flip, label smoothing 0.2" in out  # the resumed run keeps the settings
    # The epoch lines' test losses are smoothed, the final report's is not: it says so.
    assert re.search(r"^test loss [\d.]+ \(plain cross-entropy\), test accuracy", out, re.M)
    assert json.loads((resumed / "run.json").read_text())["config"]["label_smoothing"] == 0.2
    rows = (resumed / "log.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["1", "2"]
    assert hashlib.sha256(first.read_bytes()).hexdigest() == digest  # the old run is untouched

    assert run_cli(capsys, "train", "--epochs", "2", "--out", tmp_path / "b", *common)[0] == 0
    a = npcnn.load(resumed / "model.npz").state_dict()
    b = npcnn.load(tmp_path / "b" / "model.npz").state_dict()
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_notebook_preset_prints_train_and_test_per_iteration(tmp_path, capsys) -> None:
    code, out, _ = run_cli(
        capsys, "train", "--preset", "notebook", "--epochs", "2", "--out", tmp_path / "nb",
        "--no-progress",
    )  # fmt: skip
    assert code == 0
    lines = re.findall(r"^iteration +(\d+)/2  train loss [\d.]+ acc +[\d.]+%  test loss", out, re.M)
    assert lines == ["1", "2"]
    assert "1,000 train / 500 test images" in out and "full (1000)" in out
    assert "only 500 test images" in out and "sgd lr 0.5" in out
    config = json.loads((tmp_path / "nb" / "metrics.json").read_text())["config"]
    assert config["batch_size"] is None and config["limit_train"] == 1000
    assert config["recompute_bn"] is True


def test_ctrl_c_writes_a_checkpoint_and_exits_130(tmp_path) -> None:
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "npcnn", "train", "--epochs", "50", "--out", str(out_dir),
         "--limit-train", "256", "--limit-test", "32", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job starts with SIGINT ignored; give the child Ctrl-C back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        for line in proc.stdout:
            if re.match(r"epoch +1/50 ", line):
                proc.send_signal(signal.SIGINT)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    message = err.strip().splitlines()[-1]
    assert (
        message.startswith("npcnn: interrupted") and "resume with: npcnn train --resume" in message
    )
    checkpoint = Path(message.rsplit(" ", 1)[1])
    assert checkpoint.is_file() and load_checkpoint(checkpoint)["epoch"] >= 1
    assert not (out_dir / "model.npz").exists()
    # The message says where the checkpoint stands: epochs, and steps into the next.
    saved = load_checkpoint(checkpoint)
    steps = f" and {saved['step']} step(s)" if saved["step"] else ""
    assert f"after {saved['epoch']} epoch(s){steps}; checkpoint saved" in message


def test_a_directory_data_set_is_remembered_for_evaluate(tmp_path, capsys, monkeypatch) -> None:
    from npcnn.data import write_idx

    sample = load_dataset("sample")
    data_dir = tmp_path / "digits"
    data_dir.mkdir()
    for name, array in (
        ("train-images-idx3-ubyte.gz", sample.train_images[:96]),
        ("train-labels-idx1-ubyte.gz", sample.train_labels[:96].astype(np.uint8)),
        ("t10k-images-idx3-ubyte.gz", sample.test_images[:40]),
        ("t10k-labels-idx1-ubyte.gz", sample.test_labels[:40].astype(np.uint8)),
    ):
        write_idx(data_dir / name, array)
    monkeypatch.chdir(tmp_path)  # a relative --data DIR, then evaluate from elsewhere
    code, out, _ = run_cli(capsys, "train", "--data", "digits", "--epochs", "1", "--no-progress")
    assert code == 0, out
    run_dir = Path(re.search(r"^run directory: (.+)$", out, re.M).group(1))
    assert run_dir.parent == Path("runs") and run_dir.name.startswith("small-")
    monkeypatch.chdir(run_dir)
    code, out, _ = run_cli(capsys, "evaluate", "model.npz")
    assert code == 0 and "40 images" in out
    metrics = json.loads(Path("metrics.json").read_text())
    accuracy = float(re.search(r"test accuracy: ([\d.]+)", out).group(1))
    assert accuracy == pytest.approx(metrics["test"]["accuracy"], abs=5e-5)


def test_a_run_directory_that_cannot_be_made_and_a_file_for_data_are_one_line_each(
    tmp_path, capsys
) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    code = main(["train", "--epochs", "1", "--out", str(a_file / "run")])
    err = capsys.readouterr().err
    assert code == 1 and err == (
        f"npcnn: error: cannot create the run directory {a_file / 'run'}: not a directory\n"
    )
    code = main(["train", "--epochs", "1", "--data", str(a_file), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"npcnn: error: '{a_file}' is a file, not a data set: ")
    assert not (tmp_path / "r").exists()


def test_a_stop_mid_epoch_says_the_steps_its_checkpoint_holds(tmp_path, capsys) -> None:
    from npcnn.cli.train import report_training_stop
    from npcnn.training import History, TrainingInterrupted

    stop = TrainingInterrupted(tmp_path / "c.npz", History(), 3, 7, signal.SIGTERM)
    assert report_training_stop(stop) == 143
    err = capsys.readouterr().err
    assert err.startswith("npcnn: stopped by SIGTERM after 3 epoch(s) and 7 step(s); ")
    report_training_stop(TrainingInterrupted(tmp_path / "c.npz", History(), 3, 0))
    assert "interrupted after 3 epoch(s); checkpoint saved" in capsys.readouterr().err
