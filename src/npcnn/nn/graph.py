"""Model: a directed acyclic graph of layers, built with Keras' functional API.

    x = nn.Input((1, 28, 28))
    y = nn.ReLU()(nn.BatchNorm2D(16)(nn.Conv2D(1, 16, 3, padding=1)(x, name="conv1")))
    model = nn.Model(x, y)

`nn.Model(inputs, outputs)` keeps the nodes (`npcnn.nn.symbolic`) that lead
from its input to its output. Each node's layer is a child of the model,
named as it was called (`layer(x, name="conv1")`) or by default after its
type ("conv2d_1", "batch_norm2d_1", ...); state-dict keys are then
"conv1.weight", "block1.conv1.weight" for a Model used as a layer.

Execution: the nodes are grouped into chains, maximal runs of nodes each of
which takes the one output of the previous node, used by nothing else; each
chain runs through the fusion planner (`npcnn.nn.fusion`) as a Sequential
does, so batch norm + ReLU + pool and Flatten + Dense fuse inside a graph.
A chain may start with a merge layer (`npcnn.nn.merge`), which gets the list
of its inputs. Backward runs the chains in reverse; a tensor used by several
layers gets the sum of their gradients.

One input and one output (a list of inputs is not supported yet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npcnn.nn.fusion import Planner, Step, backward_steps, forward_steps
from npcnn.nn.module import Layer, check_float
from npcnn.nn.registry import build_layer, layer_spec
from npcnn.nn.symbolic import Input, Node, SymbolicTensor, default_name, node_label
from npcnn.runtime.threads import single_threaded_blas
from npcnn.shapes import batch_shape
from npcnn.text import short_repr


@dataclass(eq=False)
class GraphNode:
    """A node of a built Model: its child `name`, the names of the tensors it takes
    (the input's name or other nodes' names), whether it takes them as a list, and
    its output shape (batch axis None)."""

    name: str
    layer: Layer
    inbound: tuple[str, ...]
    merge: bool
    output_shape: tuple[int | None, ...]


@dataclass(eq=False)
class Chain:
    """Nodes that run one after another, each taking the previous one's output only."""

    nodes: list[GraphNode]
    planner: Planner = field(default_factory=Planner)
    steps: list[Step] | None = None  # the steps of the last forward, for backward

    @property
    def layers(self) -> list[Layer]:
        return [node.layer for node in self.nodes]

    @property
    def output(self) -> str:
        return self.nodes[-1].name


def _graph_nodes(inputs: SymbolicTensor, outputs: SymbolicTensor) -> list[Node]:
    """The nodes between `inputs` and `outputs`, in order of creation.

    Raises:
        ValueError: the output depends on another Input, or not on `inputs`.
    """
    found: dict[int, Node] = {}
    stack, others = [outputs], []
    while stack:
        t = stack.pop()
        if t.node is None:
            if t is not inputs:
                others.append(t)
        elif t.node.index not in found:
            found[t.node.index] = t.node
            stack.extend(t.node.inputs)
    if others:
        used = any(t is inputs for node in found.values() for t in node.inputs)
        cause = (
            f"depends on {others[0].describe()}, which is not the model's input {inputs.describe()}"
            if used
            else f"does not depend on its input {inputs.describe()}: nothing uses it (the "
            f"output depends on {others[0].describe()} instead)"
        )
        raise ValueError(f"Model output {outputs.describe()} {cause}")
    return [found[i] for i in sorted(found)]


#: Attributes a Model sets on itself: a child layer may not take these names.
MODEL_ATTRIBUTES = frozenset(
    ("input_name", "input_shape", "nodes", "output_name", "chains", "released")
)


def _names(nodes: list[Node], input_name: str) -> dict[Node, str]:
    """Each node's child name: the one it was called with, else "<type>_<k>" (k = 1, 2...
    among the nodes of that type without a name). Raises ValueError on a name given twice
    or one of the Model's own attributes (`MODEL_ATTRIBUTES`)."""
    taken = {input_name}
    for node in nodes:
        if node.name in MODEL_ATTRIBUTES:
            raise ValueError(f"cannot name a layer {node.name!r}: the Model uses that name")
        if node.name is not None:
            if node.name in taken:
                raise ValueError(f"two layers of the Model are named {node.name!r}")
            taken.add(node.name)
    names, counts = {}, {}
    for node in nodes:
        name = node.name
        while name is None or (node.name is None and name in taken):
            base = default_name(node.layer)
            counts[base] = counts.get(base, 0) + 1
            name = f"{base}_{counts[base]}"
        taken.add(name)
        names[node] = name
    return names


def _chains(nodes: list[GraphNode], output: str) -> list[Chain]:
    """The nodes grouped into maximal chains (see the module docstring), in an order
    where every chain comes after the chains of its inputs."""
    uses: dict[str, int] = {output: 1}
    for node in nodes:
        for name in node.inbound:
            uses[name] = uses.get(name, 0) + 1
    open_chains: dict[str, Chain] = {}  # by the name of the chain's last node
    chains: list[Chain] = []
    for node in nodes:
        chain = None if node.merge else open_chains.pop(node.inbound[0], None)
        if chain is None:
            chain = Chain([node])
            chains.append(chain)
        else:
            chain.nodes.append(node)
        if uses.get(node.name, 0) == 1 and node.name != output:
            open_chains[node.name] = chain
    return chains


class Model(Layer):
    """A graph of layers from one input to one output (Keras' functional `Model`).

    Args:
        inputs: the `nn.Input(shape)` the graph starts from.
        outputs: the symbolic tensor the last layer returned.
    Raises:
        TypeError: inputs or outputs are not symbolic tensors (a list is not supported).
        ValueError: the output does not depend on the input, depends on another
            Input, the graph has no layers, or two layers have one name.
    """

    def __init__(self, inputs: SymbolicTensor, outputs: SymbolicTensor) -> None:
        super().__init__()
        for what, t in (("inputs", inputs), ("outputs", outputs)):
            if not isinstance(t, SymbolicTensor):
                raise TypeError(
                    f"Model {what} must be a symbolic tensor (one input, one output), "
                    f"got {type(t).__name__}"
                )
        if inputs.node is not None:
            raise ValueError(f"Model inputs must be an nn.Input, got {inputs.describe()}")
        if outputs is inputs:
            raise ValueError("Model has no layers: its output is its input")
        nodes = _graph_nodes(inputs, outputs)
        names = _names(nodes, inputs.name or "input")
        self.input_name = inputs.name or "input"
        self.input_shape = tuple(int(n) for n in inputs.shape[1:])
        self.nodes: list[GraphNode] = []
        self.add_layers((names[node], node.layer) for node in nodes)
        for node in nodes:
            inbound = tuple(
                self.input_name if t.node is None else names[t.node] for t in node.inputs
            )
            assert node.output is not None
            self.nodes.append(
                GraphNode(names[node], node.layer, inbound, node.merge, node.output.shape)
            )
        self.output_name = names[outputs.node]  # type: ignore[index]
        self.chains = _chains(self.nodes, self.output_name)
        # The tensors no later chain takes, dropped after each chain's forward so that
        # their memory serves the next steps (an inference forward keeps nothing else).
        last_use = {name: i for i, c in enumerate(self.chains) for name in c.nodes[0].inbound}
        self.released: list[list[str]] = [[] for _ in self.chains]
        for name, i in last_use.items():
            self.released[i].append(name)

    def plan(self) -> list[Step]:
        """Every chain's steps in the current mode, chain after chain (`summary` marks the
        fused ones)."""
        return [step for chain in self.chains for step in chain.planner.steps(chain.layers)]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """x (N, *input_shape) floats -> the output node's output.

        Raises:
            TypeError: not an array, or not floats. ValueError: x's shape is not
                (N, *input_shape).
        """
        if not isinstance(x, np.ndarray):
            raise TypeError(f"Model takes one numpy array (one input), got {type(x).__name__}")
        check_float(x, "Model")
        if x.shape[1:] != self.input_shape:
            raise ValueError(
                f"Model expects input of shape {batch_shape(self.input_shape)}, got {x.shape}"
            )
        values: dict[str, Any] = {self.input_name: x}
        with single_threaded_blas():
            for chain, released in zip(self.chains, self.released, strict=True):
                first = chain.nodes[0]
                xs = [values[n] for n in first.inbound]
                chain.steps = chain.planner.steps(chain.layers)
                values[chain.output] = forward_steps(
                    chain.steps, xs if first.merge else xs[0], training
                )
                for name in released:
                    del values[name]
        return values[self.output_name]

    def backward(self, dy: np.ndarray, need_input_grad: bool = True) -> np.ndarray | None:
        """dy -> dx; fills every parameter's .grad. A tensor that feeds several layers gets
        the sum of their gradients. need_input_grad=False: None, and no layer fed by
        the input alone computes its input gradient."""
        grads: dict[str, np.ndarray] = {self.output_name: dy}
        with single_threaded_blas():
            for chain in reversed(self.chains):
                first = chain.nodes[0]
                need = need_input_grad or any(n != self.input_name for n in first.inbound)
                steps = (
                    chain.steps if chain.steps is not None else chain.planner.steps(chain.layers)
                )
                dx = backward_steps(steps, grads.pop(chain.output), need)
                if dx is None:
                    continue
                for name, d in zip(first.inbound, dx if first.merge else [dx], strict=True):
                    grads[name] = d if name not in grads else grads[name] + d
        return grads.get(self.input_name) if need_input_grad else None

    def summary(
        self,
        input_shape: tuple[int, ...] | None = None,
        print_fn: Callable[[str], Any] | None = print,
    ) -> list[dict[str, Any]]:
        """Print and return a row per node (name, type, output shape, parameters, the
        layers it is connected to, its fused block), as Keras prints a functional model.
        `input_shape` defaults to the model's and must equal it."""
        from npcnn.nn.summary import summarize_graph

        if input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(
                f"Model takes input of shape {self.input_shape}, not {tuple(input_shape)}"
            )
        return summarize_graph(self, print_fn)

    def config(self) -> dict[str, Any]:
        layers = []
        for node in self.nodes:
            inbound: str | list[str] = list(node.inbound) if node.merge else node.inbound[0]
            layers.append({"name": node.name, **layer_spec(node.layer), "inbound": inbound})
        return {
            "input": {"name": self.input_name, "shape": list(self.input_shape)},
            "layers": layers,
            "output": self.output_name,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Model:
        """The Model `config()` describes: its layers rebuilt (`build_layer`) and called
        again in order on the tensors their "inbound" names.

        Raises:
            ValueError, TypeError: a malformed description, a name used before it is
                made (no cycle can be described), or layers that do not fit.
        """
        extra = sorted(set(config) - {"input", "layers", "output"})
        if extra:
            raise TypeError(f"unexpected configuration {short_repr(extra, 60)}")
        spec = config.get("input")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("shape"), list):
            raise ValueError(f"malformed Model input {short_repr(spec)}")
        x = Input(tuple(spec["shape"]), spec.get("name", "input"))
        tensors = {x.name: x}
        layers = config.get("layers")
        if not isinstance(layers, list):
            raise ValueError(f"'layers' must be a list, not a {type(layers).__name__}")
        for item in layers:
            _add_node(item, tensors)
        out = tensors.get(config.get("output"))  # type: ignore[arg-type]
        if out is None:
            raise ValueError(f"Model output {short_repr(config.get('output'))} is no layer's name")
        return cls(x, out)

    @classmethod
    def state_shapes(cls, config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
        return {}  # a Model's arrays are its children's

    def __repr__(self) -> str:
        inner = "\n".join(
            f"  ({node.name}): {node.layer!r} <- {', '.join(node.inbound)}" for node in self.nodes
        )
        return f"Model(\n{inner}\n)"


def _add_node(item: Any, tensors: dict[str, SymbolicTensor]) -> None:
    """Build one layer of a saved Model and call it on its inbound tensors."""
    if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
        raise ValueError(f"malformed Model layer {short_repr(item)}")
    name, inbound = item["name"], item.get("inbound")
    if not name or "." in name:  # (checked before its arrays are looked for under it)
        raise ValueError(f"a layer's name must be a non-empty string without '.', got {name!r}")
    names = inbound if isinstance(inbound, list) else [inbound]
    missing = [n for n in names if not isinstance(n, str) or n not in tensors]
    if missing or not names:
        raise ValueError(
            f"Model layer {name!r} takes {short_repr(missing)}, made by no earlier layer"
        )
    if name in tensors:
        raise ValueError(f"two layers of the Model are named {name!r}")
    layer = build_layer({"type": item.get("type"), "config": item.get("config", {})}, name)
    args = [tensors[n] for n in names]
    tensors[name] = layer(args if isinstance(inbound, list) else args[0], name=name)


__all__ = ["Chain", "GraphNode", "Input", "Model", "node_label"]
