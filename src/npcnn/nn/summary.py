"""A Keras-style table of a model's layers, output shapes and parameter counts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from npcnn.nn.module import Layer


def summarize(
    model: Layer, input_shape: tuple[int, ...], print_fn: Callable[[str], Any] | None = print
) -> list[dict[str, Any]]:
    """Run one zero sample through `model` in inference mode and tabulate each layer.

    Returns a list of rows {"name", "type", "output_shape", "params"} and a last
    row named "total" with the total parameter count.
    """
    layers = list(model) if hasattr(model, "__iter__") else [model]
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    x = np.zeros((1, *input_shape), dtype=dtype)
    rows: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        x = layer.forward(x, training=False)
        rows.append(
            {
                "name": str(i),
                "type": type(layer).__name__,
                "output_shape": (None, *x.shape[1:]),
                "params": int(sum(p.data.size for p in layer.parameters())),
            }
        )
    total = sum(r["params"] for r in rows)
    rows.append({"name": "total", "type": "", "output_shape": None, "params": total})
    if print_fn is not None:
        print_fn(format_summary(rows, input_shape))
    return rows


def format_summary(rows: list[dict[str, Any]], input_shape: tuple[int, ...]) -> str:
    """The rows of `summarize` as a fixed-width text table."""
    header = f"{'#':<4}{'Layer':<14}{'Output shape':<24}{'Params':>10}"
    rule = "-" * len(header)
    lines = [f"Input shape: {(None, *input_shape)}", rule, header, rule]
    for r in rows[:-1]:
        lines.append(f"{r['name']:<4}{r['type']:<14}{r['output_shape']!s:<24}{r['params']:>10,}")
    lines += [rule, f"Total params: {rows[-1]['params']:,}"]
    return "\n".join(lines)
