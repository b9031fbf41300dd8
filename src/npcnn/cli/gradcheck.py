"""``npcnn gradcheck``: finite-difference check of the gradients of a preset's network or
of a saved model."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from npcnn.cli import options
from npcnn.cli.errors import EXIT_FAILURE, EXIT_OK, CLIError, UsageError
from npcnn.models import DEFAULT_PRESET, PRESETS

if TYPE_CHECKING:
    from npcnn import nn
    from npcnn.gradcheck import GradcheckResult

TOLERANCE = 1e-6


#: Each checked entry costs two float64 passes over the whole batch: larger
#: batches only make the check slower, and memory grows with them.
MAX_BATCH = 64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="check a network's gradients against finite differences",
        description=(
            "Run a preset's network (or a saved model) in float64 on a small random "
            "batch, compare the "
            "backward pass of cross-entropy loss with centred finite differences, print "
            "the relative error per tensor and exit with 1 if the largest is above "
            f"{TOLERANCE:g}. Entries on a kink of ReLU or max pooling, where the loss has "
            "no derivative, are counted as excluded."
        ),
    )
    options.add_model_or_preset(p, list(PRESETS), DEFAULT_PRESET, "check")
    p.add_argument(
        "--batch-size",
        type=options.int_in_range(1, MAX_BATCH),
        default=4,
        help=f"examples, at most {MAX_BATCH} (default: 4)",
    )
    p.add_argument(
        "--elements",
        type=options.positive_int,
        default=64,
        help="elements checked per tensor, chosen at random (default: 64)",
    )
    p.add_argument("--seed", type=options.seed, default=0, help="weights, data, picks (default: 0)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    import npcnn
    from npcnn import nn

    if args.model is not None and args.preset is not None:
        raise UsageError("give either MODEL or --preset, not both")
    model, input_shape, what = _network(args)
    model.astype(np.float64)
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.batch_size, *input_shape))
    logits = model.forward(x[:1])
    if logits.ndim != 2:
        raise CLIError(f"{what} outputs shape {logits.shape[1:]} per image, not class scores")
    y = rng.integers(0, logits.shape[1], size=args.batch_size)
    result = npcnn.gradcheck(
        model,
        x,
        y,
        loss_fn=nn.CrossEntropyLoss(),
        rtol=TOLERANCE,
        seed=args.seed,
        max_elements=args.elements,
    )
    print(f"Gradient check of {what}: float64, batch {args.batch_size}")
    print(result)
    print(verdict(result))
    return EXIT_OK if result.passed() else EXIT_FAILURE


def _network(args: argparse.Namespace) -> tuple[nn.Layer, tuple[int, ...], str]:
    """(model, one image's shape, how to name it) for the MODEL file or the preset."""
    from npcnn.cli.common import check_model_fits, load_model
    from npcnn.models import get_preset

    if args.model is None:
        preset = get_preset(args.preset or DEFAULT_PRESET)
        return preset.model(seed=args.seed), preset.input_shape, f"preset {preset.name!r}"
    model = load_model(args.model)
    input_shape = getattr(model, "input_shape", (1, 28, 28))  # a Model knows its input
    check_model_fits(model, input_shape, args.model)
    return model, input_shape, str(args.model)


def verdict(result: GradcheckResult) -> str:
    """The last line: entries compared and excluded, the largest error, OK or FAILED."""
    excluded = ""
    if result.num_excluded:
        excluded = f", {result.num_excluded} excluded (on a ReLU or max-pool kink)"
    return (
        f"{result.num_checked} entries compared{excluded}; max relative error "
        f"{result.max_error:.2e} (tolerance {result.rtol:g} relative, {result.atol:.1e} absolute): "
        + ("OK" if result.passed() else "FAILED")
    )
