"""``npcnn import``: an ONNX file (npcnn's, PyTorch's, tf2onnx's) as an npcnn model file."""

from __future__ import annotations

import argparse

from npcnn.cli import options
from npcnn.cli.errors import EXIT_OK, CLIError
from npcnn.cli.outputs import add_output_arguments, check_output


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert an ONNX file into an npcnn model file",
        description="Convert an ONNX CNN (written by npcnn, by PyTorch's exporters, or "
        "by tf2onnx) into an npcnn model .npz that evaluate, predict, summary and "
        "training take. An operator npcnn cannot represent is named, and nothing is "
        'written. Needs the onnx extra: pip install "npcnn[onnx]".',
    )
    p.add_argument("source", metavar="MODEL.onnx", type=options.non_empty, help="the ONNX file")
    add_output_arguments(p, "OUT.npz", "the npcnn model file to write")
    p.add_argument(
        "--allow-external-data",
        action="store_true",
        help="read tensors kept in files beside the model (only plain files in its folder)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import npcnn
    from npcnn.cli.common import load_onnx_model

    check_output(args.output, ".npz", args.force)
    model = load_onnx_model(args.source, allow_external_data=args.allow_external_data)
    try:
        npcnn.save(model, args.output)
    except OSError as err:
        raise CLIError(f"cannot write {args.output}: {err.strerror or err}") from None
    except ValueError as err:
        raise CLIError(str(err)) from None
    params = sum(p.data.size for p in model.parameters())
    print(f"wrote {args.output} ({type(model).__name__}, {params:,} parameters)")
    return EXIT_OK
