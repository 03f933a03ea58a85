"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon"


def scratch(prefix: str = "detforge-bench-") -> Path:
    """A temporary folder, removed when the script exits (datasets here can be gigabytes)."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def evict(paths) -> None:
    """Drop files from the page cache (POSIX_FADV_DONTNEED) so the next read hits the disk."""
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def best_of(n: int, fn, setup=None) -> float:
    """Fastest wall time of ``n`` runs of ``fn()`` (``setup()`` runs untimed before each)."""
    best = float("inf")
    for _ in range(n):
        if setup:
            setup()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def dataset(n: int | None = None, size: int = 320):
    """The raccoon dataset (real JPEGs) when present, else ``n`` synthetic images."""
    from detforge.data import read
    from detforge.data.synth import generate

    if n is None and RACCOON.is_dir():
        return read(RACCOON), "raccoon (200 real JPEGs)"
    tmp = scratch()
    return generate(tmp / "img", n or 500, size=(size, size)), f"synthetic ({n or 500} images)"


class PeakRSS:
    """Peak memory of a process and its children (DataLoader workers), sampled twice a
    second: the sum of their PSS (shared pages split between the processes that share them,
    so forked workers are not counted twice)."""

    def __init__(self, pid: int):
        import psutil

        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import psutil

        while not self._stop.wait(0.5):
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_full_info().pss for p in procs))
            except psutil.Error:
                pass

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak / 2**30


def run_measured(cmd, **kw) -> float:
    p = subprocess.Popen(cmd, **kw)
    rss = PeakRSS(p.pid)
    if p.wait():
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}")
    return rss.stop()
