"""``npcnn train``'s run settings, resume rules, signals, run directories and pipes."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import npcnn
from npcnn.cli.main import main
from npcnn.cli.rundir import fresh_directory
from npcnn.training import load_checkpoint

pytest.importorskip("matplotlib")

QUICK = ["--limit-train", "96", "--limit-test", "32", "--no-progress"]


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def directories(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


@pytest.fixture(scope="module")
def first_epoch(tmp_path_factory) -> Path:
    """A 1-epoch run with settings far from the defaults; returns its checkpoint."""
    out = tmp_path_factory.mktemp("first") / "a"
    argv = ["train", "--epochs", "1", "--out", out, *QUICK, "--batch-size", "32"]
    argv += ["--augment", "flip", "--lr", "0.003", "--seed", "5"]
    assert main([str(a) for a in argv]) == 0
    return out / "checkpoint.npz"


@pytest.mark.parametrize("preset", ["small", "strong"])
def test_batch_size_full_means_full_batch_for_every_preset(tmp_path, capsys, preset) -> None:
    code, out, _ = run_cli(
        capsys, "train", "--preset", preset, "--batch-size", "full", "--epochs", "1",
        "--out", tmp_path / "r", "--limit-train", "48", "--limit-test", "16", "--no-progress",
    )  # fmt: skip
    assert code == 0, out
    assert "batch full (48)" in out and re.search(r"^iteration 1/1 ", out, re.M)
    assert json.loads((tmp_path / "r" / "run.json").read_text())["config"]["batch_size"] is None
    assert len(load_checkpoint(tmp_path / "r" / "checkpoint.npz")["history"].steps) == 1


def test_a_moved_checkpoint_resumes_with_its_own_settings(tmp_path, capsys, first_epoch) -> None:
    moved = tmp_path / "elsewhere" / "checkpoint.npz"
    moved.parent.mkdir()
    shutil.copy(first_epoch, moved)  # no run.json beside it
    code, out, _ = run_cli(capsys, "train", "--resume", moved, "--epochs", "2")
    assert code == 0, out
    banner = out.splitlines()[0]
    for part in ("resuming", "'small'", "96 train / 32 test", "batch 32", "lr 0.003", "flip"):
        assert part in banner, banner
    assert banner.endswith("seed 5")

    straight = tmp_path / "straight"
    argv = ["--epochs", "2", "--out", straight, *QUICK, "--batch-size", "32", "--augment", "flip"]
    assert run_cli(capsys, "train", *argv, "--lr", "0.003", "--seed", "5")[0] == 0
    a = npcnn.load(tmp_path / "elsewhere-resumed" / "model.npz").state_dict()
    b = npcnn.load(straight / "model.npz").state_dict()
    for name in b:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--preset", "notebook"], "--preset notebook differs from the checkpoint's preset"),
        (["--data", "mnist"], "add --allow-data-change"),
        (["--limit-train", "64"], "--limit-train differs from the checkpoint's"),
        (["--seed", "6"], "--seed 6 differs from the checkpoint's seed 5"),
        (["--lr", "0.1"], "--lr 0.1 differs from the checkpoint's 0.003; a resumed run continues"),
        (["--optimizer", "sgd"], "--optimizer sgd differs from the checkpoint's adam"),
        (["--weight-decay", "0.1"], "--weight-decay 0.1 differs from the checkpoint's 0.0"),
    ],
)
def test_resume_refuses_to_change_preset_data_or_seed(
    tmp_path, capsys, first_epoch, argv, fragment
) -> None:
    before = directories(first_epoch.parent.parent)
    code, out, err = run_cli(capsys, "train", "--resume", first_epoch, "--epochs", "2", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("npcnn: error: ") and fragment in err, err
    assert directories(first_epoch.parent.parent) == before


def test_allow_data_change_continues_on_other_data_and_records_it(
    tmp_path, capsys, first_epoch
) -> None:
    out_dir = tmp_path / "tuned"
    code, out, _ = run_cli(
        capsys, "train", "--resume", first_epoch, "--epochs", "2", "--limit-train", "64",
        "--allow-data-change", "--out", out_dir,
    )  # fmt: skip
    assert code == 0, out
    assert "64 train / 32 test" in out and "trained with limit-train 96" in out
    config = json.loads((out_dir / "run.json").read_text())["config"]
    assert config["data_changed_from"] == {"limit_train": 96}
    assert load_checkpoint(out_dir / "checkpoint.npz")["run"]["data_changed_from"] == {
        "limit_train": 96
    }


def _write_digits(data_dir: Path, first: int) -> None:
    """96 training and 40 test digits of the sample, from training digit `first` on."""
    from npcnn.data import load_dataset, write_idx

    sample = load_dataset("sample")
    data_dir.mkdir(exist_ok=True)
    for name, array in (
        ("train-images-idx3-ubyte.gz", sample.train_images[first : first + 96]),
        ("train-labels-idx1-ubyte.gz", sample.train_labels[first : first + 96].astype(np.uint8)),
        ("t10k-images-idx3-ubyte.gz", sample.test_images[:40]),
        ("t10k-labels-idx1-ubyte.gz", sample.test_labels[:40].astype(np.uint8)),
    ):
        write_idx(data_dir / name, array)


def _run_on_digits(tmp_path, capsys) -> tuple[Path, Path, list]:
    """(its data folder, its checkpoint, the resume command before --out) of an epoch
    trained on a folder of digits."""
    data_dir = tmp_path / "digits"
    _write_digits(data_dir, 0)
    argv = ["--data", data_dir, "--no-progress", "--out"]
    assert run_cli(capsys, "train", "--epochs", "1", *argv, tmp_path / "a")[0] == 0
    checkpoint = tmp_path / "a" / "checkpoint.npz"
    return (
        data_dir,
        checkpoint,
        ["train", "--resume", checkpoint, "--epochs", "2", "--no-progress", "--out"],
    )


def test_a_resume_on_replaced_files_counts_as_other_data(tmp_path, capsys) -> None:
    data_dir, checkpoint, resume = _run_on_digits(tmp_path, capsys)
    fingerprint = load_checkpoint(checkpoint)["run"]["data_fingerprint"]
    _write_digits(data_dir, 96)  # the same sizes, other digits
    code, out, err = run_cli(capsys, *resume, tmp_path / "b")
    assert code == 2 and out == "" and not (tmp_path / "b").exists()
    assert err == (
        f"npcnn: error: the data at {data_dir} differs from what the checkpoint's run trained "
        "on (same name): other contents; add --allow-data-change to continue training on it\n"
    )
    code, out, _ = run_cli(capsys, *resume, tmp_path / "c", "--allow-data-change")
    assert code == 0, out
    config = json.loads((tmp_path / "c" / "run.json").read_text())["config"]
    assert config["data_changed_from"] == {"contents": fingerprint}
    assert config["data_fingerprint"] != fingerprint


def test_a_resume_follows_its_data_folder_to_a_new_place(tmp_path, capsys) -> None:
    data_dir, checkpoint, resume = _run_on_digits(tmp_path, capsys)
    moved = data_dir.rename(tmp_path / "moved")
    code, out, err = run_cli(capsys, *resume, tmp_path / "b")
    assert code == 1 and out == "" and not (tmp_path / "b").exists()
    assert err == (
        f"npcnn: error: the data folder of the run in {checkpoint} ({data_dir}) no longer "
        "exists; pass --data DIR with its new place (the same files are recognised by their "
        "contents)\n"
    )
    code, out, err = run_cli(capsys, *resume, tmp_path / "c", "--data", moved)
    assert code == 0 and "other data" not in out, err
    config = json.loads((tmp_path / "c" / "run.json").read_text())["config"]
    assert config["data"] == str(moved) and "data_changed_from" not in config
    _write_digits(tmp_path / "other", 96)  # another folder, other digits: other data
    code, _, err = run_cli(capsys, *resume, tmp_path / "d", "--data", tmp_path / "other")
    assert code == 2 and f"(the run trained on {data_dir}): other contents" in err, err
    code, out, _ = run_cli(
        capsys, *resume, tmp_path / "e", "--data", tmp_path / "other", "--allow-data-change"
    )
    config = json.loads((tmp_path / "e" / "run.json").read_text())["config"]
    assert code == 0 and config["data_changed_from"]["data"] == str(data_dir)
    code, _, err = run_cli(capsys, *resume, tmp_path / "f", "--data", tmp_path / "typo")
    assert code == 1 and f"'{tmp_path / 'typo'}'" in err and "of the run" not in err, err


def test_a_checkpoint_without_a_data_fingerprint_keeps_refusing_another_folder(
    tmp_path, capsys
) -> None:
    # Checkpoints written before fingerprints cannot show that a folder is the same.
    from npcnn.training.checkpoint import CHECKPOINT_KEY

    _, checkpoint, resume = _run_on_digits(tmp_path, capsys)
    with np.load(checkpoint) as f:
        arrays = dict(f)
    record = json.loads(str(arrays[CHECKPOINT_KEY]))
    del record["run"]["data_fingerprint"]
    arrays[CHECKPOINT_KEY] = np.array(json.dumps(record))
    np.savez(checkpoint, **arrays)
    _write_digits(tmp_path / "copy", 0)
    code, _, err = run_cli(capsys, *resume, tmp_path / "b", "--data", tmp_path / "copy")
    assert code == 2 and "--data differs from the checkpoint's" in err, err


@pytest.mark.parametrize(
    ("key", "value"),
    [("lr", "0.1"), ("epochs", 2.5), ("batch_size", True), ("preset", 3), ("limit_test", [])],
)
def test_a_checkpoint_with_a_damaged_setting_is_one_line(
    tmp_path, capsys, first_epoch, key, value
) -> None:
    from npcnn.training.checkpoint import CHECKPOINT_KEY

    arrays = dict(np.load(first_epoch))
    record = json.loads(str(arrays[CHECKPOINT_KEY]))
    record["run"][key] = value
    arrays[CHECKPOINT_KEY] = np.array(json.dumps(record))
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **arrays)
    code, out, err = run_cli(capsys, "train", "--resume", damaged, "--out", tmp_path / "r")
    assert code == 1 and out == "" and not (tmp_path / "r").exists()
    assert err == f"npcnn: error: {damaged}: damaged run settings ({key!r} is {value!r})\n"


def test_a_failed_resume_leaves_no_directory(tmp_path, capsys, first_epoch) -> None:
    """A checkpoint that is damaged where only the trainer sees it: the error comes after
    the run directory was chosen and its run.json written."""
    arrays = dict(np.load(first_epoch))
    del arrays["__optimizer__.state.0.exp_avg"]
    damaged = tmp_path / "damaged.npz"
    np.savez(damaged, **arrays)
    out_dir = tmp_path / "never"
    code, _, err = run_cli(capsys, "train", "--resume", damaged, "--epochs", "2", "--out", out_dir)
    assert code == 1 and err.count("\n") == 1, err
    assert "damaged checkpoint" in err and "lacks exp_avg" in err
    assert not out_dir.exists()


def test_schedule_parameters_need_the_step_schedule(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--gamma", "0.5")
    assert code == 2 and "--gamma applies to --schedule step, not none" in err


def test_resuming_a_finished_run_says_there_is_nothing_to_train(
    tmp_path, capsys, first_epoch
) -> None:
    before = directories(first_epoch.parent.parent)
    code, _, err = run_cli(capsys, "train", "--resume", first_epoch)
    assert code == 1
    assert "nothing to train" in err and "completed 1 of 1 epochs" in err and "--epochs" in err
    assert directories(first_epoch.parent.parent) == before


def test_a_resume_with_more_epochs_re_plans_the_cosine_schedule(tmp_path, capsys) -> None:
    args = ["--schedule", "cosine", "--lr", "0.002", *QUICK]
    assert run_cli(capsys, "train", "--epochs", "2", "--out", tmp_path / "a", *args)[0] == 0
    resume = ["--resume", tmp_path / "a" / "checkpoint.npz", "--epochs", "4", "--no-progress"]
    code, out, _ = run_cli(capsys, "train", *resume, "--out", tmp_path / "b")
    assert code == 0
    assert "note: the cosine schedule now anneals to 0 over 4 epochs (it was planned for 2)" in out
    epochs = json.loads((tmp_path / "b" / "log.json").read_text())["epochs"]
    planned = [0.001 * (1 + np.cos(np.pi * t / 4)) for t in range(4)]
    np.testing.assert_allclose([e["lr"] for e in epochs], [0.002, 0.001, *planned[2:]], atol=1e-12)


def test_allow_data_change_needs_resume(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--allow-data-change")
    assert code == 2 and "--allow-data-change applies only with --resume" in err


def test_abbreviated_options_are_refused(capsys) -> None:
    code, _, err = run_cli(capsys, "train", "--epoch", "1")
    assert code == 2 and "unrecognized arguments: --epoch" in err


def test_two_claims_of_one_directory_get_two_directories(tmp_path) -> None:
    # Nothing is written between the two claims, as when two runs start at once.
    first = fresh_directory(tmp_path / "out")
    second = fresh_directory(tmp_path / "out")
    assert first == tmp_path / "out" and second == tmp_path / "out-2"


def _train_process(out: Path, *extra: str, **kwargs) -> subprocess.Popen:
    argv = [sys.executable, "-m", "npcnn", "train", "--out", str(out), *QUICK, *extra]
    return subprocess.Popen(argv, text=True, **kwargs)


def test_two_runs_started_at_once_write_two_directories(tmp_path) -> None:
    procs = [
        _train_process(tmp_path / "same", "--epochs", "1", stdout=subprocess.PIPE) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    used = sorted(re.search(r"^run directory: (.+)$", o, re.M).group(1) for o in outputs)
    assert used == [str(tmp_path / "same"), str(tmp_path / "same-2")]
    for directory in used:
        assert (Path(directory) / "model.npz").is_file()


def test_sigterm_saves_a_checkpoint_and_stops_like_ctrl_c(tmp_path) -> None:
    out_dir = tmp_path / "run"
    proc = _train_process(out_dir, "--epochs", "50", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if re.match(r"epoch +1/50 ", line):
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    message = err.strip().splitlines()[-1]
    assert message.startswith("npcnn: stopped by SIGTERM after"), err
    checkpoint = Path(message.rsplit(" ", 1)[1])
    assert load_checkpoint(checkpoint)["epoch"] >= 1 and not (out_dir / "model.npz").exists()


@pytest.mark.parametrize("merge_stderr", [False, True])
def test_output_piped_into_a_reader_that_exits_early(tmp_path, merge_stderr) -> None:
    """``npcnn train | head -1`` (and ``2>&1 | head -1``): training goes on, files written."""
    stderr = subprocess.STDOUT if merge_stderr else subprocess.PIPE
    proc = _train_process(tmp_path / "r", "--epochs", "3", stdout=subprocess.PIPE, stderr=stderr)
    assert proc.stdout.readline().startswith("npcnn ")
    proc.stdout.close()  # the reader goes away, as head does
    err = "" if merge_stderr else proc.stderr.read()
    assert proc.wait(timeout=120) == 0, err
    assert "Broken pipe" not in err and "Traceback" not in err
    assert (tmp_path / "r" / "model.npz").is_file() and (tmp_path / "r" / "metrics.json").is_file()


def test_every_command_survives_a_closed_pipe(tmp_path) -> None:
    argv = [sys.executable, "-m", "npcnn", "summary", "--preset", "strong"]
    # A pipe that is closed before the command writes anything at all.
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == ""


def test_a_killed_checkpoint_write_is_cleaned_when_the_run_is_resumed(
    tmp_path, capsys, first_epoch
) -> None:
    from test_files import start_slow_writer

    run_dir = tmp_path / "run"
    shutil.copytree(first_epoch.parent, run_dir)
    writer, tmp = start_slow_writer(run_dir / "checkpoint.npz")
    writer.kill()  # killed between writing the temporary file and renaming it
    writer.wait()
    assert tmp.exists()
    code, out, _ = run_cli(capsys, "train", "--resume", run_dir / "checkpoint.npz", "--epochs", "2")
    assert code == 0, out
    assert not tmp.exists() and not [p for p in run_dir.iterdir() if p.name.startswith(".")]


def test_sigterm_during_the_final_report_says_how_to_write_it(tmp_path) -> None:
    out_dir = tmp_path / "run"
    proc = _train_process(out_dir, "--epochs", "1", stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for line in proc.stdout:
            if re.match(r"epoch 1/1 ", line):  # the report (evaluation, plots) starts now
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert err.count("\n") == 1 and "before its report was complete" in err, err
    assert f"npcnn evaluate {out_dir / 'model.npz'}" in err and (out_dir / "model.npz").is_file()
    assert npcnn.load(out_dir / "model.npz") is not None


def test_a_resume_names_its_directory_as_the_checkpoint_was_named(
    tmp_path, capsys, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run_cli(capsys, "train", "--epochs", "1", *QUICK, "--out", "runs/a")[0] == 0
    code, out, _ = run_cli(capsys, "train", "--resume", "runs/a/checkpoint.npz", "--epochs", "2")
    assert code == 0 and "\nrun directory: runs/a-resumed\n" in out
    monkeypatch.chdir(tmp_path / "runs" / "a")  # a bare file name: its folder has a name
    code, out, _ = run_cli(capsys, "train", "--resume", "checkpoint.npz", "--epochs", "2")
    assert code == 0 and f"\nrun directory: {tmp_path / 'runs' / 'a-resumed-2'}\n" in out
