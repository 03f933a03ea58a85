"""Shared fixtures: every test makes its own data with the synthetic generator."""

from __future__ import annotations

import csv
import fcntl
import os
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image

from detforge.data import write
from detforge.data.dataset import Dataset
from detforge.data.synth import generate
from detforge.engine.devices import cpu_cores

# Property tests draw the same examples on every run (CI must not turn red at random); the
# fuzz harness in benchmarks/fuzz explores. HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Learning tests (marked ``learning``) train from scratch and hold a bar. DETFORGE_TEST_SEED
# moves every one of them to another training seed; CI runs them a second time under another
# kernel path and seed, and benchmarks/learning_margins.py over seeds x kernel paths, reading
# the values each wrote to $DETFORGE_LEARNING_LOG.
LEARN_SEED = int(os.environ.get("DETFORGE_TEST_SEED", "0"))


def hold_bars(test: str, **bars) -> None:
    """Assert each ``name=(value, op, bar)`` (op ``>=`` or ``<=``), after recording every value
    (one JSON line each in $DETFORGE_LEARNING_LOG when set), so a failing run still reports
    all its figures; the failure lists every bar missed."""
    import json

    import torch

    ops = {">=": lambda v, b: v >= b, "<=": lambda v, b: v <= b}
    log = os.environ.get("DETFORGE_LEARNING_LOG")
    if log:
        with open(log, "a") as fh:
            for name, (value, op, bar) in bars.items():
                row = {
                    "test": test,
                    "metric": name,
                    "value": float(value),
                    "op": op,
                    "bar": bar,
                    "seed": LEARN_SEED,
                    "kernels": torch.backends.cpu.get_cpu_capability(),
                    "workers": WORKERS,  # pytest -n: each worker trains on its share of cores
                    "threads": torch.get_num_threads(),
                }
                fh.write(json.dumps(row) + "\n")  # fmt: skip
    missed = [f"{n} {v:.4g} (bar {op} {b})" for n, (v, op, b) in bars.items() if not ops[op](v, b)]
    assert not missed, f"{test}: " + ", ".join(missed)


# ---- several workers (the README's `pytest -n auto`, pytest-xdist) ------------------------
# Each worker computes on its share of the cores (two trainings at two threads each on two
# cores oversubscribe OpenMP and each runs several times slower); the CLI runs a test starts
# inherit it through OMP_NUM_THREADS. A test marked ``alone`` (it asserts a wall-clock bound
# or takes every core: live streams, Ray, DDP) runs with no other test beside it, on all cores.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
CPUS = cpu_cores()
THREADS = max(1, CPUS // WORKERS)
TRAIN_THREADS = min(2, THREADS)  # the learning bars' margins were measured at two threads
if WORKERS > 1:
    torch.set_num_threads(THREADS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """Under ``-n`` with no ``--dist`` asked: a file's tests run on one worker, so a
    module-scoped fixture (a trained model, a local Ray) is made once. (``loadgroup`` would
    group finer, but does not group under pytest 9.2: pytest-dev/pytest-xdist#1386.) Set
    here, not in ``addopts``, so that pytest without xdist still runs the suite."""
    if getattr(config.option, "numprocesses", None) and config.option.dist == "no":
        config.option.dist = "loadfile"


@contextmanager
def _turn(alone: bool):
    """A readers-writer lock over the run's workers (flock on two files that every worker of
    this run opens): ordinary tests share the room, an ``alone`` test has it to itself. The
    gate keeps new tests out while an ``alone`` test waits, so it is not starved."""
    base = Path(tempfile.gettempdir()) / f"detforge-tests-{os.environ['PYTEST_XDIST_TESTRUNUID']}"
    base.mkdir(exist_ok=True)
    with open(base / "gate", "a") as gate, open(base / "room", "a") as room:
        fcntl.flock(gate, fcntl.LOCK_EX)
        if not alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        fcntl.flock(room, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        if alone:
            fcntl.flock(gate, fcntl.LOCK_UN)
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    if WORKERS == 1:
        return (yield)
    alone = item.get_closest_marker("alone") is not None
    with _turn(alone):
        if not alone:
            return (yield)
        torch.set_num_threads(CPUS)
        os.environ["OMP_NUM_THREADS"] = str(CPUS)
        try:
            return (yield)
        finally:
            torch.set_num_threads(THREADS)
            os.environ["OMP_NUM_THREADS"] = str(THREADS)


# The image-check cache of every test (and of the CLI runs tests start) stays out of ~/.cache.
os.environ.setdefault("DETFORGE_CACHE", tempfile.mkdtemp(prefix="detforge-test-cache-"))


@pytest.fixture
def synth_ds(tmp_path) -> Dataset:
    """24 synthetic images (3 classes, some negatives) as a canonical Dataset."""
    return generate(tmp_path / "synth", 24, seed=1, size=(160, 128))


def save_image(
    path: Path,
    w: int = 64,
    h: int = 48,
    mode: str = "RGB",
    fmt: str | None = None,
    seed: int = 0,
    **save_kw,
) -> Path:
    """Write a small noise image; returns its path."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode) if mode != "RGB" else Image.fromarray(arr)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **save_kw)
    return path


def by_name(ds: Dataset) -> dict:
    """Samples keyed by image file stem (writers keep the stem)."""
    return {Path(s.name).stem: s for s in ds.samples}


def assert_same(a: Dataset, b: Dataset, tol: float = 1e-3) -> None:
    """Same images, same boxes (within ``tol`` px), same class names per box, same negatives."""
    sa, sb = by_name(a), by_name(b)
    assert sorted(sa) == sorted(sb)
    for k, x in sa.items():
        y = sb[k]
        assert (x.width, x.height) == (y.width, y.height), k
        assert len(x.boxes) == len(y.boxes), k

        # order-independent comparison: sort by (class name, box)
        # sorted on coordinates rounded to the tolerance: float noise must not reorder boxes
        def key(item, step=max(tol, 1e-3) * 10):
            return item[0], [round(v / step) for v in item[1]]

        kx = sorted(zip([a.classes[i] for i in x.labels], x.boxes.tolist()), key=key)
        ky = sorted(zip([b.classes[i] for i in y.labels], y.boxes.tolist()), key=key)
        for (cx, bx), (cy, by) in zip(kx, ky):
            assert cx == cy, k
            np.testing.assert_allclose(bx, by, atol=tol, err_msg=k)
    assert a.num_negatives == b.num_negatives


def jittered_checkpoint(path: Path, name: str = "ssdlite", imgsz: int = 160, classes=None) -> Path:
    """A random-init model with its weights nudged (so scores are not all tied), saved."""
    import torch

    from detforge.models import build, save_checkpoint

    torch.manual_seed(0)
    model = build(name, classes or ["circle", "square", "triangle"], imgsz=imgsz)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for c in getattr(getattr(model, "head", None), "cls", []):  # det-n/s/m: scores start
            c.weight.normal_(std=0.3)  # at the 0.01 prior, tied; spread them
    return save_checkpoint(path, model)


class StopAfter:
    """Stands in for the SIGINT handler: reports a signal from the k-th time it is asked."""

    def __init__(self, k):
        self.k, self.asked = k, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    @property
    def signal(self):
        self.asked += 1
        return signal.SIGINT if self.asked >= self.k else None


def last_weights(run) -> dict:
    """The run's last.pt, loaded."""
    return torch.load(run / "weights" / "last.pt", weights_only=True)


def cut_and_resume(monkeypatch, k: int, **kw) -> tuple[dict, dict, dict, dict]:
    """Train ``kw`` twice on one thread: straight through (run ``straight``), and stopped at the
    k-th stop check, then resumed (run ``cut``). Returns the straight and resumed last.pt, the
    cut run's result and the ``train`` state it stopped with."""
    import detforge.engine.train.loop as engine

    runs = Path(kw["project"]) / "train"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        engine.train(name="straight", **kw)
        monkeypatch.setattr(engine, "Stop", lambda: StopAfter(k))
        cut = engine.train(name="cut", **kw)
        monkeypatch.undo()
        stopped_at = last_weights(runs / "cut")["train"]
        engine.train(resume=runs / "cut")
    finally:
        torch.set_num_threads(threads)
    return last_weights(runs / "straight"), last_weights(runs / "cut"), cut, stopped_at


def assert_same_weights(a: dict, b: dict) -> None:
    """Two checkpoints hold bit-identical weights and EMA weights."""
    assert a["train"]["step"] == b["train"]["step"] > 0
    for name, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][name], v, rtol=0, atol=0, msg=name)
    for name, v in (a["train"]["ema"] or {"module": {}})["module"].items():
        torch.testing.assert_close(b["train"]["ema"]["module"][name], v, rtol=0, atol=0, msg=name)


def pytest_collection_modifyitems(items):
    """A test that trains and holds a learning bar is slow too: the quick tier
    (``-m "not slow"``, the everyday loop) leaves every training run to the full suite."""
    for item in items:
        if item.get_closest_marker("learning"):
            item.add_marker(pytest.mark.slow)
    # the modules that train go first (each kept whole): the longest work starts early and
    # the short tests fill the other workers' time, not a long tail at the end
    training = {item.path for item in items if item.get_closest_marker("learning")}
    items.sort(key=lambda item: item.path not in training)


# ---- tiny training sets and run folders (shared by test_train, test_fastdet) ------------

NO_AUG = {"hflip": 0.0, "scale_jitter": [1.0, 1.0], "color": 0.0, "hue": 0.0, "iou_crop": 0.0}


def tiny(tmp_path, n=16, size=128, single=False, seed=0):
    """A data.yaml whose train and val are the same n synthetic images (train-set mAP).
    ``single``: one large object per image, one class (a face-tracker-like set)."""
    if single:
        ds = generate(
            tmp_path / "img",
            n,
            seed=seed,
            size=(size, size),
            max_objects=1,
            negatives=0.1,
            scales=((0.3, 0.6),),
        )
        ds.classes = ["shape"]
        for s in ds.samples:
            s.labels[:] = 0
    else:
        ds = generate(
            tmp_path / "img", n, seed=seed, size=(size, size), max_objects=3, negatives=0.1
        )
    write(ds, tmp_path / "set", "yolo")
    (tmp_path / "data.yaml").write_text("train: set\nval: set\n")
    return tmp_path / "data.yaml"


def rows(run):
    with open(os.path.join(run, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))
