"""Atomic writes: all or nothing, with the permissions of an ordinary new file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.files import STALE_AFTER, atomic_path, atomic_write_text, temporary_name


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "log.txt", "hello")
        npcnn.save(nn.Sequential([nn.Dense(2, 2, rng=0)]), tmp_path / "model.npz")
    finally:
        os.umask(old)
    for name in ("log.txt", "model.npz"):
        assert os.stat(tmp_path / name).st_mode & 0o777 == 0o644


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "model.npz"
    atomic_write_text(target, "previous")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_save_then_load_through_the_atomic_path(tmp_path):
    model = nn.Sequential([nn.Dense(3, 2, rng=1)])
    npcnn.save(model, tmp_path / "m.npz")
    x = np.ones((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(npcnn.load(tmp_path / "m.npz").forward(x), model.forward(x))


# A writer that is killed (or still busy) between writing its temporary file and renaming it.
_SLOW_WRITER = """
import sys, time
from npcnn.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a model")
    print(tmp, flush=True)
    time.sleep(60)
"""


def start_slow_writer(target) -> tuple[subprocess.Popen, Path]:
    """A process writing `target` atomically, stopped before the rename; (it, its temporary)."""
    env = {**os.environ, "PYTHONPATH": str(Path(npcnn.__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.parent == target.parent and tmp.read_bytes() == b"half a model"
    return proc, tmp


def test_a_killed_write_leaves_no_temporary_after_the_next_write(tmp_path):
    target = tmp_path / "model.npz"
    proc, tmp = start_slow_writer(target)
    proc.kill()
    proc.wait()
    assert tmp.exists()  # nothing in the killed process could remove it
    assert tmp.name.startswith(".model.npz.tmp-")  # hidden, and says whose it is
    atomic_write_text(target, "complete")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]
    assert target.read_text() == "complete"


def test_a_live_writer_keeps_its_temporary(tmp_path):
    target = tmp_path / "model.npz"
    proc, tmp = start_slow_writer(target)
    try:
        atomic_write_text(target, "meanwhile")
        assert tmp.exists()
    finally:
        proc.kill()
        proc.wait()


def test_stale_temporaries_in_the_directory_are_removed(tmp_path):
    target = tmp_path / "model.npz"
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()  # its process id now belongs to no process
    mine = temporary_name(target).name  # .model.npz.tmp-HOST-PID-RANDOM
    host = mine.split("-")[1]
    names = {
        "dead": f".model.npz.tmp-{host}-{finished.pid}-0a1b2c3d",
        "alive": f".model.npz.tmp-{host}-{os.getppid()}-0a1b2c3d",
        "other host, recent": ".model.npz.tmp-elsewhere-4242-0a1b2c3d",
        "other host, old": ".model.npz.tmp-faraway-4242-0a1b2c3d",
        "another target": f".log.json.tmp-{host}-{finished.pid}-0a1b2c3d",
    }
    for name in names.values():
        (tmp_path / name).write_text("partial")
    old = time.time() - STALE_AFTER - 60
    os.utime(tmp_path / names["other host, old"], (old, old))
    atomic_write_text(target, "complete")
    kept = {p.name for p in tmp_path.iterdir()}
    assert kept == {"model.npz"} | {names[k] for k in ("alive", "other host, recent")}
