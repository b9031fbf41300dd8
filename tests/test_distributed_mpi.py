"""Data-parallel training on real MPI ranks: ``mpiexec -n 2`` of the venv's MPI (the
``distributed`` extra) on this machine. Skipped, with the reason, without it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from npcnn.cli.common import available_cores

pytest.importorskip("mpi4py", reason="the 'distributed' extra (mpi4py, mpich) is not installed")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable))
if MPIEXEC is None:
    pytest.skip("no mpiexec beside this Python (the mpich wheel)", allow_module_level=True)

HERE = Path(__file__).parent / "distributed"
NPCNN = [sys.executable, "-m", "npcnn"]
# One thread per rank, as the command line would choose on 2 cores.
ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}


def _run(argv: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=ENV, **kwargs)


def _train_steps(tmp: Path, name: str, ranks: int, *args: str) -> dict[str, np.ndarray]:
    out = tmp / f"{name}.npz"
    script = [sys.executable, str(HERE / "train_steps.py"), str(out), *args]
    argv = script if ranks == 0 else [MPIEXEC, "-n", str(ranks), *script]
    done = _run(argv)
    assert done.returncode == 0, done.stderr
    return dict(np.load(out))


@pytest.mark.parametrize(
    ("net", "examples", "dtype", "tolerance"),
    [
        ("notebook", "640", "float32", 1e-5),
        ("residual", "640", "float32", 1e-5),
        # 643 = 20 * 32 + 3: a 21st batch of 3, shared 1/2 (the BatchNorm1D of rank 0
        # sees one example): exact in float64, where float32's rounding grows chaotically.
        ("notebook", "643", "float64", 1e-10),
    ],
)
def test_two_ranks_with_sync_bn_follow_one_process(net, examples, dtype, tolerance, tmp_path):
    """SGD with momentum at global batch 32 for an epoch (20 or 21 steps): every weight,
    running statistic and batch loss as one process's, to `tolerance` relative (and
    a tenth of it absolute); only the order of the sums differs."""
    args = (net, "20", "32", examples)
    one = _train_steps(tmp_path, "one", 0, *args, "single", dtype)
    two = _train_steps(tmp_path, "two", 2, *args, "sync", dtype)
    assert one.keys() == two.keys()
    for name, value in one.items():
        np.testing.assert_allclose(
            two[name], value, rtol=tolerance, atol=tolerance / 10, err_msg=name
        )


def test_per_rank_statistics_keep_the_weights_identical_but_not_the_trajectory(tmp_path) -> None:
    """Without --sync-bn each rank normalises by its own share (PyTorch DDP): another
    trajectory than one process's, while the weights' checksums (every 5 steps) agree."""
    one = _train_steps(tmp_path, "one", 0, "notebook", "20", "32", "640", "single")
    two = _train_steps(tmp_path, "two", 2, "notebook", "20", "32", "640", "local")
    # The same weights at the start; the shares' own statistics give another first loss.
    assert one["losses"][0] == pytest.approx(two["losses"][0], rel=0.05)
    assert one["losses"][0] != pytest.approx(two["losses"][0], rel=1e-4)
    assert not np.allclose(one["0.weight"], two["0.weight"], rtol=1e-4, atol=1e-5)


def _cli_train(out: Path, *extra: str) -> list[str]:
    return [*NPCNN, "train", "--preset", "notebook", "--out", str(out), "--no-progress", *extra]


def test_the_command_line_with_sync_bn_gives_one_process_s_run(tmp_path) -> None:
    args = ("--epochs", "2", "--batch-size", "100")
    # One thread, as each rank has: a BLAS splitting its sums over two threads rounds
    # otherwise, and float32's rounding grows over two epochs beyond the tolerance.
    single = _run(_cli_train(tmp_path / "one", *args, "--threads", "1"))
    assert single.returncode == 0, single.stderr
    argv = [MPIEXEC, "-n", "2", *_cli_train(tmp_path / "two", *args, "--distributed", "--sync-bn")]
    two = _run(argv)
    assert two.returncode == 0, two.stderr
    assert two.stdout.count("run directory:") == 1  # rank 0 alone speaks
    assert "distributed: 2 processes" in two.stdout
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two")]
    assert metrics[1]["test"]["loss"] == pytest.approx(metrics[0]["test"]["loss"], rel=1e-4)
    assert metrics[1]["test"]["correct"] == metrics[0]["test"]["correct"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one", "two"]  # one run directory


def _processes_under(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [int(c) for c in children.read_text().split()] if children.exists() else []
    return found + [g for c in found for g in _processes_under(c)]


def test_a_killed_rank_ends_the_job_and_its_checkpoint_resumes_on_one_process(tmp_path) -> None:
    out = tmp_path / "run"
    argv = [
        MPIEXEC,
        "-n",
        "2",
        *_cli_train(out, "--epochs", "40", "--batch-size", "50", "--distributed"),
    ]
    job = subprocess.Popen(
        argv,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checkpoint = out / "checkpoint.npz"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.1)
    assert checkpoint.exists(), "no checkpoint after the first epoch"
    ranks = [p for p in _processes_under(job.pid) if "npcnn" in _cmdline(p)]
    assert len(ranks) == 2
    os.kill(ranks[-1], signal.SIGKILL)
    killed = time.monotonic()
    job.communicate(timeout=30)
    assert job.returncode != 0
    assert time.monotonic() - killed < 30
    resumed = _run(
        [*NPCNN, "train", "--resume", str(checkpoint), "--epochs", "41", "--no-progress"]
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout


@pytest.mark.parametrize(
    ("rank_1", "message"),
    [
        (["--data", "MISSING"], "MISSING"),  # its data cannot be read
        (["--batch-size", "0"], "argument --batch-size"),  # refused before joining MPI
        (None, "2 processes were started (PMI_SIZE=2) without --distributed"),
    ],
    ids=["unreadable-data", "bad-option", "without-distributed"],
)
def test_a_rank_that_fails_ends_the_job_with_its_message(rank_1, message, tmp_path) -> None:
    """Rank 1 alone fails (mpiexec's MPMD form gives it its own command line); rank 0
    must not wait for it (inside MPI_Init or a collective): the job ends at once."""
    common = ["--epochs", "1", "--no-progress", "--out", str(tmp_path / "run")]
    second = [*common, *(rank_1 or [])] + ([] if rank_1 is None else ["--distributed"])
    second = [str(tmp_path / "missing") if a == "MISSING" else a for a in second]
    argv = [
        MPIEXEC, "-n", "1", *NPCNN, "train", *common, "--distributed", ":",
        "-n", "1", *NPCNN, "train", *second,
    ]  # fmt: skip
    start = time.monotonic()
    done = _run(argv, timeout=60)
    assert done.returncode != 0 and time.monotonic() - start < 30
    assert "npcnn: error: rank 1 of 2: " in done.stderr
    assert message.replace("MISSING", "missing") in done.stderr


def test_sigterm_to_one_rank_before_training_ends_the_job_at_once(tmp_path) -> None:
    # No other rank knows of this stop: they would wait in their first collective
    # for --collective-timeout (600 s by default).
    common = ["train", "--epochs", "1", "--no-progress", "--distributed"]
    common += ["--out", str(tmp_path / "run")]
    stopped = [sys.executable, str(HERE / "sigterm_while_loading.py")]
    argv = [MPIEXEC, "-n", "1", *NPCNN, *common, ":", "-n", "1", *stopped, *common]
    start = time.monotonic()
    done = _run(argv, timeout=90)
    assert done.returncode != 0 and time.monotonic() - start < 40, done.stderr
    assert "npcnn: stopped by SIGTERM" in done.stderr


def test_ranks_running_different_jobs_stop_at_the_start(tmp_path) -> None:
    common = ["--epochs", "1", "--no-progress", "--distributed", "--out", str(tmp_path / "run")]
    argv = [
        MPIEXEC, "-n", "1", *NPCNN, "train", *common, ":",
        "-n", "1", *NPCNN, "train", *common, "--limit-train", "500",
    ]  # fmt: skip
    done = _run(argv, timeout=60)
    assert done.returncode != 0
    assert "rank 1 runs another job than rank 0: steps per epoch 8 against 32" in done.stderr


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("stall", "waited 2 s in the test's barrier (the fault test)"),
        ("raise", "rank 1 of 2 failed"),
    ],
)
def test_a_stalled_or_failed_rank_never_hangs_the_job(fault, message) -> None:
    start = time.monotonic()
    done = _run([MPIEXEC, "-n", "2", sys.executable, str(HERE / "faults.py"), fault], timeout=60)
    assert done.returncode != 0 and time.monotonic() - start < 20
    assert message in done.stderr


@pytest.mark.skipif(
    not Path("/usr/bin/mpiexec.openmpi").exists(),
    reason="Open MPI (Debian's openmpi-bin) is not installed",
)
def test_another_mpi_s_launcher_is_named(tmp_path) -> None:
    argv = [
        "/usr/bin/mpiexec.openmpi",
        "--allow-run-as-root",
        "--oversubscribe",
        "-n",
        "2",
        *_cli_train(tmp_path / "r", "--distributed"),
    ]
    done = _run(argv, timeout=60)
    assert done.returncode != 0
    assert "started by Open MPI's mpiexec, but mpi4py uses MPICH" in done.stderr
    assert not (tmp_path / "r").exists()


def test_mpiexec_without_distributed_is_named(tmp_path) -> None:
    done = _run([MPIEXEC, "-n", "2", *_cli_train(tmp_path / "r", "--epochs", "1")], timeout=60)
    assert done.returncode != 0
    assert "2 processes were started (PMI_SIZE=2) without --distributed" in done.stderr
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("target", ["mpiexec", "one rank"])
def test_sigterm_stops_every_rank_at_one_step_with_a_checkpoint(target, tmp_path) -> None:
    """SIGTERM to mpiexec (which passes it on to every rank) or to one rank alone: every
    rank stops after the same step, rank 0 writes the checkpoint and says SIGTERM."""
    out = tmp_path / "run"
    argv = _cli_train(out, "--epochs", "40", "--batch-size", "50", "--distributed")
    job = subprocess.Popen(
        [MPIEXEC, "-n", "2", *argv],
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not (out / "checkpoint.npz").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = [p for p in _processes_under(job.pid) if "npcnn" in _cmdline(p)]
    os.kill(job.pid if target == "mpiexec" else ranks[-1], signal.SIGTERM)
    _, err = job.communicate(timeout=30)
    assert job.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM" in err and "checkpoint saved" in err
    resumed = _run([*NPCNN, "train", "--resume", str(out / "checkpoint.npz"), "--no-progress"])
    assert resumed.returncode == 0, resumed.stderr


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return ""


def test_shares_too_small_for_batch_norm_are_refused_before_anything_is_written(tmp_path):
    argv = _cli_train(tmp_path / "r", "--batch-size", "3", "--epochs", "1", "--distributed")
    done = _run([MPIEXEC, "-n", "2", *argv], timeout=60)
    assert done.returncode == 1
    # Every rank meets the mistake, so none aborts the job: each one's line comes
    # through, and no MPI_Abort message follows them.
    for rank in (0, 1):
        assert f"rank {rank} of 2: the batch size (3) is the global one and must" in done.stderr
    assert "must give each of the 2 processes 2 examples" in done.stderr
    assert "MPI_Abort" not in done.stderr
    assert not (tmp_path / "r").exists()


def test_a_resume_keeps_sync_bn_and_the_records_say_how_the_run_was_spread(tmp_path) -> None:
    args = ("--epochs", "1", "--batch-size", "100", "--distributed")
    first = _run([MPIEXEC, "-n", "2", *_cli_train(tmp_path / "a", *args, "--sync-bn")])
    assert first.returncode == 0, first.stderr
    resume = ["--resume", str(tmp_path / "a" / "checkpoint.npz"), "--epochs", "2"]
    again = _run([MPIEXEC, "-n", "3", *_cli_train(tmp_path / "b", *resume, "--distributed")])
    assert again.returncode == 0, again.stderr
    assert "distributed: 3 processes" in again.stdout and "global (--sync-bn)" in again.stdout
    oversubscribed = available_cores() < 3
    assert ("npcnn: warning: 3 processes on this host" in again.stderr) == oversubscribed
    record = json.loads((tmp_path / "b" / "run.json").read_text())["config"]["distributed"]
    assert record["processes"] == 3 and record["sync_bn"] is True and "MPICH" in record["mpi"]


def test_the_example_script_trains_on_two_ranks(tmp_path) -> None:
    script = Path(__file__).parents[1] / "examples" / "train_distributed.py"
    done = _run([MPIEXEC, "-n", "2", sys.executable, str(script)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 process(es): wrote distributed-model.npz" in done.stdout
    assert done.stdout.count("epoch 2/2") == 1  # rank 0's line only
    assert (tmp_path / "distributed-model.npz").exists()
