"""The settings of a training run: the command line, else the resumed run's, else the preset's.

A run's settings (``config``) are the preset, the data set and its limits,
the seed and every recipe field. They are written to run.json and into
every checkpoint, so that a checkpoint alone says how to continue its run.
A resume keeps its preset, seed and data: asking for another one is
refused, except other data with ``--allow-data-change`` (fine-tuning),
which the run records under ``data_changed_from``. The data's contents are
recorded too (``data_fingerprint``): a data set or directory whose files
were replaced counts as other data.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from npcnn.cli.errors import CLIError, UsageError
from npcnn.models import DEFAULT_PRESET

FULL_BATCH = "full"

#: Options that override the preset's recipe (argparse default None = "not given").
RECIPE_OPTIONS = (
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_size",
    "gamma",
    "limit_train",
    "limit_test",
    "recompute_bn",
    "augment",
    "label_smoothing",
    "tta",
)
#: Recipe fields that the command line calls limit_*.
RECIPE_FIELD = {"limit_train": "train_limit", "limit_test": "test_limit"}
#: The settings that say which data a run trains on.
DATA_SETTINGS = ("data", "num_classes", "limit_train", "limit_test")
#: Settings that live in the optimiser's and the schedule's saved state: a resumed
#: run continues with them as saved, so another value on the command line is refused.
OPTIMIZER_SETTINGS = (
    "optimizer",
    "lr",
    "momentum",
    "weight_decay",
    "schedule",
    "step_size",
    "gamma",
)


def previous_config(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The settings of the run that wrote ``checkpoint``: recorded in the checkpoint
    itself, else (checkpoints of older versions) in the run.json beside it."""
    from npcnn.cli.common import read_run_record

    recorded = checkpoint.get("run")
    if isinstance(recorded, dict) and "preset" in recorded:
        return check_recorded_settings(recorded, path)
    config = (read_run_record(path) or {}).get("config")
    if isinstance(config, dict) and "preset" in config:
        return check_recorded_settings(config, path)
    raise CLIError(
        f"{path} does not record its run's settings (an older npcnn wrote it) and has no "
        "run.json beside it: move it back next to its run.json"
    )


def check_recorded_settings(settings: dict[str, Any], path: Path) -> dict[str, Any]:
    """``settings`` if every recipe setting, the preset, seed and data set it records has
    the type the recipe declares (a float lr, an int or None batch size, ...); else a
    CLIError naming the first damaged one (a crafted or damaged file)."""
    import dataclasses

    from npcnn.models.recipe import Recipe
    from npcnn.text import short_repr

    option = {field: name for name, field in RECIPE_FIELD.items()}
    declared = {option.get(f.name, f.name): str(f.type) for f in dataclasses.fields(Recipe)}
    declared.update(preset="str", data="str", seed="int", num_classes="int | None")
    for name, kind in declared.items():
        if name in settings and not _has_type(settings[name], kind):
            raise CLIError(
                f"{path}: damaged run settings ({name!r} is {short_repr(settings[name])})"
            )
    return settings


def _has_type(value: Any, declared: str) -> bool:
    """Whether ``value`` fits a declared type such as "float", "int | None" or "bool"
    (an int fits a float; a bool fits only "bool")."""
    kinds = declared.split(" | ")
    if value is None or isinstance(value, bool):
        return type(value).__name__.replace("NoneType", "None") in kinds
    python = {"float": (int, float), "int": (int,), "str": (str,)}
    return any(isinstance(value, python.get(kind, ())) for kind in kinds)


def resolve_config(args: argparse.Namespace, previous: dict[str, Any] | None) -> dict[str, Any]:
    """The run's settings: explicit options, else the resumed run's, else the preset's recipe.

    Raises UsageError for a resume that would change its preset, seed or
    (without ``--allow-data-change``) its data, and for bad combinations.
    """
    from npcnn.models import get_preset

    if getattr(args, "allow_data_change", False) and previous is None:
        raise UsageError("--allow-data-change applies only with --resume")
    previous = previous or {}
    if previous:
        _check_resume_keeps(args, previous)
    preset = get_preset(args.preset or previous.get("preset") or DEFAULT_PRESET)
    config: dict[str, Any] = {
        "preset": preset.name,
        "data": data_argument(args.data) if args.data else previous.get("data", "sample"),
        "num_classes": args.num_classes or previous.get("num_classes"),
        "seed": args.seed if args.seed is not None else previous.get("seed", 0),
    }
    for name in RECIPE_OPTIONS:
        given = getattr(args, name)
        if given is not None:
            config[name] = None if given == FULL_BATCH else given
        elif name in previous:
            config[name] = previous[name]
        else:
            config[name] = getattr(preset.recipe, RECIPE_FIELD.get(name, name))
    changed = {k: previous[k] for k in DATA_SETTINGS if k in previous and previous[k] != config[k]}
    if "data" in changed and is_folder_move(previous, config["data"]):
        del changed["data"]  # a data folder moved (its contents are checked on loading)
    if changed:
        config["data_changed_from"] = changed
    elif "data_changed_from" in previous:
        config["data_changed_from"] = previous["data_changed_from"]
    if config["momentum"] and config["optimizer"] != "sgd":
        raise UsageError(f"--momentum applies to sgd only, not {config['optimizer']}")
    for name in ("step_size", "gamma"):
        if getattr(args, name) is not None and config["schedule"] != "step":
            option = "--" + name.replace("_", "-")
            raise UsageError(f"{option} applies to --schedule step, not {config['schedule']}")
    return config


def _check_resume_keeps(args: argparse.Namespace, previous: dict[str, Any]) -> None:
    """Refuse options that would silently turn a resumed run into another run."""
    if args.preset is not None and args.preset != previous["preset"]:
        raise UsageError(
            f"--preset {args.preset} differs from the checkpoint's preset "
            f"{previous['preset']!r}; a resumed run keeps its network (start a new run instead)"
        )
    if args.seed is not None and args.seed != previous.get("seed"):
        raise UsageError(
            f"--seed {args.seed} differs from the checkpoint's seed {previous.get('seed')}; "
            "a resumed run continues its random states (start a new run instead)"
        )
    for name in OPTIMIZER_SETTINGS:
        given = getattr(args, name)
        if given is not None and name in previous and given != previous[name]:
            option = "--" + name.replace("_", "-")
            raise UsageError(
                f"{option} {given} differs from the checkpoint's {previous[name]}; a resumed "
                "run continues its optimiser and schedule as saved (start a new run instead)"
            )
    given = {
        "data": data_argument(args.data) if args.data else None,
        "num_classes": args.num_classes,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
    }
    differs = [k for k, v in given.items() if v is not None and v != previous.get(k)]
    if is_folder_move(previous, given["data"]):
        differs.remove("data")  # the same files elsewhere? `check_same_data` decides
    if differs and not getattr(args, "allow_data_change", False):
        was = ", ".join(f"{k.replace('_', '-')} {_shown(previous.get(k))}" for k in differs)
        raise UsageError(
            f"--{differs[0].replace('_', '-')} differs from the checkpoint's ({was}); "
            "add --allow-data-change to continue training on other data"
        )


def is_folder_move(previous: dict[str, Any], now: str | None) -> bool:
    """Whether a resumed run's data goes from one folder to another (neither a named data
    set) whose contents can be compared: its checkpoint records their fingerprint (those
    written before fingerprints were do not, and such a move stays a change of data)."""
    from npcnn.data import DATASETS

    before = previous.get("data")
    if not (before and now and before != now and previous.get("data_fingerprint")):
        return False
    return not {before, now} & set(DATASETS)


def check_data_folder_exists(
    config: dict[str, Any], resumed: Path | None, given: str | None
) -> None:
    """Refuse to resume from the run's data folder (no --data `given`) when it is gone,
    saying how to name its new place."""
    from npcnn.cli.common import gone_data_folder

    state = None if resumed is None or given is not None else gone_data_folder(config["data"])
    if state is not None:
        raise CLIError(
            f"the data folder of the run in {resumed} ({config['data']}) {state}; pass --data "
            "DIR with its new place (the same files are recognised by their contents)"
        )


def _shown(value: Any) -> str:
    """A setting as the command line would say it: None (no limit) is "all"."""
    return "all" if value is None else str(value)


def data_argument(name: str) -> str:
    """A data set's name (lower case); a directory as an absolute path, so the record
    stays valid from anywhere; anything else as given (loading it reports the error)."""
    from npcnn.data import DATASETS

    key = name.strip().lower().replace("_", "-")
    if key in DATASETS:
        return key
    return str(Path(name).resolve()) if Path(name).is_dir() else name


def check_something_to_train(checkpoint: dict[str, Any], epochs: int, path: Path) -> None:
    """Refuse to resume a run that has already completed ``epochs`` epochs."""
    done = checkpoint["epoch"]
    if done >= epochs:
        raise CLIError(
            f"nothing to train: {path} has completed {done} of {epochs} epochs; pass "
            f"--epochs N with N > {done} to train further, or see its results with "
            f"'npcnn evaluate {path}'"
        )


def check_same_data(
    args: argparse.Namespace, config: dict[str, Any], previous: dict[str, Any] | None, data: Any
) -> None:
    """Record the data's fingerprint in ``config``; refuse a resume whose data (same name
    or directory) no longer holds what the run trained on, unless --allow-data-change."""
    from npcnn.data.fingerprint import fingerprint

    config["data_fingerprint"] = fingerprint(data)
    before = (previous or {}).get("data_fingerprint")
    if before is None or before == config["data_fingerprint"]:
        return
    assert previous is not None
    moved = is_folder_move(previous, config["data"])
    if not getattr(args, "allow_data_change", False):
        where = f" (the run trained on {previous['data']})" if moved else " (same name)"
        raise UsageError(
            f"the data at {config['data']} differs from what the checkpoint's run trained on"
            f"{where}: other contents; add --allow-data-change to continue training on it"
        )
    moved_from = {"data": previous["data"]} if moved else {}
    settings = [k for k in DATA_SETTINGS if not (moved and k == "data")]
    if all(previous.get(k, config[k]) == config[k] for k in settings):
        config["data_changed_from"] = {"contents": before, **moved_from}
    else:  # (the settings that differ are recorded already)
        config["data_changed_from"] = {**config["data_changed_from"], **moved_from}
