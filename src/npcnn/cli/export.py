"""``npcnn export``: a saved model (or checkpoint) as an ONNX file."""

from __future__ import annotations

import argparse

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK, CLIError
from npcnn.cli.outputs import add_output_arguments, check_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from npcnn.onnx.export import DEFAULT_OPSET, SUPPORTED_OPSETS

    p = subparsers.add_parser(
        "export",
        help="write a saved model as an ONNX file (inference graph)",
        description="Write the inference graph of a saved model (or of a training "
        "checkpoint's model) as ONNX, with a dynamic batch dimension; initializers carry "
        'the model\'s state-dict names. Needs the onnx extra: pip install "npcnn[onnx]".',
    )
    p.add_argument(
        "model",
        metavar="MODEL",
        type=options.non_empty,
        help=options.MODEL_HELP,
    )
    add_output_arguments(p, "OUT.onnx", "the ONNX file to write")
    p.add_argument(
        "--opset",
        type=int,
        choices=list(SUPPORTED_OPSETS),
        default=DEFAULT_OPSET,
        metavar="N",
        help=f"ONNX opset, {SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} "
        f"(default: {DEFAULT_OPSET})",
    )
    p.add_argument("--softmax", action="store_true", help="append a Softmax: output probabilities")
    p.add_argument(
        "--input-shape",
        type=_shape,
        metavar="C,H,W",
        help="one input's shape (default: a graph model's own, else 1,28,28)",
    )
    p.set_defaults(run=run)


def _shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        dims = ()
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,28,28, got {text!r}")
    return dims


def run(args: argparse.Namespace) -> int:
    from npcnn.cli.common import check_model_fits, load_model
    from npcnn.onnx import OnnxMissingError, export

    check_output(args.output, ".onnx", args.force)
    model = load_model(args.model)
    shape = args.input_shape or getattr(model, "input_shape", (1, 28, 28))
    check_model_fits(model, shape, args.model)
    try:
        path = export(model, args.output, shape, opset=args.opset, softmax=args.softmax)
    except OnnxMissingError as err:
        raise CLIError(str(err)) from None
    except OSError as err:
        raise CLIError(f"cannot write {args.output}: {err.strerror or err}") from None
    print(f"wrote {path} (opset {args.opset}, input (batch, {', '.join(map(str, shape))}))")
    return EXIT_OK
