"""``npcnn train``: train a preset network and write a run directory.

A run directory holds run.json (how the run was made, written first),
checkpoint.npz (after every epoch), log.csv and log.json (one row per
epoch), curves.png, and at the end model.npz, metrics.json, confusion.png
and misclassified.png. A new run never writes into a directory that holds
files already, nor into one another run has claimed: it picks a fresh name.

``run`` resolves the settings (:mod:`npcnn.cli.train_config`), builds the
model, data and trainer (:func:`build_trainer`), and executes.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from npcnn.cli import distributed, options
from npcnn.cli.errors import EXIT_OK, PROG, CLIError
from npcnn.cli.train_config import FULL_BATCH
from npcnn.models import AUGMENTATIONS, DEFAULT_PRESET, OPTIMIZERS, PRESETS, SCHEDULES
from npcnn.training.evaluate import TTA_MODES

if TYPE_CHECKING:
    from npcnn.data import BatchIterator, Dataset
    from npcnn.distributed import DataParallel
    from npcnn.models import Preset, Recipe
    from npcnn.nn import Layer
    from npcnn.training import Trainer, TrainingInterrupted
    from npcnn.training.callbacks import Callback

CHECKPOINT_FILE = "checkpoint.npz"
MODEL_FILE = "model.npz"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    presets = ", ".join(f"{p.name} ({p.description})" for p in PRESETS.values())
    p = subparsers.add_parser(
        "train",
        help="train a network and write a run directory",
        description=(
            "Train a preset network and write model.npz, metrics.json, logs (CSV, JSON), "
            "curves, a confusion matrix and misclassified test images to a fresh run "
            "directory; a checkpoint is saved after every epoch. Unset options take the "
            f"preset's recipe. Presets: {presets}."
        ),
        epilog=(
            "Ctrl-C or SIGTERM stops training after writing a checkpoint (exit code 130 or "
            "143); continue with --resume RUN_DIR/checkpoint.npz."
        ),
    )
    _add_data_options(p)
    _add_recipe_options(p.add_argument_group("recipe (default: the preset's)"))
    _add_run_options(p)
    distributed.add_options(p)
    p.set_defaults(run=run)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        metavar="NAME|DIR",
        help="sample (ships with npcnn, default), mnist, fashion-mnist, kmnist, or a "
        "directory of MNIST-format IDX files",
    )
    p.add_argument(
        "--num-classes",
        type=options.class_count,
        metavar="N",
        help="classes of a --data directory (default: its classes.txt, else 10); labels "
        "outside 0..N-1 are refused",
    )
    p.add_argument("--preset", choices=list(PRESETS), help=f"network (default: {DEFAULT_PRESET})")
    p.add_argument(
        "--limit-train",
        type=options.positive_int,
        metavar="N",
        help="use only the first N training images (for quick trials)",
    )
    p.add_argument(
        "--limit-test",
        type=options.positive_int,
        metavar="N",
        help="use only the first N test images (for quick trials)",
    )


def _preset_values(field: str, keep: Callable[[object], bool] = lambda value: True) -> str:
    """ "small 5, notebook 50, ...": each preset's recipe value of `field` that `keep` accepts."""
    values = ((name, getattr(p.recipe, field)) for name, p in PRESETS.items())
    shown = (
        f"{name} {FULL_BATCH if value is None else value}" for name, value in values if keep(value)
    )
    return ", ".join(shown)


def _add_recipe_options(g: argparse._ArgumentGroup) -> None:
    g.add_argument(
        "--epochs",
        type=options.positive_int,
        metavar="N",
        help=f"epochs to train, counting those of a resumed run ({_preset_values('epochs')})",
    )
    g.add_argument(
        "--batch-size",
        type=options.batch_size,
        metavar="N|full",
        help=f"images per step; '{FULL_BATCH}' for full-batch gradient descent, one step "
        f"per epoch ({_preset_values('batch_size')})",
    )
    g.add_argument("--optimizer", choices=OPTIMIZERS, help=_preset_values("optimizer"))
    g.add_argument("--lr", type=options.positive_float, metavar="RATE", help="learning rate")
    g.add_argument("--momentum", type=options.momentum, help="SGD momentum, in [0, 1)")
    g.add_argument("--weight-decay", type=options.non_negative_float, metavar="WD")
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="learning rate over the epochs: none keeps it; step multiplies it by --gamma "
        "every --step-size epochs; cosine anneals it to 0 over the run (over the new "
        "--epochs when a resume extends it) "
        f"({_preset_values('schedule', lambda value: value != 'none')})",
    )
    g.add_argument(
        "--step-size", type=options.positive_int, metavar="N", help="for step: (default: 5)"
    )
    g.add_argument(
        "--gamma", type=options.positive_float, metavar="G", help="for step: (default: 0.1)"
    )
    g.add_argument(
        "--recompute-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute batch-norm statistics on the training images before each test "
        f"(on for {', '.join(n for n, p in PRESETS.items() if p.recipe.recompute_bn)})",
    )
    _add_generalisation_options(g)


def _add_generalisation_options(g: argparse._ArgumentGroup) -> None:
    """The recipe's options against overfitting: augmentation, smoothing, tta."""
    g.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="random changes to the training images: flip mirrors half of them left to "
        "right (right for clothes, wrong for digits); crop shifts each by up to 2 pixels "
        "each way (PyTorch's RandomCrop with padding 2); flip-crop does both "
        f"({_preset_values('augment', lambda value: value != 'none')})",
    )
    g.add_argument(
        "--label-smoothing",
        type=options.unit_interval,
        metavar="E",
        help="train towards (1 - E) on the true class and E/K spread over all K classes, "
        "as PyTorch's CrossEntropyLoss(label_smoothing=E); the per-epoch losses in the "
        "logs are then smoothed, metrics.json's test loss is the plain cross-entropy "
        f"({_preset_values('label_smoothing', lambda value: value != 0) or 'no preset uses it'})",
    )
    g.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation of the tests: flip averages each test image's logits "
        "with those of its mirror image (a second forward pass; right for clothes, wrong for "
        "digits); the final report gives the accuracy without it too "
        f"({_preset_values('tta', lambda value: value != 'none')})",
    )


def _add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seed", type=options.seed, help="seed of the weights and the shuffling (default: 0)"
    )
    p.add_argument(
        "--out",
        type=options.directory,
        metavar="DIR",
        help="run directory (default: runs/PRESET-TIMESTAMP; if DIR already holds files, "
        "DIR-2, DIR-3, ... is used instead)",
    )
    p.add_argument(
        "--resume",
        type=options.file_path,
        metavar="CHECKPOINT",
        help="continue the run that wrote CHECKPOINT with its settings (recipe options may "
        "be given again, e.g. --epochs); the continued run gets a fresh directory",
    )
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: continue training on other data (--data, --limit-*), e.g. "
        "to fine-tune; the run records it",
    )
    p.add_argument(
        "--threads",
        type=options.threads,
        help=f"threads inside the layers, at most {options.MAX_THREADS} (default: all cores)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="train on the readable reference kernels of npcnn.nn.functional (slow: "
        "for learning and debugging)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )


def run(args: argparse.Namespace) -> int:
    import npcnn
    from npcnn.cli.common import set_threads
    from npcnn.cli.rundir import discarded_if_unused
    from npcnn.cli.train_config import check_same_data
    from npcnn.models import get_preset
    from npcnn.nn import use_reference
    from npcnn.training import NonFiniteLossError, NonFiniteWeightsError, TrainingInterrupted

    started = time.perf_counter()
    world, rank_threads = distributed.join_world(args)
    checkpoint, previous, config = _settings(args)
    set_threads(args.threads or rank_threads)
    _check_plot_dependencies()
    preset = get_preset(config["preset"])
    data, notes = _training_data(config, preset)
    check_same_data(args, config, previous, data)
    model = _model(config, preset, data, checkpoint)
    _check_batches_for_batch_norm(config, model, len(data.train_labels))
    notes += _threads_notes(config, previous) + _schedule_notes(config, previous)
    parallel = distributed.data_parallel(args, world, config, previous)
    if parallel is not None:
        notes.append(distributed.describe(parallel, npcnn.get_num_threads()))
        distributed.preflight(parallel, model, training_batches(config, data), checkpoint, config)
    run_dir = distributed.shared_run_directory(
        world, lambda: _choose_run_directory(args, preset.name)
    )
    if not world.is_root:
        trainer, batches = build_trainer(config, model, data, run_dir, [], parallel)
        return distributed.train_other_rank(trainer, batches, config, args, data)
    trainer = None
    try:
        with discarded_if_unused(run_dir):
            record = _start(args, config, preset, (data, notes), run_dir)
            reports = _reports(args, config)
            trainer, batches = build_trainer(config, model, data, run_dir, reports, parallel)
            with use_reference(args.reference):
                history = trainer.fit(
                    batches,
                    config["epochs"],
                    validation=(data.test_images, data.test_labels),
                    resume_from=args.resume,
                )
    except TrainingInterrupted as stop:
        if stop.epoch < config["epochs"]:
            return report_training_stop(stop)
        # Stopped after the last step: the training is complete, the report is not.
        npcnn.save(model, run_dir / MODEL_FILE)
        return _report_unfinished(run_dir, stop.signal)
    except (NonFiniteLossError, NonFiniteWeightsError) as err:
        raise CLIError(f"training diverged: {err}") from None
    except KeyboardInterrupt as stop:  # a signal outside the training loop's steps
        return _report_stop_outside_the_loop(stop, trainer, config["epochs"], model, run_dir)
    try:
        _finish(run_dir, model, data, record, history, started)
    except KeyboardInterrupt as stop:
        return _report_unfinished(run_dir, getattr(stop, "signal", signal.SIGINT))
    return EXIT_OK


def _settings(
    args: argparse.Namespace,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any]]:
    """The checkpoint to resume (or None), its run's settings (or None) and this run's."""
    from npcnn.cli.train_config import (
        check_data_folder_exists,
        check_something_to_train,
        previous_config,
        resolve_config,
    )

    checkpoint = None if args.resume is None else _load_checkpoint(args.resume)
    previous = None if checkpoint is None else previous_config(checkpoint, args.resume)
    config = resolve_config(args, previous)
    if checkpoint is not None:
        check_something_to_train(checkpoint, config["epochs"], args.resume)
        check_data_folder_exists(config, args.resume, args.data)
    return checkpoint, previous, config


def build_trainer(
    config: dict[str, Any],
    model: Layer,
    data: Dataset,
    run_dir: Path,
    reports: list[Callback],
    parallel: DataParallel | None = None,
) -> tuple[Trainer, BatchIterator]:
    """The Trainer and training batches that ``config`` describes, writing into ``run_dir``.

    With ``parallel`` (``--distributed``), data-parallel; ranks other than 0 get
    no logs or plots (``reports`` is empty for them).
    """
    from npcnn.training import Trainer, callbacks

    recipe = _recipe(config)
    batches = training_batches(config, data)
    optimizer = recipe.make_optimizer(model.parameters())
    files = [
        callbacks.CSVLogger(run_dir / "log.csv"),
        callbacks.JSONLogger(run_dir / "log.json"),
        callbacks.PlotCurves(
            run_dir / "curves.png", title=f"{config['preset']} on {data.name}: train and test"
        ),
    ]
    trainer = Trainer(
        model,
        recipe.make_loss(),
        optimizer,
        scheduler=recipe.make_scheduler(optimizer, config["epochs"]),
        callbacks=[*reports, *files] if parallel is None or parallel.world.is_root else [],
        checkpoint_path=run_dir / CHECKPOINT_FILE,
        tta=config["tta"],
        bn_data=data.train_images if config["recompute_bn"] else None,
        run_config=config,
        data_parallel=parallel,
    )
    return trainer, batches


def _recipe(config: dict[str, Any]) -> Recipe:
    """The preset's recipe with the run's settings."""
    from npcnn.models import get_preset

    fields = ("optimizer", "lr", "momentum", "weight_decay", "schedule", "augment")
    fields += ("label_smoothing", "step_size", "gamma", "tta")
    return dataclasses.replace(
        get_preset(config["preset"]).recipe, **{key: config[key] for key in fields}
    )


def training_batches(config: dict[str, Any], data: Dataset) -> BatchIterator:
    """The training batches ``config`` describes. The shuffling gets its own stream spawned
    from the seed, independent of the initial weights' (the preset draws those from
    default_rng(seed))."""
    import numpy as np

    from npcnn.data import BatchIterator

    shuffle_seed = np.random.SeedSequence(config["seed"]).spawn(1)[0]
    return BatchIterator(
        data.train_images,
        data.train_labels,
        config["batch_size"] or len(data.train_labels),
        rng=np.random.default_rng(shuffle_seed),
        augment=_recipe(config).make_augmentation(),
    )


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from npcnn.files import remove_stale_temporaries_in
    from npcnn.training import load_checkpoint

    if path.is_dir():
        raise CLIError(f"{path} is a directory; pass its {CHECKPOINT_FILE}")
    remove_stale_temporaries_in(path.parent)  # of a checkpoint write that was killed
    try:
        return load_checkpoint(path)
    except FileNotFoundError:
        raise CLIError(f"no such checkpoint: {path}") from None
    except ValueError as err:
        raise CLIError(f"cannot resume from {path}: {err}") from None


def _training_data(config: dict[str, Any], preset: Preset) -> tuple[Dataset, list[str]]:
    """The data set ``config`` names, limited and checked against the preset's input;
    and notes on the limits, for the console."""
    from npcnn.cli.common import load_data

    full = load_data(config["data"], config["num_classes"])
    data = full.head(config["limit_train"], config["limit_test"])
    if data.train_images.shape[1:] != preset.input_shape[1:]:
        raise CLIError(
            f"the presets take {preset.input_shape[1]}x{preset.input_shape[2]} images; "
            f"{data.name!r} has {data.train_images.shape[1]}x{data.train_images.shape[2]}"
        )
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise CLIError(f"the {data.name!r} data set has an empty training or test split")
    return data, _describe_limits(data, (len(full.train_labels), len(full.test_labels)), config)


def _model(
    config: dict[str, Any], preset: Preset, data: Dataset, checkpoint: dict[str, Any] | None
) -> Layer:
    """A fresh model of the preset, or the checkpoint's (checked against the data's classes)."""
    import numpy as np

    if checkpoint is None:
        return preset.model(seed=config["seed"], num_classes=len(data.classes))
    model = checkpoint["model"]
    outputs = model.forward(np.zeros((1, *preset.input_shape), np.float32)).shape[1]
    if outputs != len(data.classes):
        raise CLIError(
            f"the checkpoint's model has {outputs} outputs, the {data.name!r} data set "
            f"{len(data.classes)} classes"
        )
    return model


def _check_batches_for_batch_norm(config: dict[str, Any], model: Layer, images: int) -> None:
    """Refuse batches of one image for a model with BatchNorm1D, whose training
    statistics over one image are undefined (a variance of nothing)."""
    batch = min(config["batch_size"] or images, images)
    if batch < 2 and any(
        type(layer).__name__ == "BatchNorm1D" for _, layer in model.named_layers()
    ):
        what = "the training split has 1 image" if images < 2 else "--batch-size 1"
        raise CLIError(f"{what}: batch norm over features needs at least 2 images per batch")


def _threads_notes(config: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    """Record the thread count in ``config``; a note when a resume uses another count."""
    import npcnn

    config["threads"] = npcnn.get_num_threads()
    before = (previous or {}).get("threads")
    if before is None or before == config["threads"]:
        return []
    return [
        f"note: the checkpoint's run used {before} thread{'s' if before != 1 else ''}, "
        f"this one {config['threads']}: "
        "sums are split differently, so the result may differ from an uninterrupted run "
        "in the last bits"
    ]


def _schedule_notes(config: dict[str, Any], previous: dict[str, Any] | None) -> list[str]:
    """A note when a resume with another --epochs re-plans the cosine schedule."""
    before = (previous or {}).get("epochs")
    if config["schedule"] != "cosine" or before is None or before == config["epochs"]:
        return []
    return [
        f"note: the cosine schedule now anneals to 0 over {config['epochs']} epochs "
        f"(it was planned for {before}); the epochs already run keep their rates"
    ]


def _describe_limits(data: Any, full: tuple[int, int], config: dict[str, Any]) -> list[str]:
    """Notes on the subsets used, and on limits the data set is too small for."""
    notes = []
    for split, total, used, limit in (
        ("training", full[0], len(data.train_labels), config["limit_train"]),
        ("test", full[1], len(data.test_labels), config["limit_test"]),
    ):
        if limit is None:
            continue
        if limit > total:
            notes.append(
                f"note: the {data.name!r} data set has only {total:,} {split} images; "
                f"using all {total:,} ({limit:,} were asked for)"
            )
        else:
            notes.append(f"note: using the first {used:,} of {total:,} {split} images")
    return notes


def _start(
    args: argparse.Namespace,
    config: dict[str, Any],
    preset: Preset,
    data_and_notes: tuple[Dataset, list[str]],
    run_dir: Path,
) -> dict[str, Any]:
    """Write run.json and print the run's first lines; returns the record."""
    import npcnn
    from npcnn.cli.common import write_json
    from npcnn.cli.rundir import RUN_RECORD

    data, notes = data_and_notes
    arguments = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    arguments.pop("run", None)
    arguments.pop("argv", None)
    record = {
        "npcnn_version": npcnn.__version__,
        "command": " ".join([PROG, *map(shlex.quote, getattr(args, "argv", sys.argv[1:]))]),
        "arguments": arguments,
        "config": config,
        "seed": config["seed"],
        "preset": {"name": preset.name, "description": preset.description},
        "data": {
            "name": data.name,
            "source": data.source,
            "classes": list(data.classes),
            "train_images": len(data.train_labels),
            "test_images": len(data.test_labels),
        },
        "resumed_from": None if args.resume is None else str(args.resume),
    }
    write_json(run_dir / RUN_RECORD, record)
    print(_banner(npcnn.__version__, data, config, resumed=args.resume is not None))
    for note in notes:
        print(note)
    if "data_changed_from" in config and args.resume is not None:
        changed = config["data_changed_from"].items()
        was = ", ".join(f"{k.replace('_', '-')} {'all' if v is None else v}" for k, v in changed)
        print(f"note: the checkpoint was trained with {was}; continuing on other data")
    print(f"run directory: {run_dir}")
    return record


def _reports(args: argparse.Namespace, config: dict[str, Any]) -> list[Callback]:
    """What the run shows on the console: a progress bar (if wanted) and a line per epoch."""
    from npcnn.cli.console import EpochLine
    from npcnn.training import callbacks

    line = EpochLine("iteration" if config["batch_size"] is None else "epoch")
    if args.progress is False:
        return [line]
    return [callbacks.ProgressBar(force=bool(args.progress)), line]


def report_training_stop(stop: TrainingInterrupted) -> int:
    """Say how the run stopped and how to continue it; the exit code is 128 + the signal."""
    how = "interrupted" if stop.signal.name == "SIGINT" else f"stopped by {stop.signal.name}"
    if stop.checkpoint_path is None:
        print(f"{PROG}: {how} before the first checkpoint; nothing to resume", file=sys.stderr)
    else:
        steps = f" and {stop.step} step(s)" if stop.step else ""  # (into the next epoch)
        print(
            f"{PROG}: {how} after {stop.epoch} epoch(s){steps}; checkpoint saved; resume "
            f"with: {PROG} train --resume {shlex.quote(str(stop.checkpoint_path))}",
            file=sys.stderr,
        )
    return 128 + int(stop.signal)


def _report_stop_outside_the_loop(
    stop: KeyboardInterrupt, trainer: Trainer | None, epochs: int, model: Layer, run_dir: Path
) -> int:
    """A signal before the loop began or after it ended (its last reports): save the
    model if the training is complete, and say what is missing."""
    import npcnn

    signum = getattr(stop, "signal", signal.SIGINT)
    if trainer is not None and len(trainer.history.epochs) >= epochs:
        npcnn.save(model, run_dir / MODEL_FILE)
        return _report_unfinished(run_dir, signum)
    name = signal.Signals(signum).name
    how = "interrupted" if name == "SIGINT" else f"stopped by {name}"
    last = None if trainer is None else trainer.last_checkpoint
    saved = f"; resume with: {PROG} train --resume {shlex.quote(str(last))}" if last else ""
    print(f"{PROG}: {how}{saved}", file=sys.stderr)
    return 128 + int(signum)


def _report_unfinished(run_dir: Path, signum: int) -> int:
    """Say what a signal during the final report left out, and how to write it."""
    name = signal.Signals(signum).name
    how = "interrupted" if name == "SIGINT" else f"stopped by {name}"
    model = run_dir / MODEL_FILE
    source = model if model.is_file() else run_dir / CHECKPOINT_FILE
    print(
        f"{PROG}: {how} after training, before its report was complete; the trained model "
        f"is in {source}; its report: {PROG} evaluate {shlex.quote(str(source))}",
        file=sys.stderr,
    )
    return 128 + int(signum)


def _finish(
    run_dir: Path,
    model: Layer,
    data: Dataset,
    record: dict[str, Any],
    history: Any,
    started: float,
) -> None:
    """Save the model, write the test report and print the final lines."""
    import npcnn
    from npcnn.cli.report import write_report

    npcnn.save(model, run_dir / MODEL_FILE)
    epochs = history.epochs
    timings = {
        "total_seconds": time.perf_counter() - started,
        "train_seconds": float(sum(e["seconds"] for e in epochs)),
        "seconds_per_epoch": [e["seconds"] for e in epochs],
        "images_per_second": [e["images_per_second"] for e in epochs],
    }
    extra = {
        **record,
        "epochs_completed": len(epochs),
        "final_epoch": epochs[-1] if epochs else None,
        "timings": timings,
    }
    metrics = write_report(run_dir, model, data, extra, record["config"]["tta"])
    test, plain = metrics["test"], metrics.get("test_without_tta")
    without = "" if plain is None else f" (without tta {100 * plain['accuracy']:.2f}%)"
    # With label smoothing the epoch lines' losses are smoothed; this one is not.
    plain_loss = " (plain cross-entropy)" if record["config"].get("label_smoothing") else ""
    print(
        f"test loss {test['loss']:.4f}{plain_loss}, test accuracy {100 * test['accuracy']:.2f}% "
        f"({test['correct']}/{test['count']}){without}"
    )
    print(
        f"wrote {run_dir}: {MODEL_FILE}, metrics.json, log.csv, log.json, curves.png, "
        "confusion.png, misclassified.png, checkpoint.npz, run.json"
    )


def _choose_run_directory(args: argparse.Namespace, preset: str) -> Path:
    """--out, else <checkpoint's run>-resumed when resuming, else runs/<preset>-<time>;
    made fresh (a numbered sibling) when it already holds files or another run has it."""
    from npcnn.cli.rundir import default_run_directory, fresh_directory

    if args.out is not None:
        run_dir = fresh_directory(args.out)
        if run_dir != args.out:
            print(f"note: {args.out} is taken; writing to {run_dir} instead")
        return run_dir
    if args.resume is not None:
        parent = args.resume.parent  # kept relative, as the user wrote it, when it has a name
        if parent.name in ("", ".."):
            parent = args.resume.resolve().parent
        return fresh_directory(parent.with_name(f"{parent.name}-resumed"))
    return fresh_directory(default_run_directory(preset))


def _banner(version: str, data: Any, config: dict[str, Any], resumed: bool) -> str:
    """The first line of a run: what is trained on what, and how."""
    epochs = config["epochs"]
    size = config["batch_size"]
    batch = f"full ({len(data.train_labels)})" if size is None else str(size)
    augment = f"augment {config['augment']}, " if config["augment"] != "none" else ""
    if config.get("label_smoothing"):
        augment += f"label smoothing {config['label_smoothing']:g}, "
    if config["tta"] != "none":
        augment += f"tests with tta {config['tta']}, "
    schedule = config["schedule"]
    if schedule == "step":
        schedule += f" (x{config['gamma']:g} every {config['step_size']} epochs)"
    return (
        f"{PROG} {version}: {'resuming ' if resumed else ''}training preset "
        f"{config['preset']!r} on {data.name!r} ({len(data.train_labels):,} train / "
        f"{len(data.test_labels):,} test images), {epochs} epoch{'s' if epochs != 1 else ''}, "
        f"batch {batch}, {config['optimizer']} lr {config['lr']:g}, schedule {schedule}, "
        f"{augment}seed {config['seed']}"
    )


def _check_plot_dependencies() -> None:
    """Fail before training, not after it, when the report's packages are missing."""
    import importlib.util

    for module in ("matplotlib",):
        if importlib.util.find_spec(module) is None:
            raise CLIError(f"'{module}' is not installed: pip install \"npcnn[cli]\"")
