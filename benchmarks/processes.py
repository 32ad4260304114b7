"""Timing whole processes for the benchmarks: an environment that imports a given checkout
of bgcodec, and the wall time of one command in it."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout_env(repo: Path = REPO) -> dict[str, str]:
    """This process's environment with ``repo`` first on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")]))}


def wall_seconds(command: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of ``command`` (which must succeed), its output discarded."""
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, capture_output=True)
    return time.perf_counter() - started
