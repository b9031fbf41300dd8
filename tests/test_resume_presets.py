"""Resume is exact for every preset, as ``npcnn train`` builds it: from the checkpoint alone.

Each case trains straight through, and again with a stop (at an epoch
boundary, or by Ctrl-C in the middle of an epoch) followed by a resume that
takes the model from the checkpoint, as ``npcnn train --resume`` does; the
final weights and buffers must be equal bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from npcnn.cli.main import build_parser
from npcnn.cli.train import build_trainer
from npcnn.cli.train_config import resolve_config
from npcnn.data import load_dataset
from npcnn.models import PRESETS
from npcnn.training import TrainingInterrupted, callbacks, load_checkpoint

EPOCHS = 2


class InterruptAt(callbacks.Callback):
    """Raise KeyboardInterrupt after global step ``step``, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs) -> None:
        if logs["global_step"] == self.step:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def data():
    return load_dataset("sample").head(64, 16)


def _config(preset: str, augment: str, batch: str) -> dict:
    argv = ["train", "--preset", preset, "--augment", augment, "--batch-size", batch]
    return resolve_config(build_parser().parse_args([*argv, "--seed", "3"]), None)


def _fit(config, model, data, run_dir, reports=(), epochs=EPOCHS, resume_from=None):
    trainer, batches = build_trainer(config, model, data, run_dir, list(reports))
    validation = (data.test_images, data.test_labels)
    trainer.fit(batches, epochs, validation=validation, resume_from=resume_from)
    return trainer


@pytest.mark.parametrize("where", ["epoch boundary", "mid-epoch"])
@pytest.mark.parametrize("augment", ["none", "flip"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_resume_from_the_checkpoint_alone_is_exact(tmp_path, data, preset, augment, where):
    config = _config(preset, augment, "16")
    model = PRESETS[preset].model(seed=config["seed"], num_classes=10)
    straight = _fit(config, model, data, tmp_path / "straight").model.state_dict()

    first = PRESETS[preset].model(seed=config["seed"], num_classes=10)
    if where == "epoch boundary":
        _fit(config, first, data, tmp_path / "a", epochs=1)
    else:
        with pytest.raises(TrainingInterrupted) as stop:
            _fit(
                config, first, data, tmp_path / "a", [InterruptAt(len(data.train_labels) // 16 + 2)]
            )
        assert stop.value.epoch == 1 and stop.value.step == 2
    ckpt = tmp_path / "a" / "checkpoint.npz"
    resumed_model = load_checkpoint(ckpt)["model"]
    resumed = _fit(config, resumed_model, data, tmp_path / "b", resume_from=ckpt)

    for name, value in resumed.model.state_dict().items():
        np.testing.assert_array_equal(value, straight[name], err_msg=name)


def test_full_batch_notebook_with_recomputed_statistics_resumes_exactly(tmp_path, data) -> None:
    config = _config("notebook", "none", "full")
    assert config["batch_size"] is None and config["recompute_bn"]
    straight = _fit(config, PRESETS["notebook"].model(seed=3), data, tmp_path / "s", epochs=3)
    _fit(config, PRESETS["notebook"].model(seed=3), data, tmp_path / "a", epochs=1)
    ckpt = tmp_path / "a" / "checkpoint.npz"
    resumed = _fit(config, load_checkpoint(ckpt)["model"], data, tmp_path / "b", epochs=3,
                   resume_from=ckpt)  # fmt: skip
    expected = straight.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


def test_shared_generators_come_back_shared(tmp_path, data) -> None:
    """The strong preset hands one generator to both dropout layers; so must a restore."""
    from npcnn.nn import generator_states, set_generator_states

    model = PRESETS["strong"].model(seed=0)
    dropouts = [layer for layer in model if type(layer).__name__ == "Dropout"]
    assert dropouts[0].rng is dropouts[1].rng
    states = generator_states(model)
    assert list(states.values())[1] == {"shared_with": next(iter(states))}

    fresh = load_checkpoint(_checkpoint_of(model, tmp_path))["model"]
    set_generator_states(fresh, states)
    copies = [layer for layer in fresh if type(layer).__name__ == "Dropout"]
    assert copies[0].rng is copies[1].rng
    expected = dropouts[0].rng.random(5)
    np.testing.assert_array_equal(copies[0].rng.random(5), expected)


def _checkpoint_of(model, tmp_path):
    from npcnn import optim
    from npcnn.training.checkpoint import save_checkpoint

    meta = {"epoch": 0, "step": 0, "global_step": 0, "history": {}, "totals": {}}
    return save_checkpoint(tmp_path / "c.npz", model, optim.SGD(model.parameters(), 0.1), meta)


def test_a_saved_model_draws_the_same_dropout_masks(tmp_path) -> None:
    import npcnn

    model = PRESETS["strong"].model(seed=0)
    x = np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32)
    model.forward(x, training=True)  # the generators have moved on from their seeds
    loaded = npcnn.load(npcnn.save(model, tmp_path / "m.npz"))
    dropouts = [layer for layer in loaded if type(layer).__name__ == "Dropout"]
    assert dropouts[0].rng is dropouts[1].rng  # shared, as in the preset
    for _ in range(2):
        np.testing.assert_array_equal(
            loaded.forward(x, training=True), model.forward(x, training=True)
        )
