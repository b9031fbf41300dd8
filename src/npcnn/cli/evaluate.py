"""``npcnn evaluate``: a saved model's loss, accuracy and per-class results on a test set."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK, CLIError, UsageError
from npcnn.training.evaluate import TTA_MODES

if TYPE_CHECKING:
    from npcnn.data import DatasetSplit
    from npcnn.metrics import ClassReport
    from npcnn.training.evaluate import EvalResult


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="test a saved model: accuracy, loss, per-class table, confusion matrix",
        description=(
            "Evaluate MODEL on the test split of a data set: loss, accuracy, per-class "
            "precision/recall and the confusion matrix."
        ),
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        type=options.non_empty,
        help=options.MODEL_HELP,
    )
    p.add_argument(
        "--data",
        metavar="NAME|DIR",
        help="data set name or directory (default: the one the model was trained on, "
        "from run.json next to MODEL, else 'sample')",
    )
    p.add_argument(
        "--num-classes",
        type=options.class_count,
        metavar="N",
        help="classes of a --data directory (default: the run's, from run.json, else its "
        "classes.txt, else 10)",
    )
    p.add_argument(
        "--limit-test",
        type=options.positive_int,
        metavar="N",
        help="use only the first N test images (for quick trials)",
    )
    p.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation: flip averages each image's logits with those of its "
        "mirror image (default: the run's, from run.json next to MODEL, else none)",
    )
    p.add_argument("--batch-size", type=options.positive_int, default=500, help="(default: 500)")
    p.add_argument(
        "--threads",
        type=options.threads,
        help=f"threads inside the layers, at most {options.MAX_THREADS} (default: all cores)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from npcnn import nn
    from npcnn.cli.common import (
        check_finite,
        check_model_fits,
        load_model,
        run_setting,
        run_tta,
        set_threads,
    )
    from npcnn.data import dataset_spec
    from npcnn.metrics import classification_report
    from npcnn.training import evaluate

    set_threads(args.threads)
    model = load_model(args.model)
    # The run record is read only for what the options leave open.
    name = data_name(args.model, args.data)
    num_classes = args.num_classes
    if num_classes is None and dataset_spec(name) is None:
        num_classes = run_setting(args.model, "num_classes")  # the run's directory's classes
    data = test_split(args, name, num_classes)
    check_model_fits(model, (1, *data.image_shape), args.model)
    tta, tta_source = run_tta(args.model, args.tta)
    if args.limit_test is None:
        note = test_limit_note(args.model, args.data, len(data.labels))
        if note:
            print(note, file=sys.stderr)
    try:
        result = evaluate(
            model, data.images, data.labels, nn.CrossEntropyLoss(), args.batch_size, tta=tta
        )
    except ValueError as err:
        raise CLIError(f"the model does not fit the {data.name!r} images: {err}") from None
    check_finite(result.probabilities, args.model)
    if result.probabilities.shape[1] != len(data.classes):
        raise CLIError(
            f"the model has {result.probabilities.shape[1]} outputs but {data.name!r} has "
            f"{len(data.classes)} classes"
        )
    report = classification_report(data.labels, result.predictions, data.classes)
    print(f"Model: {args.model}")
    print(f"Data: {data.name} test split, {len(data.labels)} images")
    if tta != "none":
        print(f"Test-time augmentation: {tta} ({tta_source})")
    _print_results(result, report)
    return EXIT_OK


def _print_results(result: EvalResult, report: ClassReport) -> None:
    """Loss, accuracy, the per-class table and the confusion matrix, on stdout."""
    n = int(report.confusion.sum())
    correct = int(report.confusion.trace())
    print(f"test loss: {result.loss:.4f}")
    print(f"test accuracy: {result.accuracy:.4f} ({correct}/{n})")
    print()
    print(report.format_table())
    print()
    print("Confusion matrix (rows: true class, columns: predicted):")
    print(report.format_confusion())


def test_split(args: argparse.Namespace, name: str, num_classes: int | None) -> DatasetSplit:
    """The test images of data set ``name`` (the first --limit-test of them); a failure
    to load the run's own data set (no --data given) names the record it came from."""
    from npcnn.cli.common import load_test_split, run_setting
    from npcnn.cli.rundir import RUN_RECORD

    try:
        return load_test_split(name, num_classes).head(args.limit_test)
    except CLIError as err:
        came_from_record = args.data is None and run_setting(args.model, "data") is not None
        if isinstance(err, UsageError) or not came_from_record:  # (an option's mistake)
            raise
        record = Path(args.model).parent / RUN_RECORD
        message = f"the run's data {name} (from {record}): {err}; pass --data NAME|DIR"
        raise CLIError(message, err.code) from None


def data_name(model_path: str, given: str | None) -> str:
    """The data set to evaluate on: ``given`` (--data), else the run's (run.json beside
    the model), else "sample".

    Raises CLIError when the run's data set is a folder that has gone (moved or
    deleted since training): the record names it by its absolute path.
    """
    from npcnn.cli.common import gone_data_folder, run_setting
    from npcnn.cli.rundir import RUN_RECORD

    if given is not None:
        return given
    name = run_setting(model_path, "data")
    if name is None:
        return "sample"
    state = gone_data_folder(name)
    if state is not None:
        raise CLIError(
            f"the run's data folder {name} (from {Path(model_path).parent / RUN_RECORD}) "
            f"{state}; pass --data NAME|DIR"
        )
    return name


def test_limit_note(model_path: str, given: str | None, count: int) -> str | None:
    """A note when the run was tested on fewer than the ``count`` test images evaluated
    now (it was trained with --limit-test), so that its metrics.json reports another
    accuracy; None when it was not, or the data set is not the run's (``given`` is
    --data), or its record does not say."""
    from npcnn.cli.common import run_data_section, run_record_if_sound
    from npcnn.cli.train_config import data_argument

    record = run_record_if_sound(model_path)
    if record is None:
        return None
    if given is not None and data_argument(given) != record["config"].get("data"):
        return None
    tested = run_data_section(record).get("test_images")
    if isinstance(tested, bool) or not isinstance(tested, int) or tested >= count:
        return None
    return (
        f"note: the run was tested on its first {tested:,} test images (metrics.json); "
        f"evaluating all {count:,}: pass --limit-test {tested} to compare"
    )
