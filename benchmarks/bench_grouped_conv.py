"""Grouped and depthwise convolutions: npcnn's `Conv2D(groups=)` layer against PyTorch.

The forward pass (training mode, keeping what backward needs) and the
backward pass (input and weight gradients) of one layer at batch 128, on
the shapes of a MobileNet-style network for 28x28 images, each framework
in a fresh process with the same threads, alternating who goes first,
round after round:

    python benchmarks/bench_grouped_conv.py --repeats 3 --threads 2

Both take NCHW float32 arrays and the same weights; the first round also
checks that their outputs and gradients agree. Each timing is the median of
calls made for at least `--seconds` seconds after warm-up calls. Results go
to ``benchmarks/results/grouped-conv-vs-torch.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from processes import print_result, run_worker, side_by_side_parser, write_json

HERE = Path(__file__).resolve().parent
BATCH = 128
#: name: (in channels, out channels, groups, size, stride)
SHAPES = {
    "depthwise 32ch 28x28": (32, 32, 32, 28, 1),
    "depthwise 64ch 14x14": (64, 64, 64, 14, 1),
    "depthwise 64ch 14x14 stride 2": (64, 64, 64, 14, 2),
    "depthwise 128ch 7x7": (128, 128, 128, 7, 1),
    "depthwise x2 32->64ch 14x14": (32, 64, 32, 14, 1),
    "grouped g=4 64->64ch 14x14": (64, 64, 4, 14, 1),
}
FRAMEWORKS = ("npcnn", "torch")


def arrays(shape: tuple[int, int, int, int, int]) -> dict[str, np.ndarray]:
    """The input, weight and output gradient of one shape (seeded)."""
    cin, cout, groups, size, stride = shape
    rng = np.random.default_rng(cin * 1000 + cout + groups + size + stride)
    out = (size + 2 - 3) // stride + 1
    return {
        "x": rng.standard_normal((BATCH, cin, size, size), dtype=np.float32),
        "weight": rng.standard_normal((cout, cin // groups, 3, 3), dtype=np.float32) * 0.3,
        "dy": rng.standard_normal((BATCH, cout, out, out), dtype=np.float32),
    }


def median_ms(run, seconds: float) -> float:
    """Median milliseconds of `run()`, after warm-up, over calls for at least `seconds`."""
    for _ in range(3):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < 5:
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def npcnn_layer(shape, data):
    """(forward, backward, results) for npcnn's Conv2D layer."""
    import npcnn  # noqa: F401  (threads are set by the caller)
    from npcnn import nn

    cin, cout, groups, _, stride = shape
    layer = nn.Conv2D(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False)
    layer.weight.data[...] = data["weight"]

    def forward():
        return layer.forward(data["x"], training=True)

    def backward():
        layer.weight.grad[...] = 0
        return layer.backward(data["dy"])

    y = forward()
    dx = backward()
    return forward, backward, (y, dx, layer.weight.grad.copy())


def torch_layer(shape, data):
    """(forward, backward, results) for PyTorch's conv2d with autograd."""
    import torch

    _, _, groups, _, stride = shape
    x = torch.from_numpy(data["x"]).requires_grad_()
    w = torch.from_numpy(data["weight"].copy()).requires_grad_()
    dy = torch.from_numpy(data["dy"])
    state: dict[str, Any] = {}

    def forward():
        state["y"] = torch.nn.functional.conv2d(x, w, None, stride, 1, 1, groups)
        return state["y"]

    def backward():
        x.grad, w.grad = None, None
        state["y"].backward(dy, retain_graph=True)

    y = forward().detach().numpy().copy()
    backward()
    return forward, backward, (y, x.grad.numpy().copy(), w.grad.numpy().copy())


def worker(framework: str, threads: int, seconds: float) -> dict[str, Any]:
    if framework == "npcnn":
        import npcnn

        npcnn.set_num_threads(threads)
        build = npcnn_layer
    else:
        import torch

        torch.set_num_threads(threads)
        build = torch_layer
    timings, results = {}, {}
    for name, shape in SHAPES.items():
        forward, backward, outputs = build(shape, arrays(shape))
        timings[name] = {
            "forward_ms": median_ms(forward, seconds),
            "backward_ms": median_ms(backward, seconds),
        }
        results[name] = [float(np.abs(a).sum()) for a in outputs]
        results[name + " sample"] = [np.asarray(a).ravel()[:64].tolist() for a in outputs]
    return {"framework": framework, "timings": timings, "results": results}


def spawn(framework: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", framework]
    cmd += ["--threads", str(args.threads), "--seconds", str(args.seconds)]
    return run_worker(cmd, framework)


def agreement(first: dict[str, dict[str, Any]]) -> float:
    """The largest relative difference between the two frameworks' outputs and gradients."""
    worst = 0.0
    for name in SHAPES:
        ours, theirs = first["npcnn"]["results"], first["torch"]["results"]
        for a, b in zip(ours[name], theirs[name], strict=True):
            worst = max(worst, abs(a - b) / max(abs(b), 1e-12))
        for a, b in zip(ours[name + " sample"], theirs[name + " sample"], strict=True):
            scale = max(1.0, float(np.max(np.abs(b))))
            worst = max(worst, float(np.max(np.abs(np.subtract(a, b)))) / scale)
    return worst


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    table = {}
    for name in SHAPES:
        row = {}
        for f in FRAMEWORKS:
            for part in ("forward_ms", "backward_ms"):
                values = [s["timings"][name][part] for s in samples if s["framework"] == f]
                row[f"{f}_{part}"] = statistics.median(values)
        both = {f: row[f"{f}_forward_ms"] + row[f"{f}_backward_ms"] for f in FRAMEWORKS}
        row["npcnn_over_torch"] = both["npcnn"] / both["torch"]
        table[name] = row
    return table


def main(argv: list[str] | None = None) -> int:
    json_path = HERE / "results" / "grouped-conv-vs-torch.json"
    p = side_by_side_parser(__doc__.split("\n\n")[0], FRAMEWORKS, 1.0, json_path)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.threads, args.seconds)
        print_result(result)
        return 0
    samples = []
    for round_ in range(args.repeats):
        for framework in FRAMEWORKS if round_ % 2 == 0 else FRAMEWORKS[::-1]:
            samples.append({"round": round_ + 1, **spawn(framework, args)})
            print(f"round {round_ + 1}: {framework} done", flush=True)
    first = {s["framework"]: s for s in samples[:2]}
    worst = agreement(first)
    table = summarise(samples)
    print(f"{'layer (batch 128)':<32}{'npcnn fwd+bwd':>16}{'torch fwd+bwd':>16}{'ratio':>8}")
    for name, row in table.items():
        ours = f"{row['npcnn_forward_ms']:.1f}+{row['npcnn_backward_ms']:.1f} ms"
        theirs = f"{row['torch_forward_ms']:.1f}+{row['torch_backward_ms']:.1f} ms"
        print(f"{name:<32}{ours:>16}{theirs:>16}{row['npcnn_over_torch']:>8.2f}")
    print(f"largest relative difference between the frameworks' results: {worst:.1e}")
    for s in samples:
        del s["results"]
    result = {
        "command": "python benchmarks/bench_grouped_conv.py " + " ".join(argv or sys.argv[1:]),
        "settings": {"threads": args.threads, "repeats": args.repeats, "batch": BATCH},
        "environment": {"numpy": np.__version__, "load_average_after": os.getloadavg()},
        "samples": samples,
        "largest_relative_difference": worst,
        "table": table,
    }
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
