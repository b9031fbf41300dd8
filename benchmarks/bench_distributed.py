"""Data-parallel training on this machine, and a model of its scaling to many nodes.

Three parts:

- ``epoch``: images per second of one Fashion-MNIST training epoch of a
  preset's network (default ``notebook``, SGD with momentum, global batch
  128, per-process batch-norm statistics unless ``--sync-bn``), three ways,
  each in its own processes, in alternating order over ``--repeats`` rounds:
  one process with 2 threads (the machine's default), one process with 1
  thread, and ``mpiexec -n 2`` with 1 thread per rank. Times are the epoch's
  optimisation steps (the Trainer's ``images_per_second``), not data loading.
- ``allreduce``: for each preset, on ``mpiexec -n 2`` with one thread per
  rank, the share of a training step (global batch 128, 12 steps, medians
  of the last 11) that ``DataParallel.reduce_gradients`` takes after the
  backward pass: waiting for the gradients' sums that the overlap with the
  backward pass did not hide, and for the other rank.
- ``model``: for each preset, the time of a training step at global batch
  128 on K ranks of one core each, T(K) = c * 128 / K + a(K), where c is the
  measured compute time per image on one thread (forward, backward and the
  optimiser step, here) and a(K) the ring all-reduce of the float32
  gradients, 2 (K - 1) / K * bytes / bandwidth + 2 (K - 1) * latency, plus one
  latency per step for the step's totals (and two per batch norm with
  sync-BN); links of 1 and 10 Gbit/s, 50 and 20 microseconds of latency.
  It says at what K each preset stops scaling: where the speed-up T(1) / T(K)
  stops growing, and where the efficiency falls below 50 %.

    python benchmarks/bench_distributed.py --part epoch --repeats 3
    python benchmarks/bench_distributed.py --part allreduce
    python benchmarks/bench_distributed.py --part model

Results: ``benchmarks/results/distributed-<part>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from npcnn.training.callbacks import Callback
from processes import cpu_model

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
MARKER = "BENCH_DISTRIBUTED_RESULT "
BATCH = 128
LINKS = {"1 Gbit/s": (1e9 / 8, 50e-6), "10 Gbit/s": (10e9 / 8, 20e-6)}


# --- one epoch, in a worker process (or rank) ---------------------------------------------
def worker(args: argparse.Namespace) -> None:
    import npcnn
    from npcnn import nn, optim
    from npcnn.data import BatchIterator, load_dataset
    from npcnn.distributed import DataParallel, init_world
    from npcnn.models import get_preset
    from npcnn.training import Trainer

    world = init_world(distributed=args.distributed)
    npcnn.set_num_threads(args.threads)
    data = load_dataset("fashion-mnist", download=False)
    images, labels = data.train_images[: args.limit], data.train_labels[: args.limit]
    model = get_preset(args.preset).model(seed=0)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    parallel = DataParallel(world, sync_bn=args.sync_bn) if args.distributed else None
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, data_parallel=parallel)
    history = trainer.fit(BatchIterator(images, labels, BATCH, rng=0), epochs=1)
    if world.is_root:
        epoch = history.epochs[0]
        result = {"images_per_second": epoch["images_per_second"], "loss": epoch["loss"]}
        print(MARKER + json.dumps(result), flush=True)


def run_worker(way: str, args: argparse.Namespace) -> dict[str, Any]:
    threads = {"1 process, 2 threads": 2}.get(way, 1)
    argv = [
        sys.executable,
        __file__,
        "--worker",
        "--preset",
        args.preset,
        "--threads",
        str(threads),
    ]
    argv += ["--limit", str(args.limit)] + (["--sync-bn"] if args.sync_bn else [])
    if way.startswith("2 ranks"):
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
        argv = [mpiexec, "-n", "2", *argv, "--distributed"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{way} failed: {done.stderr[-2000:]}")
    return json.loads(lines[-1][len(MARKER) :])


def part_epoch(args: argparse.Namespace) -> dict[str, Any]:
    ways = ["1 process, 2 threads", "1 process, 1 thread", "2 ranks, 1 thread each"]
    samples: dict[str, list[dict[str, Any]]] = {w: [] for w in ways}
    for round_ in range(args.repeats):
        for way in ways if round_ % 2 == 0 else ways[::-1]:
            samples[way].append(run_worker(way, args))
            print(f"round {round_ + 1}: {way}: {samples[way][-1]['images_per_second']:,.0f} img/s")
    medians = {w: statistics.median(s["images_per_second"] for s in samples[w]) for w in ways}
    base = medians["1 process, 2 threads"]
    return {
        "preset": args.preset,
        "sync_bn": args.sync_bn,
        "batch": BATCH,
        "examples": args.limit,
        "repeats": args.repeats,
        "images_per_second_median": medians,
        "relative_to_1_process_2_threads": {w: medians[w] / base for w in ways},
        "samples": samples,
    }


class StepClock(Callback):
    """Each step's seconds (from the previous step's end)."""

    def __init__(self) -> None:
        self.steps: list[float] = []
        self._last = 0.0

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._last = time.perf_counter()

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        now = time.perf_counter()
        self.steps.append(now - self._last)
        self._last = now


# --- the all-reduce's share of a step, on 2 ranks ---------------------------------------------
def allreduce_worker(args: argparse.Namespace) -> None:
    import npcnn
    from npcnn import nn, optim
    from npcnn.data import BatchIterator
    from npcnn.distributed import DataParallel, init_world
    from npcnn.models import get_preset
    from npcnn.training import Trainer

    world = init_world(distributed=True)
    npcnn.set_num_threads(1)
    model = get_preset(args.preset).model(seed=0)
    parallel = DataParallel(world)
    spent: list[float] = []
    reduce = parallel.reduce_gradients

    def timed_reduce() -> None:
        start = time.perf_counter()
        reduce()
        spent.append(time.perf_counter() - start)

    parallel.reduce_gradients = timed_reduce  # type: ignore[method-assign]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH * 12, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, len(images))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    clock = StepClock()
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, data_parallel=parallel, callbacks=[clock])
    trainer.fit(BatchIterator(images, labels, BATCH, rng=0), epochs=1)
    if world.is_root:
        step, reduce_time = statistics.median(clock.steps[1:]), statistics.median(spent[1:])
        print(
            MARKER
            + json.dumps(
                {
                    "allreduce_seconds": reduce_time,
                    "step_seconds": step,
                    "share": reduce_time / step,
                }
            )
        )


def part_allreduce(args: argparse.Namespace) -> dict[str, Any]:
    from npcnn.models import PRESETS

    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    presets = {}
    for name in PRESETS:
        argv = [mpiexec, "-n", "2", sys.executable, __file__, "--allreduce-worker"]
        start = time.perf_counter()
        done = subprocess.run([*argv, "--preset", name], capture_output=True, text=True)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith(MARKER)]
        if done.returncode != 0 or not lines:
            raise RuntimeError(f"{name} failed: {done.stderr[-2000:]}")
        result = json.loads(lines[-1][len(MARKER) :])
        presets[name] = {**result, "job_seconds": time.perf_counter() - start}
        print(
            f"{name}: all-reduce {result['allreduce_seconds'] * 1e3:.2f} ms of a "
            f"{result['step_seconds'] * 1e3:.1f} ms step ({100 * result['share']:.1f}%)"
        )
    return {"batch": BATCH, "ranks": 2, "threads_per_rank": 1, "presets": presets}


# --- the scaling model --------------------------------------------------------------------
def compute_per_image(preset: str, steps: int = 6) -> tuple[float, int, int]:
    """(seconds per image of a training step on one thread, parameters, batch norms)."""
    import npcnn
    from npcnn import nn, optim
    from npcnn.models import get_preset

    npcnn.set_num_threads(1)
    model = get_preset(preset).model(seed=0)
    opt, loss = optim.SGD(model.parameters(), lr=0.01, momentum=0.9), nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x, y = rng.random((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        opt.zero_grad()
        loss(model.forward(x, training=True), y)
        model.backward(loss.backward(), need_input_grad=False)
        opt.step()
        times.append(time.perf_counter() - start)
    params = sum(p.data.size for p in model.parameters())
    norms = sum(isinstance(m, nn.BatchNorm1D | nn.BatchNorm2D) for _, m in model.named_layers())
    return statistics.median(times[1:]) / BATCH, params, norms


def step_time(
    k: int, per_image: float, params: int, norms: int, link: tuple[float, float]
) -> float:
    bandwidth, latency = link
    allreduce = 2 * (k - 1) / k * 4 * params / bandwidth + 2 * (k - 1) * latency if k > 1 else 0
    collectives = (1 + 2 * norms) * latency if k > 1 else 0  # totals, sync-BN (upper bound)
    return per_image * BATCH / k + allreduce + collectives


def part_model(args: argparse.Namespace) -> dict[str, Any]:
    from npcnn.models import PRESETS

    presets = {}
    for name in PRESETS:
        per_image, params, norms = compute_per_image(name)
        links = {}
        for link_name, link in LINKS.items():
            ks = [1, 2, 4, 8, 16, 32, 64, 128]
            speedups = {
                k: step_time(1, per_image, params, norms, link)
                / step_time(k, per_image, params, norms, link)
                for k in ks
            }
            best = max(ks, key=lambda k: speedups[k])
            half = max((k for k in ks if speedups[k] / k >= 0.5), default=1)
            links[link_name] = {
                "speedup": speedups,
                "fastest_at": best,
                "efficiency_over_half_up_to": half,
            }
        presets[name] = {
            "seconds_per_image_one_thread": per_image,
            "parameters": params,
            "batch_norms": norms,
            "links": links,
        }
        print(
            f"{name}: {per_image * 1e3:.3f} ms/image, {params:,} parameters, "
            + ", ".join(
                f"{n}: fastest at K={v['fastest_at']}, "
                f">= 50% efficient up to K={v['efficiency_over_half_up_to']}"
                for n, v in links.items()
            )
        )
    return {
        "batch": BATCH,
        "links": {
            k: {"bytes_per_second": b, "latency_seconds": lat} for k, (b, lat) in LINKS.items()
        },
        "presets": presets,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["epoch", "allreduce", "model"], default="epoch")
    p.add_argument("--preset", default="notebook")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=60_000, help="training images of the epoch")
    p.add_argument("--sync-bn", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--allreduce-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker or args.allreduce_worker:
        (worker if args.worker else allreduce_worker)(args)
        return
    parts = {"epoch": part_epoch, "allreduce": part_allreduce, "model": part_model}
    result = parts[args.part](args)
    result["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "python": platform.python_version(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"distributed-{args.part}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
