"""Data-parallel training without MPI: shares of a batch, gradient buckets, synchronised
batch norm (K ranks as threads), the launcher's mistakes, and a world of one."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

from conftest import build_notebook_model
from npcnn import nn, optim
from npcnn.data import BatchIterator
from npcnn.distributed import (
    DataParallel,
    DistributedError,
    GradientBuckets,
    LaunchError,
    ShardedBatches,
    SingleProcess,
    World,
    init_world,
    launcher_size,
    share,
)
from npcnn.kernels.batchnorm import statistics_across
from npcnn.runtime.threads import get_num_threads, set_num_threads
from npcnn.training import Trainer


@pytest.mark.parametrize(("count", "size"), [(7, 2), (7, 3), (128, 5), (3, 3)])
def test_shares_cover_a_batch_once_and_differ_by_one_at_most(count, size) -> None:
    parts = [share(count, r, size) for r in range(size)]
    covered = np.concatenate([np.arange(count)[p] for p in parts])
    assert covered.tolist() == list(range(count))
    lengths = [p.stop - p.start for p in parts]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def _images(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 4, 4), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize(("n", "batch", "size", "steps"), [(643, 32, 2, 21), (642, 32, 3, 20)])
def test_every_rank_walks_the_global_order_and_takes_its_share(n, batch, size, steps) -> None:
    """643 = 20 * 32 + 3: the last batch of 3 is shared 1/2; 642 leaves 2 < 3 ranks: dropped."""
    images, labels = _images(n)
    ranks = [
        ShardedBatches(BatchIterator(images, labels, batch, rng=5), r, size) for r in range(size)
    ]
    whole = BatchIterator(images, labels, batch, rng=5)
    assert [len(s) for s in ranks] == [steps] * size
    shares = [list(s) for s in ranks]
    batches = list(whole)
    assert len(batches) == steps + (len(batches[-1][1]) < size)  # the batch left out
    for b in range(steps):
        x, y = batches[b]
        np.testing.assert_array_equal(np.concatenate([s[b][1] for s in shares]), y)
        np.testing.assert_array_equal(np.concatenate([s[b][0] for s in shares]), x)


def test_a_global_batch_smaller_than_the_ranks_is_refused() -> None:
    images, labels = _images(10)
    with pytest.raises(ValueError, match=r"batch size \(2\) is the global one .* 3 processes"):
        ShardedBatches(BatchIterator(images, labels, 2), 0, 3)


def test_batch_norms_of_each_share_alone_need_two_examples_a_rank() -> None:
    """Without sync-BN a rank's batch norms normalise its share alone: two examples at
    least, in every batch (a last batch of 3 over 2 ranks is left out); with it, one."""
    images, labels = _images(33)  # batches of 6, 6, 6, 6, 6, 3
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 4, rng=0), nn.BatchNorm1D(4)])
    local, synced = (
        DataParallel(ThreadWorld(0, 2, {})),
        DataParallel(ThreadWorld(0, 2, {}), sync_bn=True),
    )
    assert len(local.shard(BatchIterator(images, labels, 6), model)) == 5
    assert len(synced.shard(BatchIterator(images, labels, 6), model)) == 6
    assert len(local.shard(BatchIterator(images, labels, 6), nn.Flatten())) == 6  # no norms
    with pytest.raises(ValueError, match=r"each of the 2 processes 2 examples .* at least 4"):
        local.shard(BatchIterator(images, labels, 3), model)


def test_gradient_buckets_split_by_size_and_dtype_in_backward_order() -> None:
    model = nn.Sequential([nn.Dense(100, 50, rng=0), nn.Dense(50, 10, rng=0)])
    model[1].astype(np.float64)
    buckets = GradientBuckets(list(model.named_parameters()), bucket_bytes=4 * 5000)
    layout = [[p.data.size for p, _ in members] for _, members in buckets.buckets]
    assert layout == [[10, 500], [50], [5000]]  # 1.bias, 1.weight (float64), then 0.*
    assert [flat.dtype for flat, _ in buckets.buckets] == [np.float64, np.float32, np.float32]
    for p in model.parameters():
        p.grad[...] = np.arange(p.data.size).reshape(p.data.shape)
    before = [p.grad.copy() for p in model.parameters()]
    buckets.finish(SingleProcess())
    for p, grad in zip(model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.grad, grad)


class RecordingWorld(SingleProcess):
    """A world of one that writes down when each all-reduce starts."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    def allreduce_start(self, buffer, what: str):
        self.events.append(f"all-reduce of {buffer.size}")
        return super().allreduce_start(buffer, what)


def test_the_last_layers_gradients_are_summed_while_the_first_layer_s_backward_runs() -> None:
    events: list[str] = []
    layers = [nn.Flatten(), nn.Dense(16, 8, rng=0), nn.ReLU(), nn.Dense(8, 10, rng=0)]
    model = nn.Sequential(layers)
    first_backward = layers[1].backward

    def recorded_backward(dy, need_input_grad=True):
        events.append("first layer's backward")
        return first_backward(dy, need_input_grad)

    layers[1].backward = recorded_backward
    parallel = DataParallel(RecordingWorld(events), bucket_bytes=4 * 90)
    opt = optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, nn.CrossEntropyLoss(), opt, data_parallel=parallel)
    with nn.no_fusion():  # (Flatten + Dense would run as one step)
        trainer.fit(BatchIterator(*_images(8), 8, rng=0), epochs=1)
    # Buckets of 90 values at most, backward order: the last Dense's bias and weight (10 +
    # 80), the first's bias (8), its weight (128): the first starts before its backward.
    expected = ["all-reduce of 90", "first layer's backward", "all-reduce of 8"]
    assert events == [*expected, "all-reduce of 128"]


class ThreadWorld(World):
    """Rank `rank` of `size` threads that sum through shared slots."""

    def __init__(self, rank: int, size: int, shared: dict) -> None:
        self.rank, self.size, self.shared = rank, size, shared

    def allreduce(self, array: np.ndarray, what: str) -> np.ndarray:
        slots, barrier = self.shared["slots"], self.shared["barrier"]
        slots[self.rank] = np.array(array, copy=True)
        barrier.wait()
        total = sum(slots[1:], slots[0].copy())
        barrier.wait()
        return total


def _run_ranks(size: int, work) -> list:
    """work(world) on `size` threads; their results in rank order."""
    shared = {"slots": [None] * size, "barrier": threading.Barrier(size, timeout=30)}
    results, errors = [None] * size, []

    def run(rank: int) -> None:
        try:
            results[rank] = work(ThreadWorld(rank, size, shared))
        except BaseException as err:  # reported below
            errors.append(err)
            shared["barrier"].abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def one_thread():
    before = get_num_threads()
    set_num_threads(1)  # the ranks are threads: npcnn's own stay out
    yield
    set_num_threads(before)


@pytest.mark.parametrize("size", [2, 3])
def test_synchronised_batch_norm_equals_one_process_on_the_whole_batch(size, one_thread) -> None:
    """The notebook network (BN+ReLU+pool fused, BN+ReLU fused, BatchNorm1D) in float64:
    K ranks on uneven shares of 7 images give one process's outputs, input and parameter
    gradients and running statistics."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 1, 28, 28))
    y = rng.integers(0, 10, 7)
    single = build_notebook_model(0, np.float64)
    loss = nn.CrossEntropyLoss()
    expected_out = single.forward(x, training=True)
    loss(expected_out, y)
    expected_dx = single.backward(loss.backward())
    expected = single.state_dict()

    def work(world: ThreadWorld):
        model, mine = build_notebook_model(0, np.float64), share(7, world.rank, world.size)
        rank_loss = nn.CrossEntropyLoss()
        with statistics_across(lambda v: world.allreduce(v, "bn")):
            out = model.forward(x[mine], training=True)
            rank_loss(out, y[mine])
            dx = model.backward(rank_loss.backward() * (len(y[mine]) / 7))
        grads = {n: world.allreduce(p.grad, "g") for n, p in model.named_parameters()}
        return out, dx, grads, model.state_dict()

    results = _run_ranks(size, work)
    np.testing.assert_allclose(np.concatenate([r[0] for r in results]), expected_out, atol=1e-10)
    np.testing.assert_allclose(np.concatenate([r[1] for r in results]), expected_dx, atol=1e-10)
    for name, p in single.named_parameters():
        np.testing.assert_allclose(results[0][2][name], p.grad, atol=1e-10, err_msg=name)
    for name, value in expected.items():
        for r in results:
            np.testing.assert_allclose(r[3][name], value, atol=1e-10, err_msg=name)


def test_a_world_of_one_trains_as_a_plain_trainer() -> None:
    images, labels = _images(70)
    runs = []
    for parallel in (None, DataParallel(SingleProcess(), sync_bn=True, check_every=1)):
        model = nn.Sequential(
            [nn.Flatten(), nn.Dense(16, 8, rng=0), nn.BatchNorm1D(8), nn.Dense(8, 10, rng=0)]
        )
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = Trainer(model, nn.CrossEntropyLoss(), opt, data_parallel=parallel)
        trainer.fit(BatchIterator(images, labels, 16, rng=3), epochs=2, validation=(images, labels))
        runs.append((model.state_dict(), trainer.history.epochs))
    for name, value in runs[0][0].items():
        np.testing.assert_array_equal(runs[1][0][name], value)
    assert [e["val_loss"] for e in runs[0][1]] == pytest.approx([e["val_loss"] for e in runs[1][1]])


class TwoRanksOneMind(SingleProcess):
    """A world of two in which the other rank always answers `other`."""

    size = 2

    def __init__(self, other) -> None:
        self.other = other

    def allgather(self, obj, what: str) -> list:
        return [obj, self.other(obj)]


def test_ranks_running_another_job_are_stopped_by_the_fingerprint() -> None:
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 10, rng=0)])
    train = ShardedBatches(BatchIterator(*_images(64), 16), 0, 2)

    def other_batch(fingerprint):
        return {**fingerprint, "global batch size": 32}

    with pytest.raises(
        DistributedError, match=r"rank 1 runs another job .* global batch size 32 against 16"
    ):
        DataParallel(TwoRanksOneMind(other_batch)).start(model, train, {"epoch": 0, "step": 0}, {})


def test_the_fingerprint_names_the_first_difference() -> None:
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 10, rng=0)])
    train = ShardedBatches(BatchIterator(*_images(64), 16), 0, 2)

    def other_model(fingerprint):
        state = [list(entry) for entry in fingerprint["state"]]
        state[1][1] = [10, 17]  # 1.weight
        return {**fingerprint, "state": state}

    with pytest.raises(
        DistributedError, match=r'state \["1.weight", \[10, 17\], "float32"\] against'
    ):
        DataParallel(TwoRanksOneMind(other_model)).check(model, train, {}, {})


def test_weights_that_drift_apart_stop_the_job() -> None:
    model = nn.Sequential([nn.Flatten(), nn.Dense(16, 10, rng=0)])
    parallel = DataParallel(TwoRanksOneMind(lambda checksum: checksum + 1), check_every=3)
    parallel._model = model  # (what start() would have set)
    parallel.check_weights(2)  # not a step to check
    with pytest.raises(
        DistributedError, match=r"after step 3 the weights of rank\(s\) \[1\] differ"
    ):
        parallel.check_weights(3)


def test_launchers_and_their_mistakes(monkeypatch) -> None:
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "SLURM_STEP_NUM_TASKS"):
        monkeypatch.delenv(name, raising=False)
    assert launcher_size() == (1, None)
    assert isinstance(init_world(False), SingleProcess)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert launcher_size() == (4, "OMPI_COMM_WORLD_SIZE")
    with pytest.raises(LaunchError, match=r"4 processes were started .* without --distributed"):
        init_world(False)


def test_commands_other_than_train_refuse_a_launcher_of_several(monkeypatch, capsys) -> None:
    from npcnn.cli.main import main

    monkeypatch.setenv("PMI_SIZE", "2")
    assert main(["summary", "--preset", "notebook"]) == 2
    assert "summary runs in one process, and 2 were started (PMI_SIZE=2)" in capsys.readouterr().err


def _without_mpi4py_or_launcher(monkeypatch) -> None:
    """mpi4py absent (as if not installed), no launcher, no MPI world joined yet."""
    from npcnn.distributed import launch

    monkeypatch.setitem(sys.modules, "mpi4py", None)
    monkeypatch.setattr(launch, "_active", None)
    for name in launch.LAUNCHER_SIZES:
        monkeypatch.delenv(name, raising=False)


def test_the_library_trains_in_one_process_without_mpi4py(monkeypatch) -> None:
    _without_mpi4py_or_launcher(monkeypatch)
    assert isinstance(init_world(False), SingleProcess)  # a world of one needs no MPI
    with pytest.warns(UserWarning, match=r"mpi4py is not installed: .*one process"):
        world = init_world(True)  # as the README's DataParallel example, without mpiexec
    assert isinstance(world, SingleProcess) and world.size == 1


def test_a_launcher_of_several_without_mpi4py_says_what_to_install(monkeypatch) -> None:
    _without_mpi4py_or_launcher(monkeypatch)
    monkeypatch.setenv("PMI_SIZE", "2")
    with pytest.raises(ImportError, match=r"pip install 'npcnn\[distributed\]'"):
        init_world(True)


def test_train_distributed_without_mpi4py_says_what_to_install(monkeypatch, capsys) -> None:
    from npcnn.cli.main import main

    _without_mpi4py_or_launcher(monkeypatch)
    assert main(["train", "--distributed", "--data", "sample", "--epochs", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("npcnn: error: ") and len(err.splitlines()) == 1, err
    assert "pip install 'npcnn[distributed]'" in err and "warning" not in err


def test_a_parameter_shared_by_two_layers_is_summed_after_both_backward_passes() -> None:
    events: list[str] = []
    runs = []
    for world in (None, RecordingWorld(events)):
        first, second = nn.Dense(16, 16, rng=0), nn.Dense(16, 16, rng=1)
        second.weight, second.bias = first.weight, first.bias  # tied: one Parameter each
        model = nn.Sequential([nn.Flatten(), first, nn.ReLU(), second, nn.Dense(16, 10, rng=0)])
        assert len(model.parameters()) == 4  # the tied pair once, and the head's two

        for tied in (first, second):

            def recorded_backward(dy, need_input_grad=True, own=tied.backward):
                events.append("tied layer's backward")
                return own(dy, need_input_grad)

            tied.backward = recorded_backward
        parallel = None if world is None else DataParallel(world, bucket_bytes=4 * 300)
        trainer = Trainer(
            model, nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.1),
            data_parallel=parallel,
        )  # fmt: skip
        events.clear()
        with nn.no_fusion():
            trainer.fit(BatchIterator(*_images(8), 8, rng=0), epochs=1)
        runs.append(model.state_dict())
    assert events[:2] == ["tied layer's backward"] * 2  # every sum starts after both
    assert all(e.startswith("all-reduce") for e in events[2:]) and len(events) > 2
    for name, value in runs[0].items():
        np.testing.assert_array_equal(runs[1][name], value)
