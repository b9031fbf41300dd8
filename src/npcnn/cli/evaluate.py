"""``npcnn evaluate``: a saved model's loss, accuracy and per-class results on a test set."""

from __future__ import annotations

import argparse

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK
from npcnn.training.evaluate import TTA_MODES


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="test a saved model: accuracy, loss, per-class table, confusion matrix",
        description=(
            "Evaluate MODEL on the test split of a data set: loss, accuracy, per-class "
            "precision/recall and the confusion matrix."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="a model .npz written by 'npcnn train'")
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
    p.add_argument("--threads", type=options.positive_int, help="threads inside the layers")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from npcnn import nn
    from npcnn.cli.common import (
        check_finite,
        check_model_fits,
        limit_splits,
        load_data,
        load_model,
        read_run_record,
        run_tta,
        set_threads,
    )
    from npcnn.cli.errors import CLIError
    from npcnn.data import dataset_spec
    from npcnn.metrics import classification_report
    from npcnn.training import evaluate

    set_threads(args.threads)
    model = load_model(args.model)
    config = (read_run_record(args.model) or {}).get("config") or {}
    name = args.data or config.get("data", "sample")
    num_classes = args.num_classes
    if num_classes is None and dataset_spec(name) is None:
        num_classes = config.get("num_classes")  # what the run's directory was trained with
    data = limit_splits(load_data(name, num_classes), None, args.limit_test)
    check_model_fits(model, (1, *data.test_images.shape[1:]), args.model)
    tta, tta_source = run_tta(args.model, args.tta)
    try:
        result = evaluate(
            model,
            data.test_images,
            data.test_labels,
            nn.CrossEntropyLoss(),
            args.batch_size,
            tta=tta,
        )
    except ValueError as err:
        raise CLIError(f"the model does not fit the {data.name!r} images: {err}") from None
    check_finite(result.probabilities, args.model)
    if result.probabilities.shape[1] != len(data.classes):
        raise CLIError(
            f"the model has {result.probabilities.shape[1]} outputs but {data.name!r} has "
            f"{len(data.classes)} classes"
        )
    report = classification_report(data.test_labels, result.predictions, data.classes)
    n = len(data.test_labels)
    correct = int(report.confusion.trace())
    print(f"Model: {args.model}")
    print(f"Data: {data.name} test split, {n} images")
    if tta != "none":
        print(f"Test-time augmentation: {tta} ({tta_source})")
    print(f"test loss: {result.loss:.4f}")
    print(f"test accuracy: {result.accuracy:.4f} ({correct}/{n})")
    print()
    print(report.format_table())
    print()
    print("Confusion matrix (rows: true class, columns: predicted):")
    print(report.format_confusion())
    return EXIT_OK
