"""Accuracy and epoch time of npcnn on full Fashion-MNIST (60,000 train / 10,000 test).

Five parts, each with the target the project set for it:

- ``notebook-adam``: the ``notebook`` preset's architecture trained with Adam
  (lr 1e-3, batch 128) for 5 epochs; target: test accuracy >= 90.5 %.
- ``strong``: the ``strong`` preset with its own recipe (optimiser, learning
  rate, weight decay, schedule, batch size, epochs, augmentation); target: test
  accuracy >= 93.0 % within 15 minutes of training wall-clock.
- ``resnet``: the ``resnet`` preset with its recipe; target: test accuracy
  >= 94.0 % within 15 minutes of training wall-clock.
- ``resnet-epoch-vs-torch``: as ``epoch-vs-torch`` below, for the ``resnet``
  preset's network and optimiser (PyTorch's twin in ``torch_twins.py``, built
  from npcnn's initial weights); target: npcnn's epoch takes no longer.
- ``epoch-vs-torch``: one epoch of the notebook network (Adam, batch 128)
  with npcnn and with PyTorch, each in a fresh subprocess with the same
  number of threads, alternating who goes first; target: npcnn's epoch takes
  no longer than PyTorch's. PyTorch starts from npcnn's initial weights and
  both see the same batches, so their test accuracies after the epoch are a
  sanity check of each other.

npcnn is trained with :class:`npcnn.training.Trainer` (one ``EpochPrinter``
line per epoch) on batches from :class:`npcnn.data.BatchIterator`, shuffled
from the seed as ``npcnn train`` does. Times exclude loading the data.
"Train" seconds are the optimisation steps of an epoch (first step's start
to last step's end, batch conversion included); "epoch" seconds add the
evaluation on the test set that the Trainer runs after each epoch.

    python benchmarks/bench_fashion.py --part all
    python benchmarks/bench_fashion.py --part epoch-vs-torch --repeats 3
    python benchmarks/bench_fashion.py --part strong --seed 1 --json out.json
    python benchmarks/bench_fashion.py --part all --limit-train 2000 --limit-test 1000 --epochs 1

Results go to ``benchmarks/results/fashion-<part>.json`` (the latest run of
each part; git keeps the earlier ones) unless ``--json`` names a file.
Targets are only judged on the full settings (no limits, default epochs and
learning rate); otherwise they read "n/a".
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import npcnn
from npcnn import nn, optim
from npcnn.data import BatchIterator, Dataset, load_dataset
from npcnn.data.augment import Augmentation
from npcnn.models import Recipe, get_preset
from npcnn.models.resnet import STAGES as RESNET_STAGES
from npcnn.training import Trainer, callbacks, evaluate, schedules
from processes import cpu_model
from torch_twins import torch_notebook_net, torch_resnet

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
DATASET = "fashion-mnist"
# The order of --part all.
PARTS = ("epoch-vs-torch", "resnet-epoch-vs-torch", "notebook-adam", "strong", "resnet")
BATCH = 128
ADAM_LR = 1e-3
NOTEBOOK_EPOCHS = 5
EVAL_BATCH = 500
RESULT_MARKER = "BENCH_FASHION_RESULT "

TARGET_NOTEBOOK_ACCURACY = 0.905
#: The test accuracy each preset part must reach, within TARGET_PRESET_SECONDS.
PRESET_TARGETS = {"strong": 0.930, "resnet": 0.940}
TARGET_PRESET_SECONDS = 15 * 60.0


# --- data and models ------------------------------------------------------------------


def load_fashion(limit_train: int | None, limit_test: int | None) -> Dataset:
    """Fashion-MNIST (uint8 (N, 28, 28) images), keeping the first ``limit_*`` of each split."""
    return load_dataset(DATASET).head(limit_train, limit_test)


def shuffle_rng(seed: int) -> np.random.Generator:
    """The shuffling stream ``npcnn train`` uses: spawned from the seed, independent of
    the initial weights' ``default_rng(seed)``."""
    return np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])


def build_notebook_net(seed: int, init: str) -> nn.Sequential:
    """The ``notebook`` preset's architecture; ``init`` "he" re-draws every conv/dense
    weight He-normal (N(0, 2 / fan_in)), "preset" keeps the preset's N(0, 0.1^2)."""
    model = get_preset("notebook").model(seed=seed)
    if init == "he":
        model.reset_parameters(np.random.default_rng(seed))
    return model


# --- training with npcnn's Trainer ------------------------------------------------------


class StepTimer(callbacks.Callback):
    """Seconds of each epoch's optimisation steps: from ``on_epoch_begin`` (just before
    the first batch is drawn) to the end of the last step, so without evaluation."""

    def __init__(self) -> None:
        self.train_seconds: list[float] = []
        self._start = 0.0

    def on_epoch_begin(self, trainer: Any, logs: dict[str, Any]) -> None:
        self._start = time.perf_counter()
        self.train_seconds.append(0.0)

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        self.train_seconds[-1] = time.perf_counter() - self._start


@dataclass
class TrainingRun:
    """What one Trainer run measured; ``epochs`` holds one row per epoch."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    fit_seconds: float = 0.0  # wall-clock of Trainer.fit: steps, evaluations, callbacks
    train_seconds: float = 0.0  # the optimisation steps only
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    tta: str = "none"  # the test-time augmentation of the test accuracies
    final_accuracy_without_tta: float | None = None  # after training, when tta is not "none"
    load_average: tuple[float, ...] = ()


def train_npcnn(
    model: nn.Layer,
    optimizer: optim.Optimizer,
    scheduler: schedules.LRScheduler | None,
    data: Dataset,
    epochs: int,
    batch_size: int,
    seed: int,
    validate: bool = True,
    augment: Augmentation | None = None,
    loss_fn: nn.CrossEntropyLoss | None = None,
    tta: str = "none",
) -> TrainingRun:
    """Train with the Trainer, printing one line per epoch; evaluate on the test split
    after each epoch when ``validate`` (with the test-time augmentation ``tta``);
    ``augment`` changes the training batches; ``loss_fn`` defaults to the plain
    cross-entropy."""
    timer = StepTimer()
    trainer = Trainer(
        model,
        loss_fn or nn.CrossEntropyLoss(),
        optimizer,
        scheduler=scheduler,
        callbacks=[timer, callbacks.EpochPrinter(lambda line: print(line, flush=True))],
        eval_batch_size=EVAL_BATCH,
        tta=tta,
    )
    batches = BatchIterator(
        data.train_images,
        data.train_labels,
        batch_size,
        rng=shuffle_rng(seed),
        augment=augment,
    )
    validation = (data.test_images, data.test_labels) if validate else None
    start = time.perf_counter()
    history = trainer.fit(batches, epochs, validation=validation)
    run = TrainingRun(
        fit_seconds=time.perf_counter() - start, load_average=os.getloadavg(), tta=tta
    )
    for record, train_s in zip(history.epochs, timer.train_seconds, strict=True):
        run.epochs.append(
            {
                "epoch": record["epoch"],
                "lr": record["lr"],
                "train_loss": record["loss"],
                "train_accuracy": record["accuracy"],
                "test_loss": record["val_loss"],
                "test_accuracy": record["val_accuracy"],
                "train_seconds": train_s,
                "epoch_seconds": record["seconds"],
                "images_per_second": record["images_per_second"],
            }
        )
    run.train_seconds = sum(timer.train_seconds)
    if validate:
        accuracies = [r["test_accuracy"] for r in run.epochs]
        run.final_accuracy, run.best_accuracy = accuracies[-1], max(accuracies)
    return run


def print_epoch_table(run: TrainingRun) -> None:
    """Per-epoch accuracy and seconds, with running totals of the training time."""
    print(
        f"\n{'epoch':>5} {'lr':>9} {'train loss':>10} {'train acc':>9} {'test loss':>9} "
        f"{'test acc':>8} {'train s':>8} {'epoch s':>8} {'img/s':>7} {'cum. s':>8}"
    )
    total = 0.0
    for r in run.epochs:
        total += r["epoch_seconds"]
        print(
            f"{r['epoch']:>5} {r['lr']:>9.3g} {r['train_loss']:>10.4f} "
            f"{100 * r['train_accuracy']:>8.2f}% {r['test_loss']:>9.4f} "
            f"{100 * r['test_accuracy']:>7.2f}% {r['train_seconds']:>8.1f} "
            f"{r['epoch_seconds']:>8.1f} {r['images_per_second']:>7.0f} {total:>8.1f}"
        )
    print(
        f"total: {run.train_seconds:.1f} s of training steps, "
        f"{sum(r['epoch_seconds'] for r in run.epochs):.1f} s with the test evaluations, "
        f"{run.fit_seconds:.1f} s wall-clock of Trainer.fit; "
        f"load average after: {' '.join(f'{v:.2f}' for v in run.load_average)}"
    )


def target(name: str, value: float, goal: str, ok: bool | None) -> dict[str, Any]:
    """A target's verdict: ``ok`` None means not judged (settings differ from the issue's)."""
    return {"name": name, "value": value, "goal": goal, "ok": ok}


# --- part 1: the notebook network with Adam ---------------------------------------------


def part_notebook_adam(args: argparse.Namespace) -> dict[str, Any]:
    epochs = args.epochs or NOTEBOOK_EPOCHS
    print(
        f"\n== notebook network, Adam lr {args.lr:g}, batch {BATCH}, {epochs} epochs, "
        f"{args.init} init, seed {args.seed} =="
    )
    data = load_fashion(args.limit_train, args.limit_test)
    model = build_notebook_net(args.seed, args.init)
    optimizer = optim.Adam(model.parameters(), lr=args.lr)
    run = train_npcnn(model, optimizer, None, data, epochs, BATCH, args.seed)
    print_epoch_table(run)
    full = full_settings(args) and epochs == NOTEBOOK_EPOCHS and args.lr == ADAM_LR
    verdict = target(
        f"notebook net + Adam, {NOTEBOOK_EPOCHS} epochs: test accuracy",
        run.final_accuracy,
        f">= {100 * TARGET_NOTEBOOK_ACCURACY:.1f}%",
        run.final_accuracy >= TARGET_NOTEBOOK_ACCURACY if full else None,
    )
    return {
        "settings": {
            "architecture": "notebook preset",
            "init": args.init,
            "optimizer": "adam",
            "lr": args.lr,
            "batch_size": BATCH,
            "epochs": epochs,
            "train_images": len(data.train_labels),
            "test_images": len(data.test_labels),
        },
        "run": asdict(run),
        "targets": [verdict],
    }


# --- parts strong and resnet: a preset with its recipe ------------------------------------------


def part_preset(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """Train preset `name` with its own recipe; judged against ``PRESET_TARGETS[name]``."""
    preset = get_preset(name)
    recipe = preset.recipe
    target_accuracy = PRESET_TARGETS[name]
    epochs = args.epochs or recipe.epochs
    batch = recipe.batch_size or 0
    print(
        f"\n== {name} preset: {recipe.optimizer} lr {recipe.lr:g} wd {recipe.weight_decay:g}, "
        f"{recipe.schedule} schedule, augment {recipe.augment}, tta {recipe.tta}, batch {batch}, "
        f"{epochs} epochs, seed {args.seed} =="
    )
    data = load_fashion(args.limit_train, args.limit_test)
    if not batch:
        batch = len(data.train_labels)
    model = preset.model(seed=args.seed)
    optimizer = recipe.make_optimizer(model.parameters())
    scheduler = recipe.make_scheduler(optimizer, epochs)
    run = train_npcnn(
        model,
        optimizer,
        scheduler,
        data,
        epochs,
        batch,
        args.seed,
        augment=recipe.make_augmentation(),
        loss_fn=recipe.make_loss(),
        tta=recipe.tta,
    )
    print_epoch_table(run)
    if recipe.tta != "none":
        plain = evaluate(model, data.test_images, data.test_labels, batch_size=EVAL_BATCH)
        run.final_accuracy_without_tta = plain.accuracy
        print(
            f"test accuracy with tta {recipe.tta}: {100 * run.final_accuracy:.2f}%, "
            f"without: {100 * plain.accuracy:.2f}% (after training, untimed)"
        )

    reached = first_epoch_reaching(run, target_accuracy)
    if reached is not None:
        print(
            f"{100 * target_accuracy:.1f}% first reached after epoch {reached['epoch']}, "
            f"{reached['elapsed_seconds']:.1f} s into training"
        )
    full = full_settings(args) and epochs == recipe.epochs
    accuracy_ok = run.final_accuracy >= target_accuracy
    time_ok = run.fit_seconds <= TARGET_PRESET_SECONDS
    return {
        "settings": {
            "preset": name,
            "recipe": asdict(recipe),
            "epochs": epochs,
            "batch_size": batch,
            "train_images": len(data.train_labels),
            "test_images": len(data.test_labels),
        },
        "run": asdict(run),
        "first_epoch_reaching_target": reached,
        "targets": [
            target(
                f"{name} preset: final test accuracy",
                run.final_accuracy,
                f">= {100 * target_accuracy:.1f}%",
                accuracy_ok if full else None,
            ),
            target(
                f"{name} preset: training wall-clock (s)",
                run.fit_seconds,
                f"<= {TARGET_PRESET_SECONDS:.0f} s",
                time_ok if full else None,
            ),
        ],
    }


def first_epoch_reaching(run: TrainingRun, accuracy: float) -> dict[str, float] | None:
    """The first epoch whose test accuracy is at least ``accuracy``, and the seconds
    (epochs with their evaluations) elapsed by its end; None if none did."""
    elapsed = 0.0
    for r in run.epochs:
        elapsed += r["epoch_seconds"]
        if r["test_accuracy"] >= accuracy:
            return {"epoch": r["epoch"], "elapsed_seconds": elapsed}
    return None


# --- part 3: one epoch, npcnn against PyTorch, each in its own process -------------------


def torch_train_epoch(model, batches: BatchIterator, recipe: Recipe) -> dict[str, float]:
    """One epoch of the recipe's optimiser steps; per step also the loss as a float and
    the correct predictions, which the Trainer computes too. Returns seconds, loss and
    accuracy."""
    import torch

    opt = torch_optimizer(model, recipe)
    model.train()
    loss_sum, correct, count = 0.0, 0, 0
    start = time.perf_counter()
    for x, y in batches:
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt.zero_grad(set_to_none=True)
        logits = model(xt)
        loss = torch.nn.functional.cross_entropy(logits, yt, label_smoothing=recipe.label_smoothing)
        loss.backward()
        opt.step()
        loss_sum += loss.item() * len(y)
        correct += int((logits.argmax(dim=1) == yt).sum())
        count += len(y)
    seconds = time.perf_counter() - start
    return {
        "train_seconds": seconds,
        "train_loss": loss_sum / count,
        "train_accuracy": correct / count,
    }


def torch_test_accuracy(model, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy in eval mode (running batch-norm statistics), images scaled by 1/255."""
    import torch

    model.eval()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(labels), EVAL_BATCH):
            x = images[i : i + EVAL_BATCH, np.newaxis].astype(np.float32) / np.float32(255)
            pred = model(torch.from_numpy(x)).argmax(dim=1).numpy()
            correct += int(np.count_nonzero(pred == labels[i : i + EVAL_BATCH]))
    return correct / len(labels)


def warm_up(data: Dataset, steps: int, train_step) -> None:
    """Run ``steps`` training steps on a throwaway model so thread pools, allocators and
    lazy initialisation are ready before the timed epoch."""
    if steps <= 0:
        return
    n = min(len(data.train_labels), steps * BATCH)
    for x, y in BatchIterator(data.train_images[:n], data.train_labels[:n], BATCH, rng=0):
        train_step(x, y)


@dataclass(frozen=True)
class EpochNetwork:
    """A network timed against PyTorch: npcnn's model from a seed, its PyTorch twin
    from npcnn's weights, and the optimiser both train it with."""

    title: str
    build: Callable[[int], nn.Layer]
    twin: Callable[[nn.Layer], Any]
    recipe: Recipe


def epoch_networks() -> dict[str, EpochNetwork]:
    """The networks of the epoch-vs-torch parts, by part name."""
    resnet = get_preset("resnet")
    return {
        "epoch-vs-torch": EpochNetwork(
            "the notebook network, He init",
            lambda seed: build_notebook_net(seed, "he"),
            torch_notebook_net,
            Recipe(optimizer="adam", lr=ADAM_LR, batch_size=BATCH),
        ),
        "resnet-epoch-vs-torch": EpochNetwork(
            "the resnet preset, its optimiser (no schedule, no augmentation)",
            lambda seed: resnet.model(seed=seed),
            lambda model: torch_resnet(model, RESNET_STAGES),
            resnet.recipe,
        ),
    }


def torch_optimizer(model, recipe: Recipe):
    """The recipe's optimiser in PyTorch, with the same hyperparameters as npcnn's."""
    import torch

    params, lr, wd = model.parameters(), recipe.lr, recipe.weight_decay
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=recipe.momentum, weight_decay=wd)
    kind = torch.optim.Adam if recipe.optimizer == "adam" else torch.optim.AdamW
    return kind(params, lr=lr, weight_decay=wd)


def npcnn_epoch(network: EpochNetwork, data: Dataset, seed: int, warmup: int) -> dict[str, Any]:
    """Warm up on a throwaway model, then train ``network`` one epoch with the Trainer."""
    scratch = network.build(seed + 1)
    scratch_opt = network.recipe.make_optimizer(scratch.parameters())
    loss_fn = network.recipe.make_loss()

    def step(x: np.ndarray, y: np.ndarray) -> None:
        scratch_opt.zero_grad()
        loss_fn.forward(scratch.forward(x, training=True), y)
        scratch.backward(loss_fn.backward(), need_input_grad=False)
        scratch_opt.step()

    warm_up(data, warmup, step)
    model = network.build(seed)
    optimizer = network.recipe.make_optimizer(model.parameters())
    loss_fn = network.recipe.make_loss()
    run = train_npcnn(model, optimizer, None, data, 1, BATCH, seed, False, loss_fn=loss_fn)
    row = run.epochs[0]
    result = {k: row[k] for k in ("train_seconds", "train_loss", "train_accuracy")}
    result["test_accuracy"] = evaluate(
        model, data.test_images, data.test_labels, batch_size=EVAL_BATCH
    ).accuracy
    return result


def torch_epoch(
    network: EpochNetwork, data: Dataset, seed: int, warmup: int, threads: int
) -> dict[str, Any]:
    """The same in PyTorch: npcnn's initial weights, the same batches in the same order."""
    import torch

    torch.set_num_threads(threads)
    scratch = network.twin(network.build(seed + 1))
    scratch_opt = torch_optimizer(scratch, network.recipe)
    smoothing = network.recipe.label_smoothing

    def step(x: np.ndarray, y: np.ndarray) -> None:
        scratch_opt.zero_grad(set_to_none=True)
        logits, labels = scratch(torch.from_numpy(x)), torch.from_numpy(y)
        loss = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing)
        loss.backward()
        scratch_opt.step()

    warm_up(data, warmup, step)
    model = network.twin(network.build(seed))
    batches = BatchIterator(data.train_images, data.train_labels, BATCH, rng=shuffle_rng(seed))
    result = torch_train_epoch(model, batches, network.recipe)
    print(
        f"torch epoch 1/1  loss {result['train_loss']:.4f}  "
        f"acc {result['train_accuracy']:.4f}  {result['train_seconds']:.1f}s",
        flush=True,
    )
    result["test_accuracy"] = torch_test_accuracy(model, data.test_images, data.test_labels)
    result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
    return result


def epoch_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one epoch-vs-torch network (``args.network``) for one epoch in this process
    with ``args.worker``'s framework."""
    npcnn.set_num_threads(args.threads)
    network = epoch_networks()[args.network]
    data = load_fashion(args.limit_train, args.limit_test)
    if args.worker == "npcnn":
        result = npcnn_epoch(network, data, args.seed, args.warmup_steps)
    else:
        result = torch_epoch(network, data, args.seed, args.warmup_steps, args.threads)
    return {
        "framework": args.worker,
        **result,
        "images": len(data.train_labels),
        "threads": args.threads,
        "load_average_after": os.getloadavg(),
        "info": {"numpy": np.__version__, "npcnn": npcnn.__version__, "blas": blas_info()},
    }


def blas_info() -> dict[str, Any] | None:
    """NumPy's BLAS as threadpoolctl sees it (library, version, kernel architecture)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    for info in threadpool_info():
        if info.get("user_api") == "blas":
            return {k: info.get(k) for k in ("internal_api", "version", "architecture")}
    return None


def spawn_epoch_worker(framework: str, part: str, args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`epoch_worker` in a fresh interpreter; its epoch line is passed through."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", framework]
    cmd += ["--network", part, "--seed", str(args.seed), "--threads", str(args.threads)]
    cmd += ["--warmup-steps", str(args.warmup_steps)]
    for flag, value in (("--limit-train", args.limit_train), ("--limit-test", args.limit_test)):
        if value is not None:
            cmd += [flag, str(value)]
    load_before = os.getloadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    results = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
    for line in proc.stdout.splitlines():
        if not line.startswith(RESULT_MARKER):
            print(f"  [{framework}] {line}", flush=True)
    if proc.returncode != 0 or not results:
        raise RuntimeError(f"{framework} worker failed (exit {proc.returncode}):\n{proc.stderr}")
    return {**json.loads(results[-1][len(RESULT_MARKER) :]), "load_average_before": load_before}


def epoch_summary(samples: list[dict[str, Any]], repeats: int) -> dict[str, Any]:
    """Median, best and per-round times of each framework, and npcnn / torch ratios."""
    summary: dict[str, dict[str, float]] = {}
    for framework in ("npcnn", "torch"):
        times = [s["train_seconds"] for s in samples if s["framework"] == framework]
        accs = [s["test_accuracy"] for s in samples if s["framework"] == framework]
        summary[framework] = {
            "median_seconds": statistics.median(times),
            "min_seconds": min(times),
            "max_seconds": max(times),
            "median_test_accuracy": statistics.median(accs),
        }
    by_round = {(s["round"], s["framework"]): s["train_seconds"] for s in samples}
    return {
        "summary": summary,
        "ratio_median": summary["npcnn"]["median_seconds"] / summary["torch"]["median_seconds"],
        "ratio_best": summary["npcnn"]["min_seconds"] / summary["torch"]["min_seconds"],
        "ratio_per_round": [
            by_round[r, "npcnn"] / by_round[r, "torch"] for r in range(1, repeats + 1)
        ],
    }


def print_epoch_samples(samples: list[dict[str, Any]], stats: dict[str, Any]) -> None:
    print(
        f"\n{'round':>5} {'framework':>9} {'epoch s':>8} {'img/s':>7} {'train loss':>10} "
        f"{'train acc':>9} {'test acc':>8} {'load before':>15}"
    )
    for s in samples:
        print(
            f"{s['round']:>5} {s['framework']:>9} {s['train_seconds']:>8.2f} "
            f"{s['images'] / s['train_seconds']:>7.0f} {s['train_loss']:>10.4f} "
            f"{100 * s['train_accuracy']:>8.2f}% {100 * s['test_accuracy']:>7.2f}% "
            f"{' '.join(f'{v:.2f}' for v in s['load_average_before']):>15}"
        )
    print(f"\n{'':>9} {'median s':>9} {'min s':>7} {'max s':>7} {'test acc':>9}")
    for framework, s in stats["summary"].items():
        print(
            f"{framework:>9} {s['median_seconds']:>9.2f} {s['min_seconds']:>7.2f} "
            f"{s['max_seconds']:>7.2f} {100 * s['median_test_accuracy']:>8.2f}%"
        )
    print(
        f"npcnn / torch epoch time: {stats['ratio_median']:.3f} (medians), "
        f"{stats['ratio_best']:.3f} (best), per round: "
        f"{', '.join(f'{r:.3f}' for r in stats['ratio_per_round'])}"
    )


def part_epoch_vs_torch(args: argparse.Namespace, part: str) -> dict[str, Any]:
    network = epoch_networks()[part]
    recipe = network.recipe
    print(
        f"\n== one epoch of {network.title}, {recipe.optimizer} lr {recipe.lr:g} "
        f"wd {recipe.weight_decay:g}, batch {BATCH}: npcnn vs PyTorch, {args.threads} threads, "
        f"{args.repeats} round(s), {args.warmup_steps} warm-up steps =="
    )
    samples: list[dict[str, Any]] = []
    for round_ in range(args.repeats):
        order = ("npcnn", "torch") if round_ % 2 == 0 else ("torch", "npcnn")
        for framework in order:
            print(f"round {round_ + 1}/{args.repeats}: {framework}", flush=True)
            samples.append({"round": round_ + 1, **spawn_epoch_worker(framework, part, args)})
    stats = epoch_summary(samples, args.repeats)
    print_epoch_samples(samples, stats)
    ratio = stats["ratio_median"]
    return {
        "settings": {
            "architecture": f"{network.title}; torch copies npcnn's initial weights",
            "optimizer": recipe.optimizer,
            "lr": recipe.lr,
            "weight_decay": recipe.weight_decay,
            "batch_size": BATCH,
            "threads": args.threads,
            "repeats": args.repeats,
            "warmup_steps": args.warmup_steps,
        },
        "samples": samples,
        **stats,
        "targets": [
            target(
                f"{part}: epoch time npcnn / torch (medians)",
                ratio,
                "<= 1.0",
                ratio <= 1.0 if args.limit_train is None else None,
            )
        ],
    }


# --- the driver ----------------------------------------------------------------------


def full_settings(args: argparse.Namespace) -> bool:
    """Whether the run uses the whole data set, so the issue's targets apply."""
    return args.limit_train is None and args.limit_test is None


def environment(args: argparse.Namespace) -> dict[str, Any]:
    """Versions, threads and load; the git revision when it can be read."""
    try:
        revision = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        revision = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "npcnn": npcnn.__version__,
        "numpy": np.__version__,
        "threads": args.threads,
        "git_revision": revision,
        "env": {
            k: os.environ[k]
            for k in (
                "OMP_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "MKL_NUM_THREADS",
                "OPENBLAS_CORETYPE",
            )
            if k in os.environ
        },
        "load_average_before": os.getloadavg(),
    }


def print_targets(targets: list[dict[str, Any]]) -> None:
    print("\nTargets")
    for t in targets:
        verdict = (
            "n/a (not the full settings)" if t["ok"] is None else "MET" if t["ok"] else "NOT MET"
        )
        value = t["value"]
        shown = f"{100 * value:.2f}%" if "accuracy" in t["name"] else f"{value:.3f}"
        print(f"  {t['name']:48s} {shown:>10}  (goal {t['goal']})  {verdict}")


def default_json_path(part: str) -> Path:
    return RESULTS_DIR / f"fashion-{part}.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--part", choices=[*PARTS, "all"], default="all")
    p.add_argument("--seed", type=int, default=0, help="weights and shuffling (default 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="results file (default: results/)")
    p.add_argument("--threads", type=int, default=npcnn.get_num_threads(), help="default: all CPUs")
    p.add_argument("--epochs", type=int, help="override: notebook-adam 5, strong the recipe's")
    p.add_argument("--lr", type=float, default=ADAM_LR, help="notebook-adam's Adam rate")
    p.add_argument(
        "--init",
        choices=("he", "preset"),
        default="he",
        help="notebook-adam's weights: He-normal (default) or the preset's N(0, 0.1^2)",
    )
    p.add_argument("--repeats", type=int, default=3, help="epoch-vs-torch rounds (default 3)")
    p.add_argument("--warmup-steps", type=int, default=5, help="untimed steps before the epoch")
    p.add_argument("--limit-train", type=int, metavar="N", help="first N training images")
    p.add_argument("--limit-test", type=int, metavar="N", help="first N test images")
    p.add_argument("--worker", choices=("npcnn", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--network", default="epoch-vs-torch", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        result = epoch_worker(args)
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0

    npcnn.set_num_threads(args.threads)
    env = environment(args)
    parts = PARTS if args.part == "all" else (args.part,)
    runners = {
        "epoch-vs-torch": lambda args: part_epoch_vs_torch(args, "epoch-vs-torch"),
        "resnet-epoch-vs-torch": lambda args: part_epoch_vs_torch(args, "resnet-epoch-vs-torch"),
        "notebook-adam": part_notebook_adam,
        "strong": lambda args: part_preset(args, "strong"),
        "resnet": lambda args: part_preset(args, "resnet"),
    }
    print(
        f"npcnn {npcnn.__version__}, numpy {np.__version__}, {args.threads} threads, "
        f"load average {' '.join(f'{v:.2f}' for v in env['load_average_before'])}"
    )
    results: dict[str, Any] = {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "environment": env,
        "parts": {},
    }
    path = args.json or default_json_path(args.part)
    for part in parts:
        results["parts"][part] = runners[part](args)
        write_results(path, results)  # after every part, so a long run keeps what it has
    env["load_average_after"] = os.getloadavg()
    targets = [t for part in results["parts"].values() for t in part["targets"]]
    results["targets"] = targets
    print_targets(targets)
    write_results(path, results)
    print(f"\nwrote {path}")
    return 0


def write_results(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=json_default) + "\n", encoding="utf-8")


def json_default(value: Any) -> Any:
    """NumPy scalars as plain JSON numbers."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


if __name__ == "__main__":
    sys.exit(main())
