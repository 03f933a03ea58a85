"""Run folders: ``runs/<task>/<name>``, a new folder per run, never reused."""

from __future__ import annotations

import os
from pathlib import Path


def new_run_dir(task: str, name: str = "exp", project="runs") -> Path:
    """Create and return ``project/task/name`` (or ``name2``, ``name3``, ... when taken)."""
    base = Path(project) / task
    base.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        path = base / (name if k == 1 else f"{name}{k}")
        try:
            os.mkdir(path)  # atomic: two runs never get the same folder
            return path
        except FileExistsError:
            k += 1
