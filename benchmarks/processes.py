"""How a benchmark runs each framework in a fresh process and reads its result back.

The parent starts ``python BENCHMARK --worker FRAMEWORK ...``; the worker prints
one line, ``MARKER {json}``, after whatever else it prints; the parent takes the
last such line. A worker that fails, or prints none, raises with its stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

MARKER = "BENCHMARK_RESULT "


def print_result(result: dict[str, Any]) -> None:
    """The worker's side: its result as the marked line."""
    print(MARKER + json.dumps(result), flush=True)


def run_worker(cmd: list[str], what: str) -> dict[str, Any]:
    """The parent's side: run `cmd` and return the result it printed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode or not lines:
        raise RuntimeError(f"{what} worker failed:\n{proc.stderr}")
    return json.loads(lines[-1][len(MARKER) :])


def write_json(path: Path, result: dict[str, Any]) -> None:
    """Write `result` to `path` (its folder made if needed) and say so."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


def cpu_model() -> str:
    """The processor's name as Linux reports it ("model name" in /proc/cpuinfo), else
    what the platform module says: results depend on it as much as on the code."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def side_by_side_parser(
    description: str, frameworks: tuple[str, ...], seconds: float, json_path: Path
) -> argparse.ArgumentParser:
    """The options every side-by-side benchmark takes, and the hidden ``--worker``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--repeats", type=int, default=3, help="rounds, each running every framework")
    p.add_argument("--seconds", type=float, default=seconds, help="timed seconds per measurement")
    p.add_argument("--json", type=Path, default=json_path)
    p.add_argument("--worker", choices=frameworks, help=argparse.SUPPRESS)
    return p
