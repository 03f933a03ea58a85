"""Faults as they happen: kill -9 mid-pack and mid-training, SIGTERM to the process group,
a full disk (RLIMIT_FSIZE). Each ends in one clear line, and a re-run picks up exactly."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detforge.data import read, write
from detforge.data.shards import STATE, pack
from detforge.data.synth import generate

from conftest import assert_same_weights


def digest(folder: Path) -> dict:
    return {
        p.name: hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not predicate():
        time.sleep(0.02)


def _fsize_limit(n: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (n, n))


SLOW_PACK = """
import sys, time
from detforge.data import read, shards
orig = shards.record_image
def slow(s):
    time.sleep(0.03)
    return orig(s)
shards.record_image = slow
shards.pack(read(sys.argv[1]), sys.argv[2], shard_size=3, workers=int(sys.argv[3]),
            progress=False)
"""


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_pack_killed_at_random_points_resumes_byte_identical(tmp_path):
    src = write(generate(tmp_path / "img", 30, seed=2, size=(96, 80)), tmp_path / "src", "yolo")
    ref = tmp_path / "ref"
    pack(read(src), ref, shard_size=3, workers=1, progress=False)
    rng = random.Random(0)
    for trial in range(12):
        out = tmp_path / f"out{trial}"
        workers = str(1 + trial % 2)
        proc = subprocess.Popen([sys.executable, "-c", SLOW_PACK, str(src), str(out), workers])
        _wait_for(lambda out=out: (out / STATE).exists(), 60)
        time.sleep(rng.uniform(0.0, 0.8))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        pack(read(src), out, shard_size=3, workers=2, progress=False)
        assert digest(out) == digest(ref), trial
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")], trial


def test_pack_on_a_full_disk_is_one_line_and_resumes(tmp_path):
    src = write(generate(tmp_path / "img", 12, seed=2, size=(96, 80)), tmp_path / "src", "yolo")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "detforge", "data", "pack", str(src), "--out", str(out)]
    cmd += ["--shard-size", "4", "--workers", "1"]
    shard = max(p.stat().st_size for p in (src / "images").iterdir()) * 4 + 4096
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_fsize_limit(shard // 3))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "file-size limit reached while writing" in r.stderr and "data-0000" in r.stderr
    assert not list(out.glob(".*.tmp"))  # the partial shard is gone
    ref = tmp_path / "ref"
    pack(read(src), ref, shard_size=4, workers=1, progress=False)
    r = subprocess.run(cmd, capture_output=True, text=True)  # room again: resume
    assert r.returncode == 0, r.stderr
    assert digest(out) == digest(ref)


TRAIN = """
import sys, torch
torch.set_num_threads(1)
from detforge.engine.train.loop import train
train(data=sys.argv[1], model="ssdlite", epochs=3, imgsz=64, batch=4, workers=0, lr=3e-3,
      project=sys.argv[2], name=sys.argv[3], seed=5, deterministic=True, ema=0.99)
"""


def _tiny_data(tmp_path) -> Path:
    ds = generate(tmp_path / "img", 16, seed=1, size=(64, 64), max_objects=2)
    write(ds, tmp_path / "set", "yolo")
    (tmp_path / "data.yaml").write_text("train: set\nval: set\n")
    return tmp_path / "data.yaml"


@pytest.mark.slow
def test_train_killed_hard_resumes_to_the_same_weights(tmp_path):
    data, runs = _tiny_data(tmp_path), tmp_path / "runs"
    subprocess.run([sys.executable, "-c", TRAIN, str(data), str(runs), "straight"], check=True)
    proc = subprocess.Popen([sys.executable, "-c", TRAIN, str(data), str(runs), "killed"])
    metrics = runs / "train" / "killed" / "metrics.csv"
    _wait_for(lambda: metrics.is_file() and len(metrics.read_text().splitlines()) >= 2)
    time.sleep(0.5)  # somewhere in epoch 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    last = runs / "train" / "killed" / "weights" / "last.pt"
    assert torch.load(last, weights_only=True)["train"]["epoch"] < 3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from detforge.engine.train.loop import train

        train(resume=runs / "train" / "killed")
    finally:
        torch.set_num_threads(threads)
    straight = torch.load(runs / "train" / "straight" / "weights" / "last.pt", weights_only=True)
    assert_same_weights(straight, torch.load(last, weights_only=True))


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_last_pt(tmp_path):
    data, runs = _tiny_data(tmp_path), tmp_path / "runs"
    cmd = [sys.executable, "-m", "detforge", "train", "--data", str(data), "--model", "ssdlite"]
    cmd += ["--epochs", "50", "--imgsz", "64", "--batch", "4", "--workers", "2"]
    cmd += ["--project", str(runs), "--name", "term"]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    metrics = runs / "train" / "term" / "metrics.csv"
    _wait_for(metrics.is_file)
    time.sleep(0.3)  # mid-epoch, workers running
    os.killpg(proc.pid, signal.SIGTERM)  # what timeout, Slurm and Kubernetes do
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "interrupted" in out and "--resume" in out, out
    ckpt = torch.load(runs / "train" / "term" / "weights" / "last.pt", weights_only=True)
    assert ckpt["train"]["epoch"] >= 1


@pytest.mark.slow
def test_train_on_a_full_disk_keeps_the_earlier_last_pt(tmp_path):
    data, runs = _tiny_data(tmp_path), tmp_path / "runs"
    from detforge.engine.train.loop import train

    train(
        data=str(data),
        model="ssdlite",
        epochs=1,
        imgsz=64,
        batch=4,
        workers=0,
        project=str(runs),
        name="full",
    )
    last = runs / "train" / "full" / "weights" / "last.pt"
    before = hashlib.sha1(last.read_bytes()).hexdigest()
    cmd = [sys.executable, "-m", "detforge", "train", "--resume", str(runs / "train" / "full")]
    cmd += ["--epochs", "2"]
    limit = last.stat().st_size // 2
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_fsize_limit(limit))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "file-size limit reached while writing" in r.stderr and "last.pt" in r.stderr
    assert hashlib.sha1(last.read_bytes()).hexdigest() == before  # the earlier one, intact
    assert not list(last.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_export_and_predict_on_a_full_disk_are_one_line(tmp_path):
    from conftest import jittered_checkpoint, save_image

    weights = jittered_checkpoint(tmp_path / "m.pt", imgsz=96)
    for i in range(3):
        save_image(tmp_path / "imgs" / f"{i}.jpg", 96, 80, fmt="JPEG", seed=i)
    limit = _fsize_limit(20_000)  # smaller than the ONNX graph and than an annotated image
    cmd = [sys.executable, "-m", "detforge", "export", str(weights)]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=limit)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "m.onnx: file-size limit reached while writing" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imgs", "m.pt"]  # no partial file
    cmd = [
        sys.executable,
        "-m",
        "detforge",
        "predict",
        str(weights),
        "--source",
        str(tmp_path / "imgs"),
        "--project",
        str(tmp_path / "runs"),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_fsize_limit(200))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "file-size limit reached while writing" in r.stderr
    assert not list((tmp_path / "runs").rglob("*.tmp"))


POOL_UNDER_CLI_HANDLER = """
import signal, sys
def interrupt(*a):
    raise KeyboardInterrupt
signal.signal(signal.SIGTERM, interrupt)  # what the CLI installs before any command
from detforge.data import read
from detforge.data.shards import pack
for i in range(12):
    pack(read(sys.argv[1]), sys.argv[2] + str(i), shard_size=3, workers=2, progress=False)
"""


def test_pack_pools_end_under_the_clis_sigterm_handler(tmp_path):
    """Workers inherit the CLI's SIGTERM handler through fork; the pool ends them with
    SIGTERM. They must die at once (a worker that raised while holding the task queue's lock
    hung the pool)."""
    src = write(generate(tmp_path / "img", 12, seed=2, size=(64, 48)), tmp_path / "src", "yolo")
    r = subprocess.run(
        [sys.executable, "-c", POOL_UNDER_CLI_HANDLER, str(src), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert len(list(tmp_path.glob("out*/index.json"))) == 12
