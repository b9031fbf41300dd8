"""``npcnn summary``: the layer table of a preset or of a saved model."""

from __future__ import annotations

import argparse

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK, UsageError
from npcnn.models import DEFAULT_PRESET, PRESETS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "summary",
        help="print a model's layers, output shapes and parameter counts",
        description="Print the layer table of a preset's network or of a saved model.",
    )
    options.add_model_or_preset(p, list(PRESETS), DEFAULT_PRESET, "summarise")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from npcnn.cli.common import check_model_fits, load_model
    from npcnn.models import get_preset

    if args.model is not None and args.preset is not None:
        raise UsageError("give either MODEL or --preset, not both")
    if args.model is not None:
        model = load_model(args.model)
        check_model_fits(model, getattr(model, "input_shape", (1, 28, 28)), args.model)
        print(f"Model: {args.model}")
    else:
        preset = get_preset(args.preset or DEFAULT_PRESET)
        model = preset.model(seed=0)
        print(f"Preset: {preset.name} ({preset.description})")
    model.summary(getattr(model, "input_shape", (1, 28, 28)))  # a Model knows its input
    return EXIT_OK
