"""A Keras-style table of a model's layers, output shapes and parameter counts, and the
blocks of layers that its passes run as one fused kernel (`npcnn.nn.fusion`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # (npcnn.nn.module imports this module when summary() is called)
    from npcnn.nn.module import Layer


def summarize(
    model: Layer, input_shape: tuple[int, ...], print_fn: Callable[[str], Any] | None = print
) -> list[dict[str, Any]]:
    """Run one zero sample through `model` in inference mode and tabulate each layer.

    Returns a list of rows {"name", "type", "output_shape", "params", "fused"} and a
    last row named "total" with the total parameter count. "fused" is None for a
    layer that runs on its own, and "first-last: Type+Type+..." for the layers of a
    block that runs as one fused kernel (a container's `plan()`).
    """
    layers = list(model) if hasattr(model, "__iter__") else [model]
    fused = _fused_blocks(model, layers)
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
                "fused": fused.get(i),
            }
        )
    total = sum(r["params"] for r in rows)
    rows.append({"name": "total", "type": "", "output_shape": None, "params": total})
    if print_fn is not None:
        print_fn(format_summary(rows, input_shape))
    return rows


def _fused_blocks(model: Layer, layers: list[Layer]) -> dict[int, str]:
    """{index of a layer in a fused block: "first-last: Type+Type+..."}, from the
    model's `plan()` (a model without one fuses nothing)."""
    plan = getattr(model, "plan", None)
    if plan is None:
        return {}
    index = {id(layer): i for i, layer in enumerate(layers)}
    blocks: dict[int, str] = {}
    for step in plan():
        if step.fused:
            members = [index[id(layer)] for layer in step.layers]
            for i in members:
                blocks[i] = f"{members[0]}-{members[-1]}: {step.name}"
    return blocks


def format_summary(rows: list[dict[str, Any]], input_shape: tuple[int, ...]) -> str:
    """The rows of `summarize` as a fixed-width text table; a fused block's name is written
    on its first row, its range of layers on the others."""
    # The layer column fits the longest type name ("GlobalAvgPool2D") and a space.
    tw = max(14, 1 + max((len(r["type"]) for r in rows[:-1]), default=0))
    header = f"{'#':<4}{'Layer':<{tw}}{'Output shape':<24}{'Params':>10}"
    fused = any(r.get("fused") for r in rows[:-1])
    rule = "-" * (len(header) + (36 if fused else 0))
    lines = [f"Input shape: {(None, *input_shape)}", rule]
    lines += [header + ("  Fused" if fused else ""), rule]
    for i, r in enumerate(rows[:-1]):
        line = f"{r['name']:<4}{r['type']:<{tw}}{r['output_shape']!s:<24}{r['params']:>10,}"
        block = r.get("fused")
        if block:
            first = i == 0 or rows[i - 1].get("fused") != block
            line += f"  {block if first else block.split(':')[0]}"
        lines.append(line)
    lines += [rule, f"Total params: {rows[-1]['params']:,}"]
    return "\n".join(lines)


def summarize_graph(
    model: Any, print_fn: Callable[[str], Any] | None = print
) -> list[dict[str, Any]]:
    """The rows of a `Model` (`npcnn.nn.graph`): one per node, in order of execution, with
    "connected_to" (the names of the tensors it takes, as Keras' "Connected to") and
    "fused" as in `summarize` (node numbers); a last row "total"."""
    index = {node.name: i for i, node in enumerate(model.nodes)}
    fused: dict[str, str] = {}
    for step in model.plan():
        if step.fused:
            members = [
                node.name for node in model.nodes if any(node.layer is la for la in step.layers)
            ]
            for name in members:
                fused[name] = f"{index[members[0]]}-{index[members[-1]]}: {step.name}"
    rows = [
        {
            "name": node.name,
            "type": type(node.layer).__name__,
            "output_shape": node.output_shape,
            "params": int(sum(p.data.size for p in node.layer.parameters())),
            "connected_to": list(node.inbound),
            "fused": fused.get(node.name),
        }
        for node in model.nodes
    ]
    rows.append(
        {
            "name": "total",
            "type": "",
            "output_shape": None,
            "params": sum(r["params"] for r in rows),
        }
    )
    if print_fn is not None:
        print_fn(format_graph_summary(rows, model.input_name, model.input_shape))
    return rows


def format_graph_summary(
    rows: list[dict[str, Any]], input_name: str, input_shape: tuple[int, ...]
) -> str:
    """The rows of `summarize_graph` as a fixed-width table with a "Connected to" column."""
    # The "name (type)" column fits its longest entry, with two spaces to spare.
    width = max(26, *(len(f"{r['name']} ({r['type']})") + 2 for r in rows[:-1])) - 14
    header = f"{'#':<4}{'Layer (type)':<{width + 14}}{'Output shape':<22}{'Params':>9}"
    header += f"  {'Connected to':<24}"
    fused = any(r.get("fused") for r in rows[:-1])
    rule = "-" * (len(header) + (36 if fused else 0))
    lines = [
        f"Input: {input_name} {(None, *input_shape)}",
        rule,
        header + ("Fused" if fused else ""),
        rule,
    ]
    for i, r in enumerate(rows[:-1]):
        layer = f"{r['name']} ({r['type']})"
        line = f"{i:<4}{layer:<{width + 14}}{r['output_shape']!s:<22}{r['params']:>9,}"
        line += f"  {', '.join(r['connected_to']):<24}"
        block = r.get("fused")
        if block:
            first = i == 0 or rows[i - 1].get("fused") != block
            line += block if first else block.split(":")[0]
        lines.append(line.rstrip())
    lines += [rule, f"Total params: {rows[-1]['params']:,}"]
    return "\n".join(lines)
