"""``npcnn train``: train a preset network and write a run directory.

A run directory holds run.json (how the run was made, written first),
checkpoint.npz (after every epoch), log.csv and log.json (one row per
epoch), curves.png, and at the end model.npz, metrics.json, confusion.png
and misclassified.png. A new run never writes into a directory that holds
files already: it picks a fresh name.
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from npcnn.cli import options
from npcnn.cli.errors import EXIT_INTERRUPTED, EXIT_OK, PROG, CLIError, UsageError
from npcnn.models import AUGMENTATIONS, DEFAULT_PRESET, OPTIMIZERS, PRESETS, SCHEDULES

CHECKPOINT_FILE = "checkpoint.npz"
MODEL_FILE = "model.npz"

#: Options that override the preset's recipe (argparse default None = "not given").
RECIPE_OPTIONS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "limit_train",
    "limit_test",
    "recompute_bn",
    "augment",
)
# Recipe fields that the command line calls limit_*.
_RECIPE_FIELD = {"limit_train": "train_limit", "limit_test": "test_limit"}


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
            "Ctrl-C stops training after writing a checkpoint (exit code 130); continue "
            "with --resume RUN_DIR/checkpoint.npz."
        ),
    )
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
    p.add_argument("--epochs", type=options.positive_int, metavar="N")
    p.add_argument(
        "--batch-size",
        type=options.batch_size,
        metavar="N|full",
        help="'full' for full-batch gradient descent",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--lr", type=options.positive_float, metavar="RATE", help="learning rate")
    p.add_argument("--momentum", type=options.momentum, help="SGD momentum, in [0, 1)")
    p.add_argument("--weight-decay", type=options.non_negative_float, metavar="WD")
    p.add_argument("--schedule", choices=SCHEDULES, help="learning-rate schedule")
    p.add_argument(
        "--seed", type=options.seed, help="seed of the weights and the shuffling (default: 0)"
    )
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run directory (default: runs/PRESET-TIMESTAMP; if DIR already holds files, "
        "DIR-2, DIR-3, ... is used instead)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="CHECKPOINT",
        help="continue the run that wrote CHECKPOINT (its settings are reused unless "
        "given again); the continued run gets a fresh directory",
    )
    p.add_argument("--threads", type=options.positive_int, help="threads inside the layers")
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
    p.add_argument(
        "--recompute-bn",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="recompute batch-norm statistics on the training images before each test "
        "(default: the preset's; on for notebook)",
    )
    p.add_argument(
        "--augment",
        choices=AUGMENTATIONS,
        help="random changes to the training images: flip mirrors half of them left to "
        "right (right for clothes, wrong for digits) (default: the preset's; flip for strong)",
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    p.set_defaults(run=run)


def resolve_config(args: argparse.Namespace, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The run's settings: explicit options, else the resumed run's, else the preset's recipe."""
    from npcnn.models import get_preset

    previous = previous or {}
    preset = get_preset(args.preset or previous.get("preset") or DEFAULT_PRESET)
    config: dict[str, Any] = {
        "preset": preset.name,
        "data": _data_argument(args.data) if args.data else previous.get("data", "sample"),
        "num_classes": args.num_classes or previous.get("num_classes"),
        "seed": args.seed if args.seed is not None else previous.get("seed", 0),
    }
    for name in RECIPE_OPTIONS:
        given = getattr(args, name)
        if given is not None:
            config[name] = given
        elif name in previous:
            config[name] = previous[name]
        else:
            config[name] = getattr(preset.recipe, _RECIPE_FIELD.get(name, name))
    if config["momentum"] and config["optimizer"] != "sgd":
        raise UsageError(f"--momentum applies to sgd only, not {config['optimizer']}")
    return config


def _data_argument(name: str) -> str:
    """A data set name as given; a directory as an absolute path, so run.json stays valid."""
    from npcnn.data import DATASETS

    if name.strip().lower().replace("_", "-") in DATASETS or not Path(name).is_dir():
        return name
    return str(Path(name).resolve())


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
                f"using all {total:,} (the recipe asks for {limit:,})"
            )
        else:
            notes.append(f"note: using the first {used:,} of {total:,} {split} images")
    return notes


def _checkpoint_record(path: Path) -> dict[str, Any]:
    from npcnn.training import load_checkpoint

    try:
        return load_checkpoint(path)
    except FileNotFoundError:
        raise CLIError(f"no such checkpoint: {path}") from None
    except IsADirectoryError:
        raise CLIError(f"{path} is a directory; pass its {CHECKPOINT_FILE}") from None
    except ValueError as err:
        raise CLIError(f"cannot resume from {path}: {err}") from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import npcnn
    from npcnn import nn
    from npcnn.cli.common import (
        RUN_RECORD,
        limit_splits,
        load_data,
        read_run_record,
        set_threads,
        write_json,
    )
    from npcnn.cli.console import EpochLine
    from npcnn.cli.report import write_report
    from npcnn.data import BatchIterator
    from npcnn.models import get_preset
    from npcnn.training import (
        NonFiniteLossError,
        Trainer,
        TrainingInterrupted,
        callbacks,
    )

    started = time.perf_counter()
    checkpoint = None
    previous = None
    if args.resume is not None:
        checkpoint = _checkpoint_record(args.resume)
        previous = (read_run_record(args.resume) or {}).get("config")
    config = resolve_config(args, previous)
    preset = get_preset(config["preset"])
    set_threads(args.threads)
    _check_plot_dependencies()

    data = load_data(config["data"], config["num_classes"])
    sizes = (len(data.train_labels), len(data.test_labels))
    data = limit_splits(data, config["limit_train"], config["limit_test"])
    if data.train_images.shape[1:] != preset.input_shape[1:]:
        raise CLIError(
            f"the presets take {preset.input_shape[1]}x{preset.input_shape[2]} images; "
            f"{data.name!r} has {data.train_images.shape[1]}x{data.train_images.shape[2]}"
        )
    if len(data.train_labels) == 0 or len(data.test_labels) == 0:
        raise CLIError(f"the {data.name!r} data set has an empty training or test split")

    if checkpoint is not None:
        model = checkpoint["model"]
        if model.forward(np.zeros((1, *preset.input_shape), np.float32)).shape[1] != len(
            data.classes
        ):
            raise CLIError(f"the checkpoint's model does not have {len(data.classes)} outputs")
    else:
        model = preset.model(seed=config["seed"], num_classes=len(data.classes))
    batch = config["batch_size"] or len(data.train_labels)

    run_dir = _choose_run_directory(args, preset.name)

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

    print(_banner(npcnn.__version__, preset.name, data, config, resumed=checkpoint is not None))
    for note in _describe_limits(data, sizes, config):
        print(note)
    print(f"run directory: {run_dir}")

    # The shuffling gets its own stream spawned from the seed, independent of the
    # initial weights' (the preset draws those from default_rng(seed)).
    recipe = dataclasses.replace(
        preset.recipe,
        **{
            key: config[key]
            for key in ("optimizer", "lr", "momentum", "weight_decay", "schedule", "augment")
        },
    )
    shuffle_seed = np.random.SeedSequence(config["seed"]).spawn(1)[0]
    train_batches = BatchIterator(
        data.train_images,
        data.train_labels,
        batch,
        rng=np.random.default_rng(shuffle_seed),
        augment=recipe.make_augmentation(),
    )
    optimizer = recipe.make_optimizer(model.parameters())
    scheduler = recipe.make_scheduler(optimizer, config["epochs"])
    reports = [
        callbacks.ProgressBar(force=bool(args.progress)) if args.progress is not False else None,
        EpochLine("iteration" if config["batch_size"] is None else "epoch"),
        callbacks.CSVLogger(run_dir / "log.csv"),
        callbacks.JSONLogger(run_dir / "log.json"),
        callbacks.PlotCurves(
            run_dir / "curves.png", title=f"{preset.name} on {data.name}: train and test"
        ),
    ]
    trainer = Trainer(
        model,
        nn.CrossEntropyLoss(),
        optimizer,
        scheduler=scheduler,
        callbacks=[r for r in reports if r is not None],
        checkpoint_path=run_dir / CHECKPOINT_FILE,
        bn_data=data.train_images if config["recompute_bn"] else None,
    )
    try:
        history = trainer.fit(
            train_batches,
            config["epochs"],
            validation=(data.test_images, data.test_labels),
            resume_from=args.resume,
        )
    except TrainingInterrupted as stop:
        if stop.checkpoint_path is None:
            print(
                f"{PROG}: interrupted before the first checkpoint; nothing to resume",
                file=sys.stderr,
            )
        else:
            print(
                f"{PROG}: interrupted after {stop.epoch} epoch(s); checkpoint saved; resume with: "
                f"{PROG} train --resume {shlex.quote(str(stop.checkpoint_path))}",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except NonFiniteLossError as err:
        raise CLIError(f"training diverged: {err}") from None

    npcnn.save(model, run_dir / MODEL_FILE)
    epochs = history.epochs
    train_seconds = float(sum(e["seconds"] for e in epochs))
    metrics = write_report(
        run_dir,
        model,
        data,
        {
            **record,
            "epochs_completed": len(epochs),
            "final_epoch": epochs[-1] if epochs else None,
            "timings": {
                "total_seconds": time.perf_counter() - started,
                "train_seconds": train_seconds,
                "seconds_per_epoch": [e["seconds"] for e in epochs],
                "images_per_second": [e["images_per_second"] for e in epochs],
            },
        },
    )
    test = metrics["test"]
    print(
        f"test loss {test['loss']:.4f}, test accuracy {100 * test['accuracy']:.2f}% "
        f"({test['correct']}/{test['count']})"
    )
    print(
        f"wrote {run_dir}: {MODEL_FILE}, metrics.json, log.csv, log.json, curves.png, "
        "confusion.png, misclassified.png, checkpoint.npz, run.json"
    )
    return EXIT_OK


def _choose_run_directory(args: argparse.Namespace, preset: str) -> Path:
    """--out, else <checkpoint's run>-resumed when resuming, else runs/<preset>-<time>;
    made fresh (a numbered sibling) when it already holds files."""
    from npcnn.cli.common import default_run_directory, fresh_directory

    if args.out is not None:
        run_dir = fresh_directory(args.out)
        if run_dir != args.out:
            print(f"note: {args.out} already holds files; writing to {run_dir} instead")
        return run_dir
    if args.resume is not None:
        parent = args.resume.resolve().parent
        return fresh_directory(parent.with_name(f"{parent.name}-resumed"))
    return fresh_directory(default_run_directory(preset))


def _banner(version: str, preset: str, data: Any, config: dict[str, Any], resumed: bool) -> str:
    """The first line of a run: what is trained on what, and how."""
    epochs = config["epochs"]
    size = config["batch_size"]
    batch = f"full ({len(data.train_labels)})" if size is None else str(size)
    augment = f"augment {config['augment']}, " if config["augment"] != "none" else ""
    return (
        f"{PROG} {version}: {'resuming ' if resumed else ''}training preset {preset!r} on "
        f"{data.name!r} ({len(data.train_labels):,} train / {len(data.test_labels):,} test "
        f"images), {epochs} epoch{'s' if epochs != 1 else ''}, batch {batch}, "
        f"{config['optimizer']} lr {config['lr']:g}, schedule {config['schedule']}, "
        f"{augment}seed {config['seed']}"
    )


def _check_plot_dependencies() -> None:
    """Fail before training, not after it, when the report's packages are missing."""
    import importlib.util

    for module in ("matplotlib",):
        if importlib.util.find_spec(module) is None:
            raise CLIError(f"'{module}' is not installed: pip install \"npcnn[cli]\"")
