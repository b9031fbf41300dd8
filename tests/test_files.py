"""Atomic writes: all or nothing, with the permissions of an ordinary new file."""

from __future__ import annotations

import os

import numpy as np
import pytest

import npcnn
from npcnn import nn
from npcnn.files import atomic_path, atomic_write_text


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
