"""Training for real on tiny synthetic sets: models learn, runs resume exactly, signals save."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from detforge.data import read, write
from detforge.engine.train.config import ConfigError, load_config
from detforge.engine.train.loop import train
from detforge.models import load_checkpoint

from conftest import (
    LEARN_SEED,
    NO_AUG,
    TRAIN_THREADS,
    assert_same_weights,
    cut_and_resume,
    hold_bars,
    rows,
    tiny,
)


@pytest.mark.slow
@pytest.mark.learning
def test_ssdlite_learns(tmp_path):
    """Bar: train-set mAP50 >= 0.5 after 15 epochs (measured ~0.99 on 2 CPU cores, ~15 s)."""
    torch.set_num_threads(TRAIN_THREADS)
    r = train(
        data=str(tiny(tmp_path)),
        model="ssdlite",
        epochs=15,
        imgsz=128,
        batch=8,
        workers=0,
        lr=3e-3,
        warmup_epochs=2,
        augment=NO_AUG,
        project=str(tmp_path / "runs"),
        seed=LEARN_SEED,
    )
    m = rows(r["run_dir"])
    loss = [float(x["loss/classification"]) + float(x["loss/bbox_regression"]) for x in m]
    assert float(m[0]["mAP50"]) < 0.5
    hold_bars("ssdlite", loss_ratio=(loss[-1] / loss[0], "<=", 0.3),
              mAP50=(float(m[-1]["mAP50"]), ">=", 0.5))  # fmt: skip
    best, ckpt = load_checkpoint(os.path.join(r["run_dir"], "weights", "best.pt"))
    assert best.classes == ["circle", "square", "triangle"]


@pytest.mark.slow
@pytest.mark.learning
def test_tracker_learns(tmp_path):
    """Bar: train-set mAP50 >= 0.6 after 40 epochs on one-object images, from scratch
    (measured 1.0 at the end, ~30 s on 2 CPU cores)."""
    torch.set_num_threads(TRAIN_THREADS)
    r = train(
        data=str(tiny(tmp_path, size=96, single=True)),
        model="localizer",
        epochs=40,
        imgsz=64,
        batch=4,
        workers=0,
        lr=1e-3,
        warmup_epochs=2,
        augment=NO_AUG,
        project=str(tmp_path / "runs"),
        seed=LEARN_SEED,
    )
    m = rows(r["run_dir"])
    assert float(m[0]["mAP50"]) < 0.6
    giou = float(m[-1]["loss/box_giou"]) / float(m[0]["loss/box_giou"])
    hold_bars("localizer", giou_ratio=(giou, "<=", 0.5), mAP50=(float(m[-1]["mAP50"]), ">=", 0.6))


@pytest.mark.slow
# asked at each epoch's start and after each of its 6 batches but the last: k=10 stops after
# 3 batches of epoch 2, k=7 between epochs 1 and 2
@pytest.mark.parametrize("k", [10, 7])
def test_resume_gives_the_same_weights(tmp_path, monkeypatch, k):
    data = tiny(tmp_path, n=24, size=64, seed=1)
    write(read(tmp_path / "set").subset(range(2)), tmp_path / "val", "yolo")
    data.write_text("train: set\nval: val\n")
    kw = dict(
        data=str(data),
        model="ssdlite",
        epochs=3,
        imgsz=64,
        batch=4,
        workers=0,
        lr=3e-3,
        augment={"hflip": 0.5},
        project=str(tmp_path / "runs"),
        seed=3,
    )
    a, b, cut, stopped_at = cut_and_resume(monkeypatch, k, **kw)
    assert cut["stopped"].startswith("interrupted")
    assert (stopped_at["epoch"], stopped_at["batch"]) == ((1, 3) if k == 10 else (1, 0))
    assert a["train"]["step"] == 18
    assert_same_weights(a, b)
    assert len(rows(tmp_path / "runs" / "train" / "cut")) == 3


CHILD = """
import sys, torch
torch.set_num_threads(1)
from detforge.engine.train.loop import train
train(data=sys.argv[1], model="ssdlite", epochs=40, imgsz=64, batch=4, workers=0, lr=3e-3,
      project=sys.argv[2], name="killed", seed=3)
"""


@pytest.mark.slow
def test_sigint_saves_last_pt_and_resume_keeps_tensorboard_in_order(tmp_path):
    data = tiny(tmp_path, n=24, size=64, seed=1)
    runs = tmp_path / "runs"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data), str(runs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    metrics = runs / "train" / "killed" / "metrics.csv"
    deadline = time.time() + 120
    while time.time() < deadline and not metrics.is_file():  # wait for epoch 1 to finish
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 0, out
    assert "interrupted" in out and "--resume" in out, out
    curves = runs / "train" / "killed" / "plots" / "loss.png"
    assert curves.is_file()  # drawn when the run stops, whatever the time since the last
    model, ckpt = load_checkpoint(runs / "train" / "killed" / "weights" / "last.pt")
    done = ckpt["train"]["epoch"]
    assert 1 <= done < 40 and model.classes == ["circle", "square", "triangle"]
    result = train(resume=runs / "train" / "killed", epochs=done + 1)  # one more epoch
    assert result["epochs"] == done + 1
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs / "train" / "killed" / "tensorboard"))
    acc.Reload()
    for tag in acc.Tags()["scalars"]:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps == sorted(set(steps)), tag
    assert [int(r["epoch"]) for r in rows(runs / "train" / "killed")] == list(range(1, done + 2))
    assert curves.stat().st_mtime >= metrics.stat().st_mtime  # redrawn with the last epoch


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        load_config(None, data="x", epoch=3)
    with pytest.raises(ConfigError, match="'lr'"):
        load_config(None, data="x", lr=-1).validate()
    (tmp_path / "c.yaml").write_text("data: x\nbatch: many\n")
    with pytest.raises(ConfigError, match="'batch'"):
        load_config(tmp_path / "c.yaml")


@pytest.mark.slow
@pytest.mark.alone  # two training processes
def test_ddp_two_processes_on_cpu(tmp_path):
    """torchrun with 2 processes (gloo), balanced sampling on: one run folder, written by rank 0
    only."""
    data = tiny(tmp_path, n=16, size=64)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "detforge",
        "train",
        "--data",
        str(data),
        "--model",
        "ssdlite",
        "--epochs",
        "2",
        "--imgsz",
        "64",
        "--batch",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--name",
        "ddp",
        "--balanced",  # each rank takes its slice of one seeded draw
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = sorted(p.name for p in (tmp_path / "runs" / "train").iterdir())
    assert runs == ["ddp"]
    assert "on cpu x2" in r.stdout  # one run of two processes
    assert [int(x["epoch"]) for x in rows(tmp_path / "runs" / "train" / "ddp")] == [1, 2]
    model, ckpt = load_checkpoint(tmp_path / "runs" / "train" / "ddp" / "weights" / "last.pt")
    assert ckpt["train"]["epoch"] == 2 and not any(
        k.startswith("module.") for k in ckpt["state_dict"]
    )


def test_out_of_memory_says_what_to_lower(tmp_path, monkeypatch):
    import detforge.engine.train.loop as engine
    from detforge.engine.train.loop import TrainingError

    real_build = engine.build

    def build_oom(*a, **k):
        model = real_build(*a, **k)

        def forward(images, targets=None):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        model.forward = forward
        return model

    monkeypatch.setattr(engine, "build", build_oom)
    data = tiny(tmp_path, n=8, size=64)
    with pytest.raises(TrainingError, match=r"batch size 4.*") as e:
        train(
            data=str(data),
            model="ssdlite",
            epochs=1,
            imgsz=64,
            batch=4,
            workers=0,
            project=str(tmp_path / "runs"),
        )
    assert e.value.hint.startswith("lower --batch (e.g. 2)")
    assert load_config(None, data="x", batch="auto").batch == -1


def test_host_memory_too_small_is_refused_before_training(tmp_path, monkeypatch):
    """A run that cannot fit in the host memory free now is refused in one line naming what
    to lower (not killed by the kernel mid-epoch); the decoded cache stays off, too."""
    import detforge.data.torch.cache as cache

    monkeypatch.setattr(cache, "available_memory", lambda: 2**16)  # 64 KiB free
    data = tiny(tmp_path, n=8, size=64)
    ds = read(tmp_path / "set")
    assert not cache.fits(ds, 320, budget=2**40)  # the cache would take more than half
    with pytest.raises(ConfigError, match=r"about [\d.]+ GiB of host memory .*batch 16") as e:
        train(data=str(data), model="det-n", epochs=1, batch=16, imgsz=640, workers=2,
              project=str(tmp_path / "runs"))  # fmt: skip
    assert e.value.hint.startswith("lower --batch (e.g. 8), --imgsz or --workers")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.pt"))


@pytest.mark.parametrize("name", ["det-n", "ssdlite", "resnet18"])
def test_batch_auto_probe_trains_one_step_for_each_task(name):
    """`--batch auto` sizes a real training step of the model's task (on CUDA; the step
    itself runs anywhere). A classifier's probe once sent box targets: KeyError 'category'
    on the first CUDA run."""
    from detforge.engine.train.loop import probe_step
    from detforge.models import build

    model = build(name, ["a", "b"], imgsz=64)
    probe_step(model, 2, 64, torch.device("cpu"))
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads[-4:])


def test_piped_progress_prints_at_most_one_line_per_ten_seconds(monkeypatch):
    from detforge.engine.train import runlog

    clock = [0.0]
    monkeypatch.setattr(runlog.time, "monotonic", lambda: clock[0])
    lines = []
    bar = runlog.PlainProgress(lambda line: lines.append((clock[0], line)), batch=8)
    k = bar.add_task("epoch 1/3", total=100)
    for _ in range(100):  # 100 batches in 50 s: a tenth every 5 s
        clock[0] += 0.5
        bar.update(k)
    times = [t for t, _ in lines]
    assert times == [10.0, 20.0, 30.0, 40.0]
    assert lines[0][1] == "epoch 1/3: 20/100 batches (20%), 16.0 images/s, 40s left in this epoch"
    lines.clear()
    k = bar.add_task("epoch 2/3", total=10)
    for _ in range(10):  # a slow epoch: a line every 30 s, tenths or not
        clock[0] += 31
        bar.update(k)
    assert len(lines) == 9  # the last batch ends the epoch, whose own line follows
