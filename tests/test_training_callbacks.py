"""The reports: console line, CSV and JSON logs, curves PNG, progress bar, checkpoints."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from npcnn.training import EPOCH_KEYS, History, callbacks, load_checkpoint
from npcnn.training.callbacks import progress
from test_training_helpers import batches, make_trainer, validation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Recorder(callbacks.Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, dict]] = []

    def on_train_begin(self, trainer, logs) -> None:
        self.events.append(("train_begin", logs))

    def on_epoch_begin(self, trainer, logs) -> None:
        self.events.append(("epoch_begin", logs))

    def on_step_end(self, trainer, logs) -> None:
        self.events.append(("step_end", logs))

    def on_epoch_end(self, trainer, logs) -> None:
        self.events.append(("epoch_end", logs))

    def on_train_end(self, trainer, logs) -> None:
        self.events.append(("train_end", logs))


def test_events_arrive_in_order_with_their_logs() -> None:
    rec = Recorder()
    make_trainer(callbacks=[rec]).fit(batches(), 2, validation=validation())
    names = [name for name, _ in rec.events]
    assert names == ["train_begin"] + (["epoch_begin"] + ["step_end"] * 5 + ["epoch_end"]) * 2 + [
        "train_end"
    ]
    begin = rec.events[0][1]
    assert begin == {
        "epochs": 2,
        "initial_epoch": 0,
        "steps_per_epoch": 5,
        "examples_per_epoch": 96,
    }
    last_step = rec.events[6][1]
    assert (last_step["step"], last_step["size"], last_step["global_step"]) == (5, 16, 5)
    assert last_step["mean_loss"] == pytest.approx(rec.events[7][1]["loss"], rel=1e-12)
    assert rec.events[-1][1]["status"] == "completed"


def test_a_callback_can_stop_training() -> None:
    class StopAfterOne(callbacks.Callback):
        def on_epoch_end(self, trainer, logs) -> None:
            trainer.stop_training = True

    rec = Recorder()
    history = make_trainer(callbacks=[StopAfterOne(), rec]).fit(batches(), 5)
    assert len(history.epochs) == 1
    assert rec.events[-1][1]["status"] == "stopped"


def test_epoch_printer_line_format() -> None:
    lines: list[str] = []
    make_trainer(callbacks=[callbacks.EpochPrinter(print_fn=lines.append)]).fit(
        batches(), 2, validation=validation()
    )
    assert len(lines) == 2
    pattern = (
        r"epoch 2/2  loss \d\.\d{4}  acc \d\.\d{4}  val_loss \d\.\d{4}  "
        r"val_acc \d\.\d{4}  lr 0\.05  \d+\.\ds"
    )
    assert re.fullmatch(pattern, lines[1]), lines[1]
    record = {
        "epoch": 3,
        "loss": 1.23456,
        "accuracy": 0.612,
        "val_loss": None,
        "val_accuracy": None,
        "lr": 0.5,
        "seconds": 12.34,
    }
    assert (
        callbacks.format_epoch(record, 50) == "epoch 3/50  loss 1.2346  acc 0.6120  lr 0.5  12.3s"
    )


def test_csv_and_json_logs_hold_every_epoch(tmp_path) -> None:
    csv_path, json_path = tmp_path / "log.csv", tmp_path / "sub" / "log.json"
    trainer = make_trainer(
        callbacks=[
            callbacks.CSVLogger(csv_path),
            callbacks.JSONLogger(json_path, include_steps=True),
        ]
    )
    history = trainer.fit(batches(), 3, validation=validation())
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(EPOCH_KEYS)
    assert len(rows) == 3
    for row, record in zip(rows, history.epochs, strict=True):
        assert int(row["epoch"]) == record["epoch"]
        assert float(row["loss"]) == record["loss"]
        assert float(row["val_accuracy"]) == record["val_accuracy"]
        assert float(row["lr"]) == record["lr"]
    data = json.loads(json_path.read_text())
    assert History.from_dict(data) == history
    assert len(data["steps"]) == 15


def test_csv_without_validation_leaves_empty_cells_and_resume_continues(tmp_path) -> None:
    csv_path, ckpt = tmp_path / "log.csv", tmp_path / "ckpt.npz"
    make_trainer(callbacks=[callbacks.CSVLogger(csv_path)], checkpoint_path=ckpt).fit(batches(), 2)
    make_trainer(callbacks=[callbacks.CSVLogger(csv_path)]).fit(batches(), 3, resume_from=ckpt)
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1", "2", "3"]
    assert all(row["val_loss"] == "" for row in rows)


def test_plot_curves_writes_a_png(tmp_path) -> None:
    path = tmp_path / "curves.png"
    make_trainer(callbacks=[callbacks.PlotCurves(path)]).fit(batches(), 2, validation=validation())
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000
    from PIL import Image

    with Image.open(path) as image:
        image.verify()
        assert image.format == "PNG"
        assert image.size == (1000, 400)


def test_plot_uses_agg_without_pyplot(tmp_path) -> None:
    # A backend that cannot load would break anything that goes through pyplot.
    code = (
        "import sys; from npcnn.training import History, callbacks\n"
        "h = History([{'epoch': e, 'loss': 1 / e, 'accuracy': e / 4, 'val_loss': None,\n"
        "  'val_accuracy': None, 'lr': 0.1, 'seconds': 1.0, 'images_per_second': 1.0}\n"
        "  for e in (1, 2, 3)])\n"
        "open(sys.argv[1], 'wb').write(callbacks.render_curves(h, 'title'))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    out = tmp_path / "c.png"
    env = {"MPLBACKEND": "module://no_such_backend", "PATH": "", "HOME": str(tmp_path)}
    subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=120)
    assert out.read_bytes().startswith(PNG_MAGIC)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_loss_and_throughput_on_a_terminal() -> None:
    pytest.importorskip("tqdm")
    stream = FakeTTY()
    make_trainer(callbacks=[callbacks.ProgressBar(file=stream, leave=True)]).fit(batches(), 2)
    text = stream.getvalue()
    assert "epoch 2/2" in text
    assert "96/96" in text
    assert "img/s" in text
    assert "loss=" in text and "acc=" in text


def test_progress_bar_is_silent_off_a_terminal_unless_forced() -> None:
    pytest.importorskip("tqdm")
    quiet = io.StringIO()
    make_trainer(callbacks=[callbacks.ProgressBar(file=quiet)]).fit(batches(), 1)
    assert quiet.getvalue() == ""
    forced = io.StringIO()
    make_trainer(callbacks=[callbacks.ProgressBar(file=forced, force=True)]).fit(batches(), 1)
    assert "epoch 1/1" in forced.getvalue()


def test_progress_bar_without_tqdm_warns_and_trains(monkeypatch) -> None:
    monkeypatch.setattr(progress, "_import_tqdm", lambda: None)
    stream = FakeTTY()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = make_trainer(callbacks=[callbacks.ProgressBar(file=stream)]).fit(batches(), 1)
    assert len(history.epochs) == 1
    assert stream.getvalue() == ""
    assert any("tqdm" in str(w.message) for w in caught)


def test_model_checkpoint_every_epoch_and_best_only(tmp_path) -> None:
    per_epoch = callbacks.ModelCheckpoint(tmp_path / "e{epoch:02d}.npz")
    best = callbacks.ModelCheckpoint(tmp_path / "best.npz", monitor="val_loss")
    trainer = make_trainer(callbacks=[per_epoch, best])
    history = trainer.fit(batches(), 3, validation=validation())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best.npz",
        "e01.npz",
        "e02.npz",
        "e03.npz",
    ]
    losses = history.metric("val_loss")
    best_epoch = int(np.argmin(losses)) + 1
    assert best.best == min(losses)
    assert load_checkpoint(tmp_path / "best.npz")["epoch"] == best_epoch
    assert load_checkpoint(tmp_path / "e02.npz")["epoch"] == 2


def test_empty_validation_data_is_refused_rather_than_nan_every_epoch() -> None:
    images, labels = validation()
    trainer = make_trainer()
    with pytest.raises(ValueError, match="validation data is empty"):
        trainer.fit(batches(), 1, validation=(images[:0], labels[:0]))
    history = make_trainer().fit(batches(), 1, validation=(images[:3], labels[:3]))
    assert np.isfinite(history.epochs[-1]["val_loss"])
