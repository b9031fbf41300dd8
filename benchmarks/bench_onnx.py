"""Inference speed of the `strong` preset: npcnn against ONNX Runtime on the file npcnn exports.

Images per second at batch 1 and batch 128, each framework in a fresh
process with the same number of threads (npcnn.set_num_threads, ONNX
Runtime's intra-op threads), alternating who goes first, round after round:

    python benchmarks/bench_onnx.py --repeats 3 --threads 2

Both run the same weights (the preset's seed-0 initialisation with
randomised batch-norm statistics, exported by `npcnn.onnx.export`); the
first round also checks that their logits agree to 1e-5. Each measurement
runs untimed warm-up calls, then timed calls for at least `--seconds`
seconds. Results go to ``benchmarks/results/onnx-inference.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from processes import print_result, run_worker, side_by_side_parser, write_json

HERE = Path(__file__).resolve().parent
BATCHES = (1, 128)


def build_model():
    from npcnn import nn
    from npcnn.models import get_preset

    model = get_preset("strong").model(seed=0)
    rng = np.random.default_rng(0)
    for _, layer in model.named_layers():
        if isinstance(layer, nn.BatchNorm1D | nn.BatchNorm2D):
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.running_var.shape)
    return model


def images(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).random((batch, 1, 28, 28), dtype=np.float32)


def rate(run, batch: int, seconds: float) -> float:
    """Images per second of `run(x)` on a batch of `batch`, after warm-up."""
    x = images(batch)
    for _ in range(10 if batch > 1 else 100):
        run(x)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(x)
        calls += 1
    return calls * batch / (time.perf_counter() - start)


def worker(framework: str, path: str, threads: int, seconds: float) -> dict[str, Any]:
    if framework == "npcnn":
        import npcnn

        npcnn.set_num_threads(threads)
        model = build_model()

        def run(x):
            return model.forward(x)
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

        def run(x):
            return session.run(None, {"input": x})[0]

    logits = run(images(4))
    return {
        "framework": framework,
        "images_per_second": {str(b): rate(run, b, seconds) for b in BATCHES},
        "logits": logits.tolist(),
    }


def spawn(framework: str, path: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", framework, "--model", path]
    cmd += ["--threads", str(args.threads), "--seconds", str(args.seconds)]
    return run_worker(cmd, framework)


def measure(args: argparse.Namespace, path: str) -> list[dict[str, Any]]:
    samples = []
    for round_ in range(args.repeats):
        order = ("npcnn", "onnxruntime") if round_ % 2 == 0 else ("onnxruntime", "npcnn")
        for framework in order:
            sample = {"round": round_ + 1, **spawn(framework, path, args)}
            rates = sample["images_per_second"]
            print(
                f"round {round_ + 1} {framework:>11}: batch 1 {rates['1']:>8.0f} img/s, "
                f"batch 128 {rates['128']:>8.0f} img/s",
                flush=True,
            )
            samples.append(sample)
    return samples


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    by = {
        f: {
            b: [s["images_per_second"][str(b)] for s in samples if s["framework"] == f]
            for b in BATCHES
        }
        for f in ("npcnn", "onnxruntime")
    }
    medians = {f: {str(b): statistics.median(v) for b, v in d.items()} for f, d in by.items()}
    ratios = {str(b): medians["npcnn"][str(b)] / medians["onnxruntime"][str(b)] for b in BATCHES}
    return {"median_images_per_second": medians, "npcnn_over_onnxruntime": ratios}


def main(argv: list[str] | None = None) -> int:
    p = side_by_side_parser(
        __doc__.split("\n\n")[0],
        ("npcnn", "onnxruntime"),
        seconds=3.0,
        json_path=HERE / "results" / "onnx-inference.json",
    )
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        result = worker(args.worker, args.model, args.threads, args.seconds)
        print_result(result)
        return 0
    import npcnn
    import npcnn.onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = str(npcnn.onnx.export(build_model(), Path(tmp) / "strong.onnx"))
        samples = measure(args, path)
    first = {s["framework"]: np.array(s["logits"]) for s in samples[:2]}
    agree = float(np.abs(first["npcnn"] - first["onnxruntime"]).max())
    summary = summarise(samples)
    medians, ratios = summary["median_images_per_second"], summary["npcnn_over_onnxruntime"]
    for b in map(str, BATCHES):
        print(
            f"batch {b:>3}: npcnn {medians['npcnn'][b]:>8.0f} img/s, ONNX Runtime "
            f"{medians['onnxruntime'][b]:>8.0f} img/s, npcnn / ONNX Runtime {ratios[b]:.2f}"
        )
    print(f"largest logit difference: {agree:.2e}")
    for s in samples:
        del s["logits"]
    result = {
        "settings": {"preset": "strong", "threads": args.threads, "repeats": args.repeats},
        "npcnn": npcnn.__version__,
        "load_average": os.getloadavg(),
        "samples": samples,
        "largest_logit_difference": agree,
        **summary,
    }
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
