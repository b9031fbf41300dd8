"""Data-parallel training: K ranks, one model, the same step on every rank.

What the Trainer asks of a `DataParallel` (Horovod's and PyTorch DDP's
design, over any `World`):

- `start`: the ranks compare a fingerprint (npcnn's version, every
  parameter's and buffer's name, shape and dtype, the steps per epoch, the
  global batch size, the shuffling's state, sync-BN, the position resumed
  from, the epochs and the optimiser's settings) and stop on any difference
  (`check`, which the command line also runs before it writes anything);
  then rank 0's weights and buffers are broadcast, so all start identical
  (after a resume too).
- `shard`: each rank's share of every global batch (`shards`).
- `totals`: after the forward pass, the batch's size, loss sum, correct
  predictions and the stop signals received (Ctrl-C, SIGTERM) are summed
  over the ranks, so every rank stops after the same step. The loss is
  the global batch's mean, sum_r n_r * L_r / B, so each rank scales its
  gradient by n_r / B before its backward pass: K ranks at global batch B
  compute one process's gradient at batch B, whatever the shares.
- `step_scope`: with ``sync_bn``, every batch norm's statistics (and their
  gradient terms) cover the global batch (`npcnn.kernels.batchnorm`).
- `step_scope` also listens to the backward pass (`npcnn.nn.hooks`): the
  gradients go in flat buckets of at most ``bucket_bytes`` (one dtype each),
  in the reverse of the model's parameter order, and each bucket's
  non-blocking Allreduce starts as soon as the backward pass has finished
  all its parameters, overlapping the rest of the pass; `reduce_gradients`
  starts the rest, waits and copies the sums back. A parameter that got no
  gradient sends zeros.
- `check_weights`: every ``check_every`` steps the ranks compare checksums
  of their weights and stop on a drift.
- `end_epoch`: without sync-BN each rank's running statistics saw only its
  shares; they are averaged over the ranks before validation and the
  epoch's checkpoint (with it they are the same everywhere already).
- `evaluate`: each rank evaluates its share of the validation set; counts
  of examples, correct predictions and loss sums are summed, so every image
  counts once.
"""

from __future__ import annotations

import contextlib
import json
import signal
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from npcnn.distributed.shards import ShardedBatches, share
from npcnn.distributed.world import Pending, World
from npcnn.kernels.batchnorm import statistics_across
from npcnn.nn import BatchNorm1D, BatchNorm2D
from npcnn.nn.hooks import gradients_ready_hook


class DistributedError(RuntimeError):
    """The ranks disagree (fingerprint, weights): the job cannot go on."""


class GradientBuckets:
    """Flat buffers that carry the gradients of ``params`` (name, Parameter) pairs over
    the ranks, in runs of one dtype of at most ``bucket_bytes``.

    The order is the reverse of ``params``' (a model's parameter order is its
    forward order, so this is the order in which the backward pass finishes
    them), the same on every rank. Each step, `ready` marks parameters whose
    gradients are final; a bucket's non-blocking Allreduce starts as soon as
    all its parameters are (and every bucket before it has started), while the
    backward pass goes on; `finish` starts the rest, waits, and copies the sums
    back. A parameter that got no gradient sends its zeros.
    """

    def __init__(self, params: list[tuple[str, Any]], bucket_bytes: int) -> None:
        self.buckets: list[tuple[np.ndarray, list[tuple[Any, slice]]]] = []
        unique = list({id(p): p for _, p in params}.values())
        # A parameter that several layers share gets gradients from each of them: it is
        # final only at the end of the pass, so nothing is summed before then.
        self.overlap = len(unique) == len(params)
        members: list[tuple[Any, slice]] = []
        size, dtype = 0, None
        for p in reversed(unique):
            d = p.data.dtype
            if members and (d != dtype or (size + p.data.size) * d.itemsize > bucket_bytes):
                self.buckets.append((np.empty(size, dtype), members))
                members, size = [], 0
            members.append((p, slice(size, size + p.data.size)))
            size, dtype = size + p.data.size, d
        if members:
            self.buckets.append((np.empty(size, dtype), members))
        self._waiting = [{id(p) for p, _ in members} for _, members in self.buckets]
        self._pending: list[Pending] = []

    def ready(self, params: list[Any], world: World) -> None:
        """``params``' gradients are final: start the buckets that are complete now."""
        if not self.overlap:
            return
        done = {id(p) for p in params}
        for waiting in self._waiting[len(self._pending) :]:
            waiting -= done
        while len(self._pending) < len(self.buckets) and not self._waiting[len(self._pending)]:
            self._start(len(self._pending), world)
        for request in self._pending:
            request.test()  # (MPI moves the started sums along only when called)

    def finish(self, world: World) -> None:
        """Start the buckets not started yet, wait for every sum, copy the sums back."""
        while len(self._pending) < len(self.buckets):
            self._start(len(self._pending), world)
        for (flat, members), request in zip(self.buckets, self._pending, strict=True):
            request.wait()
            for p, where in members:
                if p.grad is None:
                    p.grad = np.zeros_like(p.data)
                p.grad[...] = flat[where].reshape(p.grad.shape)
        self._waiting = [{id(p) for p, _ in members} for _, members in self.buckets]
        self._pending = []

    def _start(self, index: int, world: World) -> None:
        flat, members = self.buckets[index]
        for p, where in members:
            flat[where] = 0 if p.grad is None else p.grad.ravel()
        self._pending.append(world.allreduce_start(flat, "the gradients' all-reduce"))


class DataParallel:
    """Train on every rank of ``world``; see the module docstring.

    Args:
        world: the ranks (`npcnn.distributed.init_world`).
        sync_bn: batch statistics over the global batch (PyTorch's SyncBatchNorm);
            False: each rank's own (PyTorch DDP's default).
        check_every: compare the weights' checksums every this many steps (0: never).
        bucket_bytes: the largest gradient bucket.
    """

    def __init__(
        self,
        world: World,
        *,
        sync_bn: bool = False,
        check_every: int = 100,
        bucket_bytes: int = 1 << 20,
    ) -> None:
        self.world = world
        self.sync_bn = bool(sync_bn)
        self.check_every = int(check_every)
        self.bucket_bytes = int(bucket_bytes)
        self._buckets: GradientBuckets | None = None
        self._model: Any = None

    # --- the start ---------------------------------------------------------------------
    def shard(self, batches: Any, model: Any = None) -> ShardedBatches:
        """This rank's shares of the global ``batches``: of two examples at least when
        ``model`` has batch norms that normalise each share alone (no sync-BN)."""
        norms = model is not None and bool(_batch_norms(model))
        min_share = 2 if norms and not self.sync_bn else 1
        return ShardedBatches(batches, self.world.rank, self.world.size, min_share)

    def check(
        self, model: Any, train: Any, position: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """DistributedError, on every rank, unless every rank runs the same job: the same
        model, data, position and ``extra`` settings (epochs, optimiser, ...)."""
        self._check_fingerprints({**self._fingerprint(model, train, position), **extra})

    def start(
        self, model: Any, train: Any, position: dict[str, Any], extra: dict[str, Any]
    ) -> None:
        """`check`, then give every rank rank 0's weights and buffers."""
        self._model = model
        self.check(model, train, position, extra)
        for _, array in sorted(_state_arrays(model), key=lambda item: item[0]):
            self.world.broadcast(array, "the broadcast of rank 0's weights")
        self._buckets = GradientBuckets(list(model.named_parameters()), self.bucket_bytes)

    def _fingerprint(self, model: Any, train: Any, position: dict[str, Any]) -> dict[str, Any]:
        from npcnn import __version__

        state = getattr(train, "get_state", dict)()
        return {
            "npcnn": __version__,
            "state": [[n, list(a.shape), str(a.dtype)] for n, a in sorted(_state_arrays(model))],
            "steps per epoch": len(train),
            "global batch size": getattr(train, "batch_size", None),
            "examples": getattr(train, "num_examples", None),
            "shuffling": zlib.crc32(json.dumps(state, sort_keys=True, default=str).encode()),
            "sync-bn": self.sync_bn,
            "resumed at": position,
        }

    def _check_fingerprints(self, mine: dict[str, Any]) -> None:
        everyone = self.world.allgather(mine, "the fingerprint check")
        for rank, theirs in enumerate(everyone):
            for key, value in everyone[0].items():
                if json.dumps(theirs.get(key)) != json.dumps(value):
                    ours, other = _first_difference(value, theirs.get(key))
                    raise DistributedError(
                        f"rank {rank} runs another job than rank 0: {key} {_brief(other)} "
                        f"against {_brief(ours)}"
                    )

    # --- each step ---------------------------------------------------------------------
    @contextlib.contextmanager
    def step_scope(self) -> Iterator[None]:
        """Where the forward and backward passes run: the gradients' sums start as the
        backward pass finishes them; with ``sync_bn``, batch statistics over the global
        batch."""
        buckets = self._buckets
        if buckets is None:
            raise RuntimeError("DataParallel.start() was not called")

        def ready(layers: tuple[Any, ...]) -> None:
            buckets.ready([p for layer in layers for p in layer.parameters()], self.world)

        def total(values: np.ndarray) -> np.ndarray:
            return self.world.allreduce(values, "a batch norm's statistics")

        with contextlib.ExitStack() as stack:
            stack.enter_context(gradients_ready_hook(ready))
            if self.sync_bn:
                stack.enter_context(statistics_across(total))
            yield

    def totals(
        self, n: int, loss: float, correct: int, stop: int | None
    ) -> tuple[int, float, int, int | None]:
        """(global batch size, its mean loss, correct predictions, the stop signal any rank
        received: SIGTERM before SIGINT, None if none) from this rank's share and the
        signal it received (None)."""
        asked = [float(stop == signal.SIGINT), float(stop == signal.SIGTERM)]
        sums = self.world.allreduce(
            np.array([n, n * loss, correct, *asked], np.float64), "the step's totals"
        )
        total = round(sums[0])
        return total, float(sums[1] / total), round(sums[2]), _stop_signal(sums[3:])

    def reduce_gradients(self) -> None:
        """Sum every parameter's gradient over the ranks (after the backward pass)."""
        if self._buckets is None:
            raise RuntimeError("DataParallel.start() was not called")
        self._buckets.finish(self.world)

    def check_weights(self, global_step: int) -> None:
        """Every ``check_every`` steps: DistributedError if the ranks' weights differ."""
        if not self.check_every or global_step % self.check_every:
            return
        checksum = 0
        for _, p in sorted(self._model.named_parameters(), key=lambda item: item[0]):
            checksum = zlib.crc32(np.ascontiguousarray(p.data).view(np.uint8), checksum)
        sums = self.world.allgather(checksum, "the weights' checksum")
        if len(set(sums)) > 1:
            odd = [r for r, s in enumerate(sums) if s != sums[0]]
            raise DistributedError(
                f"after step {global_step} the weights of rank(s) {odd} differ from rank 0's "
                "(a rank computed another step: a different NumPy or BLAS, a bit flip?)"
            )

    def agreed_stop(self, stop: int | None) -> int | None:
        """The stop signal any rank received (SIGTERM before SIGINT), or None."""
        asked = [float(stop == signal.SIGINT), float(stop == signal.SIGTERM)]
        return _stop_signal(self.world.allreduce(np.array(asked), "the stop request"))

    # --- the epoch's end ---------------------------------------------------------------
    def end_epoch(self, model: Any) -> None:
        """Without sync-BN: average the running statistics over the ranks."""
        if self.sync_bn or self.world.size == 1:
            return
        for norm in _batch_norms(model):
            for buffer in (norm.running_mean, norm.running_var):
                total = self.world.allreduce(buffer, "the running statistics' average")
                buffer[...] = total / self.world.size

    def evaluate(
        self,
        evaluate_share: Callable[[slice], tuple[int, float, int]],
        count: int,
    ) -> tuple[float, float]:
        """(mean loss, accuracy) over ``count`` examples: ``evaluate_share(slice)`` gives
        (examples, loss sum, correct) of this rank's share, summed over the ranks."""
        n, loss_sum, correct = evaluate_share(share(count, self.world.rank, self.world.size))
        sums = self.world.allreduce(np.array([n, loss_sum, correct], np.float64), "the test totals")
        return float(sums[1] / sums[0]), float(sums[2] / sums[0])


def _batch_norms(model: Any) -> list[BatchNorm1D | BatchNorm2D]:
    """The model's batch norms, in its (every rank's) layer order."""
    return [m for _, m in model.named_layers() if isinstance(m, BatchNorm1D | BatchNorm2D)]


def _state_arrays(model: Any) -> list[tuple[str, np.ndarray]]:
    """Every parameter's and buffer's array, itself (not a copy)."""
    return [(n, p.data) for n, p in model.named_parameters()] + list(model.named_buffers())


def _stop_signal(asked: np.ndarray) -> int | None:
    """SIGTERM if any rank received it, else SIGINT if any did, else None."""
    if asked[1] > 0:
        return signal.SIGTERM
    return signal.SIGINT if asked[0] > 0 else None


def _first_difference(ours: Any, theirs: Any) -> tuple[Any, Any]:
    """The first differing entries of two lists (the lists' lengths if one is longer), or
    the two values."""
    if isinstance(ours, list) and isinstance(theirs, list):
        for mine, other in zip(ours, theirs, strict=False):
            if json.dumps(mine) != json.dumps(other):
                return mine, other
        return f"{len(ours)} entries", f"{len(theirs)} entries"
    return ours, theirs


def _brief(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
