"""Test-time augmentation (tta="flip"): the mirror-averaged logits, wherever tests are run."""

from __future__ import annotations

import json

import numpy as np
import pytest

import npcnn
from npcnn import nn, optim
from npcnn.cli.main import main
from npcnn.cli.predict import classify
from npcnn.models import Recipe, get_preset
from npcnn.training import Trainer, evaluate, inference_logits
from npcnn.training.callbacks import Validation
from npcnn.training.evaluate import evaluate_batches
from test_training_helpers import batches, tiny_model, toy_data


def mirror_mean(model: nn.Layer, x: np.ndarray) -> np.ndarray:
    """The flip-averaged logits, computed here from two plain forward passes (the first
    copied before the second runs)."""
    plain = model.forward(x, training=False).astype(np.float64)
    mirrored = model.forward(x[:, :, :, ::-1].copy(), training=False)
    return (plain + mirrored) / 2


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-logp[np.arange(len(labels)), labels].mean())


def test_flip_averages_the_logits_of_each_image_and_its_mirror_image() -> None:
    model = tiny_model(1)
    x = np.random.default_rng(0).random((6, 1, 8, 8), dtype=np.float32)
    flipped = inference_logits(model, x, "flip")
    assert flipped.dtype == np.float32 and flipped.shape == (6, 3)
    np.testing.assert_allclose(flipped, mirror_mean(model, x), rtol=1e-5, atol=1e-6)
    # Averaged with its mirror image, a prediction no longer sees left from right...
    np.testing.assert_allclose(
        inference_logits(model, x[..., ::-1], "flip"), flipped, rtol=1e-5, atol=1e-6
    )
    # ...which the plain model does (the images are not symmetric).
    plain = inference_logits(model, x)
    assert np.array_equal(plain, model.forward(x, training=False))
    assert not np.allclose(inference_logits(model, x[..., ::-1]), plain, atol=1e-3)


def test_evaluate_and_evaluate_batches_report_the_averaged_logits() -> None:
    model = tiny_model(2)
    images, labels = toy_data(40, seed=3)
    before = model.state_dict()
    result = evaluate(model, images, labels, batch_size=16, tta="flip")
    expected = mirror_mean(model, images[:, None].astype(np.float32) / np.float32(255))
    assert np.array_equal(result.predictions, expected.argmax(axis=1))
    assert result.accuracy == np.mean(expected.argmax(axis=1) == labels)
    assert result.loss == pytest.approx(cross_entropy(expected, labels), rel=1e-5)
    np.testing.assert_allclose(result.probabilities, nn.softmax(expected), rtol=1e-5, atol=1e-7)
    plain = evaluate(model, images, labels, batch_size=16)
    assert plain.loss != pytest.approx(result.loss, rel=1e-4)
    pairs = [(images[i : i + 16], labels[i : i + 16]) for i in range(0, 40, 16)]
    loss, accuracy = evaluate_batches(model, pairs, tta="flip")
    assert accuracy == result.accuracy and loss == pytest.approx(result.loss, rel=1e-6)
    for key, value in model.state_dict().items():
        assert np.array_equal(value, before[key]), key


def test_the_trainer_validates_with_its_tta() -> None:
    images, labels = toy_data(30, seed=4)
    histories = {}
    for tta in ("none", "flip"):
        model = tiny_model(5)
        trainer = Trainer(
            model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.05), tta=tta
        )
        record = trainer.fit(batches(), 1, validation=(images, labels)).epochs[-1]
        result = evaluate(model, images, labels, tta=tta)
        assert record["val_accuracy"] == result.accuracy
        assert record["val_loss"] == pytest.approx(result.loss, rel=1e-6)
        histories[tta] = record["val_loss"]
    assert histories["none"] != pytest.approx(histories["flip"], rel=1e-4)


def test_unknown_test_time_augmentations_are_refused() -> None:
    model = tiny_model()
    images, labels = toy_data(4)
    with pytest.raises(ValueError, match="tta must be one of"):
        evaluate(model, images, labels, tta="mirror")
    with pytest.raises(ValueError, match="tta must be one of"):
        inference_logits(model, images[:, None].astype(np.float32), "vflip")
    with pytest.raises(ValueError, match="tta must be one of"):
        Validation((images, labels), tta="both")
    with pytest.raises(ValueError, match="tta must be one of"):
        Trainer(model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1), tta="x")
    with pytest.raises(ValueError, match="tta must be one of"):
        Recipe(tta="Flip")


def test_the_resnet_preset_tests_with_mirror_averaging_and_digits_presets_do_not() -> None:
    # Mirror images of clothes are clothes; of digits, mostly not digits.
    assert get_preset("resnet").recipe.tta == "flip"
    assert get_preset("small").recipe.tta == get_preset("notebook").recipe.tta == "none"


def run_cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


QUICK = ["--limit-train", "200", "--limit-test", "100", "--no-progress", "--epochs", "1"]


@pytest.fixture(scope="module")
def flip_run(tmp_path_factory: pytest.TempPathFactory):
    run_dir = tmp_path_factory.mktemp("tta") / "run"
    code = main(["train", "--tta", "flip", "--seed", "2", "--out", str(run_dir), *QUICK])
    assert code == 0
    return run_dir


def accuracy_line(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("test accuracy:"))


def test_a_run_with_tta_reports_both_accuracies_and_evaluate_follows_it(flip_run, capsys) -> None:
    pytest.importorskip("matplotlib")
    metrics = json.loads((flip_run / "metrics.json").read_text())
    assert metrics["tta"] == "flip" and metrics["config"]["tta"] == "flip"
    model = npcnn.load(flip_run / "model.npz")
    data = npcnn.data.load_dataset("sample")
    images, labels = data.test_images[:100], data.test_labels[:100]
    assert metrics["test"]["accuracy"] == evaluate(model, images, labels, tta="flip").accuracy
    assert metrics["test_without_tta"]["accuracy"] == evaluate(model, images, labels).accuracy
    log = json.loads((flip_run / "log.json").read_text())["epochs"][-1]
    assert log["val_accuracy"] == metrics["test"]["accuracy"]

    code, out, _ = run_cli(capsys, "evaluate", flip_run / "model.npz", "--limit-test", "100")
    assert code == 0
    assert "Test-time augmentation: flip (the run's, from run.json)" in out
    correct = metrics["test"]["correct"]
    assert accuracy_line(out) == f"test accuracy: {correct / 100:.4f} ({correct}/100)"
    code, out, _ = run_cli(
        capsys, "evaluate", flip_run / "model.npz", "--limit-test", "100", "--tta", "none"
    )
    assert code == 0 and "Test-time augmentation" not in out
    correct = metrics["test_without_tta"]["correct"]
    assert accuracy_line(out) == f"test accuracy: {correct / 100:.4f} ({correct}/100)"


def test_predict_follows_the_runs_tta(flip_run, tmp_path, capsys) -> None:
    image_module = pytest.importorskip("PIL.Image")
    model = npcnn.load(flip_run / "model.npz")
    digit = npcnn.data.load_dataset("sample").test_images[7]
    path = tmp_path / "digit.png"
    image_module.fromarray(digit).save(path)
    outputs = {}
    for extra in ([], ["--tta", "flip"], ["--tta", "none"]):
        code, out, _ = run_cli(
            capsys, "predict", flip_run / "model.npz", path, "--top", "10", *extra
        )
        assert code == 0
        outputs[tuple(extra)] = out
    assert outputs[()] == outputs[("--tta", "flip")] != outputs[("--tta", "none")]
    x = [digit[None].astype(np.float32) / np.float32(255)]
    np.testing.assert_allclose(
        classify(model, x, "flip"), nn.softmax(mirror_mean(model, np.stack(x))), rtol=1e-5
    )


def test_a_damaged_tta_in_run_json_is_one_error_line(flip_run, tmp_path, capsys) -> None:
    run_dir = tmp_path / "copy"
    run_dir.mkdir()
    (run_dir / "model.npz").write_bytes((flip_run / "model.npz").read_bytes())
    record = json.loads((flip_run / "run.json").read_text())
    record["config"]["tta"] = "sideways"
    (run_dir / "run.json").write_text(json.dumps(record))
    code, _, err = run_cli(capsys, "evaluate", run_dir / "model.npz", "--limit-test", "10")
    assert code != 0 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npcnn: error: ")
    assert "damaged run record ('tta' is 'sideways')" in lines[0]


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_evaluate_on_no_images_gives_no_rows_of_the_model_s_classes(tta) -> None:
    model = get_preset("small").model(seed=0)
    result = evaluate(model, np.zeros((0, 28, 28), np.uint8), tta=tta)
    assert result.probabilities.shape == (0, 10) and result.predictions.shape == (0,)
