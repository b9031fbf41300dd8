"""Speed and memory of npcnn against PyTorch (CPU) and the notebook's loop implementation.

Measured, all on the notebook's network (see `naive_notebook.py`), for npcnn
(the network as a `Sequential`), npcnn-graph (the same layers and weights
written as an `nn.Model`, to check that graphs keep Sequential's fusions),
PyTorch and the loops:

- a "notebook iteration": one training step (forward, backward, SGD with
  lr 0.5 and momentum 0.9) on 1,000 28x28 images plus an inference forward
  on 1,000 other images;
- training and inference throughput (images per second) at batch 128;
- the peak resident memory each measurement adds (ru_maxrss).

Every measurement runs in a fresh subprocess of this script (`--worker`), so
frameworks do not share thread pools or allocator state and each has its own
peak-RSS counter. npcnn, npcnn-graph and PyTorch are measured in alternation, round after
round, and the median over rounds is reported (each worker warms up first).
PyTorch gets the same number of threads as npcnn (`torch.set_num_threads`).
The data are generated (random digit-like images), nothing is read from disk.

    python benchmarks/bench_notebook.py [--repeats 5] [--threads N] [--skip-naive]
                                        [--skip-torch] [--skip-graph] [--json results.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from processes import cpu_model

HERE = Path(__file__).resolve().parent
N_NOTEBOOK = 1000  # images per notebook iteration (training and test each)
BATCH = 128
BATCHES_PER_PASS = 8  # throughput is timed over this many batches of BATCH images
BATCH_WARMUP_PASSES, BATCH_TIMED_PASSES = 2, 4  # per worker (times --inner)
LR, MOMENTUM = 0.5, 0.9
RESULT_MARKER = "BENCH_RESULT "
ENV_VARS = (
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "OPENBLAS_NUM_THREADS",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
)
TARGET_VS_TORCH = 0.7  # npcnn's notebook iteration at most this fraction of PyTorch's
TARGET_VS_NAIVE = 20.0  # npcnn at least this many times faster than the loops
TARGET_GRAPH = 1.03  # npcnn-graph's training time at batch 128 at most this x Sequential's


def make_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Digit-like random images: x (n, 1, 28, 28) float32 in [0, 1], y (n,) int64 in 0..9.

    Like MNIST, most pixels are background zeros; the rest are uint8 grey levels / 255.
    """
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(n, 1, 28, 28), dtype=np.uint8)
    pixels[rng.random(pixels.shape) < 0.8] = 0
    return (pixels / np.float32(255)).astype(np.float32), rng.integers(0, 10, size=n)


# --- one runner per framework: train_step(x, y) -> loss, predict(x) -> logits ----------


class NpcnnRunner:
    """The notebook's network built from npcnn.nn layers, trained with npcnn.optim.SGD."""

    container = "Sequential"

    def __init__(self, threads: int, seed: int, dtype: type = np.float32) -> None:
        import npcnn
        from npcnn import nn, optim

        set_threads = getattr(npcnn, "set_num_threads", None)
        if set_threads is not None:
            set_threads(threads)
        rng = np.random.default_rng(seed)
        build = build_npcnn_graph if self.container == "Model" else build_npcnn_model
        self.model = build(rng, dtype)
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        skip = "need_input_grad" in inspect.signature(self.model.backward).parameters
        self.backward_kwargs = {"need_input_grad": False} if skip else {}
        self.info = {
            "npcnn_version": getattr(npcnn, "__version__", "?"),
            "container": self.container,
            "set_num_threads": set_threads is not None,
            "backward": "need_input_grad=False" if skip else "default (input gradient computed)",
        }

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        logits = self.model.forward(x, training=True)
        loss = self.loss_fn.forward(logits, y)
        self.opt.zero_grad()
        self.model.backward(self.loss_fn.backward(), **self.backward_kwargs)
        self.opt.step()
        return float(loss)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.forward(x, training=False)


class NpcnnGraphRunner(NpcnnRunner):
    """The same network, layers and weights as `NpcnnRunner`, written as an `nn.Model`."""

    container = "Model"


def notebook_layers(rng: np.random.Generator, dtype: type = np.float32) -> list:
    """The notebook's twelve npcnn layers, weights drawn from `rng` in layer order."""
    from npcnn import nn

    return [
        nn.Conv2D(1, 16, 3, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2D(16, dtype=dtype),
        nn.ReLU(),
        nn.MaxPool2D(2),
        nn.Conv2D(16, 18, 4, padding=1, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm2D(18, dtype=dtype),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dense(3042, 20, bias=False, rng=rng, dtype=dtype),
        nn.BatchNorm1D(20, dtype=dtype),
        nn.ReLU(),
        nn.Dense(20, 10, rng=rng, dtype=dtype),
    ]


def build_npcnn_model(rng: np.random.Generator, dtype: type = np.float32):
    """The notebook's network as an npcnn `Sequential` (layer indices as in naive_notebook)."""
    from npcnn import nn

    return nn.Sequential(notebook_layers(rng, dtype))


def build_npcnn_graph(rng: np.random.Generator, dtype: type = np.float32):
    """The notebook's network as an `nn.Model`: input -> layer "0" -> ... -> layer "11".

    Naming the layers by their index gives the Sequential's state-dict keys, and
    the same `rng` gives the same weights, so both contenders train the same net.
    """
    from npcnn import nn

    x = nn.Input((1, 28, 28))
    y = x
    for i, layer in enumerate(notebook_layers(rng, dtype)):
        y = layer(y, name=str(i))
    return nn.Model(x, y)


def build_torch_model():
    """The notebook's network as a torch `nn.Sequential` (same indices and parameter names)."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 18, 4, padding=1, bias=False),
        nn.BatchNorm2d(18),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3042, 20, bias=False),
        nn.BatchNorm1d(20),
        nn.ReLU(),
        nn.Linear(20, 10),
    )


class TorchRunner:
    """The same network in PyTorch on the CPU, with `threads` intra-op threads."""

    def __init__(self, threads: int, seed: int, dtype: type = np.float32) -> None:
        import torch

        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.torch = torch
        self.model = build_torch_model()
        if dtype == np.float64:
            self.model.double()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR, momentum=MOMENTUM)
        self.info = {"torch_version": torch.__version__, "torch_threads": torch.get_num_threads()}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        torch = self.torch
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(
            self.model(torch.from_numpy(x)), torch.from_numpy(y)
        )
        loss.backward()
        self.opt.step()
        return loss.item()

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.model.eval()
        with self.torch.inference_mode():
            return self.model(self.torch.from_numpy(x)).numpy()


class NaiveRunner:
    """The loop implementation of `naive_notebook.py` (float32 like the others)."""

    def __init__(self, threads: int, seed: int, dtype: type = np.float32) -> None:
        from naive_notebook import NaiveNotebookNet, init_state

        state = init_state(np.random.default_rng(seed), dtype)
        self.net = NaiveNotebookNet(state, LR, MOMENTUM)
        self.info = {}

    def train_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return self.net.train_step(x, y)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.net.predict(x)


RUNNERS = {
    "npcnn": NpcnnRunner,
    "npcnn-graph": NpcnnGraphRunner,
    "torch": TorchRunner,
    "naive": NaiveRunner,
}
FRAMEWORK_MODULES = {
    "npcnn": "npcnn",
    "npcnn-graph": "npcnn",
    "torch": "torch",
    "naive": "naive_notebook",
}


# --- the worker: one framework, one task, in its own process ----------------------------


def max_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports KiB)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024 if sys.platform != "darwin" else rss / 2**20


def time_notebook(runner, warmup: int, timed: int, dtype: type) -> tuple[list[float], list[float]]:
    """Seconds of the training step on 1,000 images and of inference on 1,000 others."""
    x_train, y_train = make_data(N_NOTEBOOK, seed=1)
    x_test, _ = make_data(N_NOTEBOOK, seed=2)
    x_train, x_test = x_train.astype(dtype), x_test.astype(dtype)
    train_s, infer_s = [], []
    for rep in range(warmup + timed):
        t0 = time.perf_counter()
        runner.train_step(x_train, y_train)
        t1 = time.perf_counter()
        runner.predict(x_test)
        t2 = time.perf_counter()
        if rep >= warmup:
            train_s.append(t1 - t0)
            infer_s.append(t2 - t1)
    return train_s, infer_s


def time_batches(runner, warmup: int, timed: int, dtype: type) -> tuple[list[float], list[float]]:
    """Seconds per pass of BATCHES_PER_PASS batches of BATCH images: `timed` training
    passes in a row after `warmup` untimed ones, then likewise for inference.

    Training steps follow each other as in an epoch: interleaving inference
    would change what each framework's allocator has to do between steps.
    """
    x, y = make_data(BATCH * BATCHES_PER_PASS, seed=3)
    x = x.astype(dtype)
    batches = [slice(i * BATCH, (i + 1) * BATCH) for i in range(BATCHES_PER_PASS)]

    def passes(step) -> list[float]:
        seconds = []
        for rep in range(warmup + timed):
            t0 = time.perf_counter()
            for b in batches:
                step(b)
            if rep >= warmup:
                seconds.append(time.perf_counter() - t0)
        return seconds

    train_s = passes(lambda b: runner.train_step(x[b], y[b]))
    infer_s = passes(lambda b: runner.predict(x[b]))
    return train_s, infer_s


def run_worker(
    framework: str, task: str, threads: int, warmup: int, timed: int, dtype: str = "float32"
) -> dict:
    """Time `task` for `framework`; returns samples in seconds and the peak RSS increase.

    The baseline is the peak RSS after imports, before the model and data exist.
    """
    # Import first so the baseline includes the library itself, not just the interpreter.
    sys.path.insert(0, str(HERE))
    importlib.import_module(FRAMEWORK_MODULES[framework])
    baseline = max_rss_mb()
    runner = RUNNERS[framework](threads, seed=0, dtype=np.dtype(dtype).type)
    timer = time_notebook if task == "notebook" else time_batches
    train_s, infer_s = timer(runner, warmup, timed, np.dtype(dtype).type)
    return {
        "framework": framework,
        "task": task,
        "train_s": train_s,
        "infer_s": infer_s,
        "peak_rss_increase_mb": max_rss_mb() - baseline,
        "peak_rss_mb": max_rss_mb(),
        "info": {**runner.info, "dtype": dtype},
    }


def spawn_worker(
    framework: str, task: str, threads: int, warmup: int, timed: int, dtype: str = "float32"
) -> dict:
    """Run `run_worker` in a fresh interpreter and return its result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework, "--task", task]
    cmd += ["--threads", str(threads), "--warmup", str(warmup), "--timed", str(timed)]
    cmd += ["--dtype", dtype]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"{framework}/{task} worker failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1][len(RESULT_MARKER) :])


# --- the driver ----------------------------------------------------------------------


def environment_info(threads: int) -> dict[str, Any]:
    """Versions, BLAS and the thread-related environment, without importing threadpoolctl."""
    blas: dict[str, Any] = {}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (TypeError, KeyError):  # numpy < 1.25 has no mode="dicts"
        pass
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "numpy": np.__version__,
        "blas": f"{blas.get('name', '?')} {blas.get('version', '')}".strip(),
        "blas_config": blas.get("openblas configuration", ""),
        "env": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
        "load_average_before": os.getloadavg(),
    }


def summarise(results: list[dict]) -> dict[str, dict[str, float]]:
    """Medians and minima per framework over all timed samples."""
    summary: dict[str, dict[str, float]] = {}
    for fw in RUNNERS:
        nb = [r for r in results if r["framework"] == fw and r["task"] == "notebook"]
        tp = [r for r in results if r["framework"] == fw and r["task"] == "batch128"]
        if not nb:
            continue
        iters = [a + b for r in nb for a, b in zip(r["train_s"], r["infer_s"], strict=True)]
        s = {
            "iter_median_s": statistics.median(iters),
            "iter_min_s": min(iters),
            "iter_train_median_s": statistics.median([a for r in nb for a in r["train_s"]]),
            "iter_infer_median_s": statistics.median([a for r in nb for a in r["infer_s"]]),
            "iter_samples": len(iters),
            "peak_rss_increase_mb": statistics.median([r["peak_rss_increase_mb"] for r in nb]),
        }
        if tp:
            n_img = BATCH * BATCHES_PER_PASS
            s["train_img_s_128"] = statistics.median([n_img / t for r in tp for t in r["train_s"]])
            s["infer_img_s_128"] = statistics.median([n_img / t for r in tp for t in r["infer_s"]])
            s["train_img_s_128_max"] = max(n_img / t for r in tp for t in r["train_s"])
            s["infer_img_s_128_max"] = max(n_img / t for r in tp for t in r["infer_s"])
            s["peak_rss_increase_128_mb"] = statistics.median(
                [r["peak_rss_increase_mb"] for r in tp]
            )
        summary[fw] = s
    return summary


def check_targets(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, Any]]:
    """Whether npcnn meets its speed targets (those whose contenders ran), judged on medians.

    The graph target compares training time at batch 128, i.e. the inverse ratio
    of throughputs: Sequential's img/s over npcnn-graph's, at most TARGET_GRAPH.

    `value` is the ratio of medians; `value_best` the same ratio of the best
    samples (minimum time, maximum throughput), less sensitive to other load.
    """
    targets: dict[str, dict[str, Any]] = {}
    npc, tor, nai = summary.get("npcnn"), summary.get("torch"), summary.get("naive")
    if npc and tor:
        ratio = npc["iter_median_s"] / tor["iter_median_s"]
        targets["iteration <= 0.7x torch"] = {
            "value": ratio,
            "value_best": npc["iter_min_s"] / tor["iter_min_s"],
            "ok": ratio <= TARGET_VS_TORCH,
        }
        ratio = npc["train_img_s_128"] / tor["train_img_s_128"]
        targets["train img/s @128 >= torch"] = {
            "value": ratio,
            "value_best": npc["train_img_s_128_max"] / tor["train_img_s_128_max"],
            "ok": ratio >= 1.0,
        }
    if npc and nai:
        ratio = nai["iter_median_s"] / npc["iter_median_s"]
        targets[">= 20x faster than naive"] = {
            "value": ratio,
            "value_best": nai["iter_min_s"] / npc["iter_min_s"],
            "ok": ratio >= TARGET_VS_NAIVE,
        }
    graph = summary.get("npcnn-graph")
    if npc and graph and "train_img_s_128" in npc and "train_img_s_128" in graph:
        ratio = npc["train_img_s_128"] / graph["train_img_s_128"]
        targets["graph / Sequential training time <= 1.03"] = {
            "value": ratio,
            "value_best": npc["train_img_s_128_max"] / graph["train_img_s_128_max"],
            "ok": ratio <= TARGET_GRAPH,
        }
    return targets


def print_report(env: dict, infos: dict, summary: dict, targets: dict) -> None:
    print("\nEnvironment")
    print(f"  python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs")
    print(f"  numpy {env['numpy']}, BLAS {env['blas']}")
    if env["blas_config"]:
        print(f"  BLAS build: {env['blas_config']}")
    for key in ENV_VARS:
        print(f"  {key}={env['env'].get(key, '(unset)')}")
    print(f"  threads: {env['threads']} (npcnn.set_num_threads and torch.set_num_threads)")
    load = [
        " ".join(f"{v:.2f}" for v in env[k]) for k in ("load_average_before", "load_average_after")
    ]
    print(f"  load average (1, 5, 15 min): {load[0]} before, {load[1]} after the run")
    for fw, info in infos.items():
        print(f"  {fw}: " + ", ".join(f"{k}={v}" for k, v in info.items()))

    frameworks = list(summary)
    rows = [
        ("notebook iteration, median (s)", "iter_median_s", "{:.3f}"),
        ("notebook iteration, min (s)", "iter_min_s", "{:.3f}"),
        ("  training step, median (s)", "iter_train_median_s", "{:.3f}"),
        ("  inference 1,000, median (s)", "iter_infer_median_s", "{:.3f}"),
        ("  timed iterations", "iter_samples", "{:d}"),
        ("train img/s @ batch 128, median", "train_img_s_128", "{:.0f}"),
        ("inference img/s @ batch 128, median", "infer_img_s_128", "{:.0f}"),
        ("  best train img/s @ batch 128", "train_img_s_128_max", "{:.0f}"),
        ("  best inference img/s @ batch 128", "infer_img_s_128_max", "{:.0f}"),
        ("peak RSS increase, iteration (MiB)", "peak_rss_increase_mb", "{:.1f}"),
        ("peak RSS increase, batch 128 (MiB)", "peak_rss_increase_128_mb", "{:.1f}"),
    ]
    width = 38
    print("\n" + "".ljust(width) + "".join(fw.rjust(12) for fw in frameworks))
    for label, key, fmt in rows:
        cells = [fmt.format(summary[fw][key]) if key in summary[fw] else "-" for fw in frameworks]
        print(label.ljust(width) + "".join(c.rjust(12) for c in cells))

    print()
    if "npcnn" in summary and "torch" in summary:
        ratio = summary["npcnn"]["iter_median_s"] / summary["torch"]["iter_median_s"]
        print(f"iteration time npcnn / torch: {ratio:.2f}")
    if "npcnn" in summary and "naive" in summary:
        ratio = summary["naive"]["iter_median_s"] / summary["npcnn"]["iter_median_s"]
        print(f"iteration time naive / npcnn: {ratio:.1f}")
    if "npcnn" in summary and "npcnn-graph" in summary:
        ratio = summary["npcnn-graph"]["iter_median_s"] / summary["npcnn"]["iter_median_s"]
        print(f"iteration time npcnn-graph (Model) / npcnn (Sequential): {ratio:.3f}")
    print("\nTargets (judged on medians)                 median    best")
    for name, t in targets.items():
        verdict = "MET" if t["ok"] else "NOT MET"
        print(f"  {name:40s} {t['value']:7.3f} {t['value_best']:7.3f}  {verdict}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="rounds of npcnn/graph/torch workers")
    p.add_argument("--inner", type=int, default=1, help="timed repetitions inside each worker")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--naive-repeats", type=int, default=1, help="timed naive iterations")
    p.add_argument(
        "--naive-dtype",
        choices=("float32", "float64"),
        default="float64",
        help="float64, the precision the notebook ran in (default); float32 as npcnn/PyTorch",
    )
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--skip-torch", action="store_true")
    p.add_argument(
        "--skip-graph", action="store_true", help="do not measure the network as an nn.Model"
    )
    p.add_argument("--json", type=Path, help="write all samples and the summary here")
    # Internal: run one measurement and print its result (used by the driver).
    p.add_argument("--worker", choices=sorted(RUNNERS), help=argparse.SUPPRESS)
    p.add_argument("--task", choices=("notebook", "batch128"), help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--timed", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(
            args.worker, args.task, args.threads, args.warmup, args.timed, args.dtype
        )
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    frameworks = ["npcnn"] if args.skip_graph else ["npcnn", "npcnn-graph"]
    if not args.skip_torch:
        if importlib.util.find_spec("torch") is None:
            print("torch is not importable: PyTorch is skipped")
        else:
            frameworks.append("torch")
    env = environment_info(args.threads)
    results: list[dict] = []
    for rnd in range(args.repeats):
        # Alternate who goes first so slow drifts of a shared machine hit all alike.
        order = frameworks if rnd % 2 == 0 else frameworks[::-1]
        for task in ("notebook", "batch128"):
            for fw in order:
                if task == "notebook":
                    warmup, timed = 1, args.inner
                else:
                    warmup, timed = BATCH_WARMUP_PASSES, BATCH_TIMED_PASSES * args.inner
                r = spawn_worker(fw, task, args.threads, warmup=warmup, timed=timed)
                results.append(r)
                med = statistics.median(r["train_s"]) + statistics.median(r["infer_s"])
                print(f"round {rnd + 1}/{args.repeats} {fw:11s} {task:9s} {med:8.3f} s", flush=True)
    if not args.skip_naive:
        print(f"naive loops: {args.naive_repeats} iteration(s) of several seconds each...")
        results.append(
            spawn_worker("naive", "notebook", args.threads, 0, args.naive_repeats, args.naive_dtype)
        )
    # Other processes' load distorts timings (PyTorch's OpenMP threads suffer most): show it.
    env["load_average_after"] = os.getloadavg()
    infos = {r["framework"]: r["info"] for r in results if r["info"]}
    summary = summarise(results)
    targets = check_targets(summary)
    print_report(env, infos, summary, targets)
    if args.json:
        payload = {
            "environment": env,
            "settings": {
                "n_notebook": N_NOTEBOOK,
                "batch": BATCH,
                "batches_per_pass": BATCHES_PER_PASS,
                "lr": LR,
                "momentum": MOMENTUM,
                **{k: v for k, v in vars(args).items() if k != "json"},
            },
            "frameworks": infos,
            "summary": summary,
            "targets": targets,
            "samples": results,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"\nresults written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
