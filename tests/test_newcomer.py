"""The newcomer's first hour, on the layouts labelme, LabelImg and TensorFlow write."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import detforge
from detforge.cli import app
from detforge.data import read, read_splits, write
from detforge.data.synth import generate
from detforge.errors import DetforgeError, FormatError

from conftest import jittered_checkpoint, save_image

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def jpeg_bytes(w=64, h=48, seed=0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def labelme_file(path: Path, image_path: str, shapes=None, **extra) -> None:
    shapes = [{"label": "cat", "points": [[2, 2], [30, 20]], "shape_type": "rectangle"}] * (
        shapes is None
    ) or shapes
    obj = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image_path}
    obj.update({"imageData": None, "imageHeight": 48, "imageWidth": 64}, **extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


# 1 -------------------------------------------------------------------------------------------


def test_split_of_three_images_writes_no_empty_split(tmp_path):
    for i in range(3):
        save_image(tmp_path / "src" / f"{i}.jpg", fmt="JPEG", seed=i)
        labelme_file(tmp_path / "src" / f"{i}.json", f"{i}.jpg")
    with pytest.warns(UserWarning, match="the test split of 3 images is empty"):
        parts = detforge.split(tmp_path / "src", tmp_path / "splits")
    assert sorted(parts) == ["train", "val"] and not (tmp_path / "splits" / "test").exists()
    yaml_text = (tmp_path / "splits" / "data.yaml").read_text()
    assert "test" not in yaml_text
    assert {k: len(v) for k, v in read_splits(tmp_path / "splits" / "data.yaml").items()} == {
        "train": 2,
        "val": 1,
    }
    assert cli("data", "stats", tmp_path / "splits" / "data.yaml").exit_code == 0


def test_unknown_format_hint_names_an_option_that_exists(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("x")
    with pytest.raises(DetforgeError) as e:
        read(tmp_path / "d")
    assert "--format" in e.value.hint and "format:" in e.value.hint  # data commands and YAML


# 2 -------------------------------------------------------------------------------------------


def test_eval_split_of_a_record_is_the_runs_held_out_part(tmp_path):
    from detforge.data.split import split
    from detforge.engine.jobs import eval_split
    from detforge.models import load_checkpoint, save_checkpoint

    ds = generate(tmp_path / "img", 20, seed=0, size=(64, 64))
    rec = write(ds, tmp_path / "rec", "tfrecord")
    weights = jittered_checkpoint(tmp_path / "m.pt", imgsz=64)
    model, _ = load_checkpoint(weights)
    held = {"seed": 3, "val_split": 0.25}
    data = {"source": str(rec), "train_images": 15, "val_images": 5, "held_out": held}
    save_checkpoint(weights, model, data=data)
    expected = split(read(rec), (0.75, 0.25), seed=3)
    for name in ("val", "train"):
        got, label = eval_split(rec, name, weights)
        assert label == name and [s.name for s in got] == [s.name for s in expected[name]]
    assert len(eval_split(rec, None, weights)[0]) == 20  # no --split: all, said as "all"
    with pytest.raises(DetforgeError, match="--split test is not defined"):
        eval_split(rec, "test", weights)
    save_checkpoint(weights, model, data={**data, "source": str(tmp_path / "other")})
    with pytest.raises(DetforgeError, match=r"was trained on .*other"):
        eval_split(rec, "val", weights)
    with pytest.raises(DetforgeError, match="does not say how its run split"):
        eval_split(rec, "val", tmp_path / "m.onnx")


# 3 -------------------------------------------------------------------------------------------


def test_pack_of_a_data_yaml_packs_each_split_and_writes_a_yaml(tmp_path):
    ds = generate(tmp_path / "img", 20, seed=0, size=(64, 64))
    detforge.split(ds, tmp_path / "splits", ratios=(0.6, 0.2, 0.2))
    r = cli("data", "pack", tmp_path / "splits" / "data.yaml", "--out", tmp_path / "shards")
    assert r.exit_code == 0, r.output
    assert "one folder per split (train 12, val 4, test 4)" in r.output
    parts = read_splits(tmp_path / "shards" / "data.yaml")
    assert {k: len(v) for k, v in parts.items()} == {"train": 12, "val": 4, "test": 4}
    assert all(v.format == "tfrecord" for v in parts.values())
    assert (tmp_path / "shards" / "train" / "index.json").is_file()


# 4 -------------------------------------------------------------------------------------------


def test_tf_tutorial_csv_finds_images_in_the_sibling_folder(tmp_path):
    for i in range(3):
        save_image(tmp_path / "images" / f"r{i}.jpg", 64, 48, fmt="JPEG", seed=i)
    rows = "".join(f"r{i}.jpg,64,48,raccoon,2,3,30,40\n" for i in range(3))
    csv_path = tmp_path / "data" / "raccoon_labels.csv"
    csv_path.parent.mkdir()
    csv_path.write_text("filename,width,height,class,xmin,ymin,xmax,ymax\n" + rows)
    ds = read(csv_path)
    assert len(ds) == 3 and ds.num_boxes == 3
    (tmp_path / "images" / "r0.jpg").rename(tmp_path / "r0.jpg")
    for p in (tmp_path / "images").iterdir():
        p.unlink()
    with pytest.raises(FormatError, match=r"no usable images: 3 problems \(missing_image\)"):
        read(csv_path)
    with pytest.raises(FormatError, match="no usable images"):
        detforge.stats(csv_path)  # an error everywhere, never a 0-image success


# 5 -------------------------------------------------------------------------------------------


def test_labelme_tutorial_whose_image_path_names_the_json_itself(tmp_path):
    labelme_file(
        tmp_path / "apc2016_obj3.json",
        "apc2016_obj3.json",
        imageData=base64.b64encode(jpeg_bytes()).decode(),
    )
    ds = read(tmp_path)
    assert len(ds) == 1 and ds[0].load().shape == (48, 64, 3) and ds.num_boxes == 1


def test_labelme_flags_only_files_read_as_image_classes(tmp_path):
    for i, flag in enumerate(["cat", "dog", "cat"]):
        save_image(tmp_path / f"{i}.jpg", fmt="JPEG", seed=i)
        flags = {"cat": flag == "cat", "dog": flag == "dog"}
        labelme_file(tmp_path / f"{i}.json", f"{i}.jpg", shapes=[], flags=flags)
    ds = read(tmp_path)
    assert ds.task == "classify" and ds.classes == ["cat", "dog"]
    assert [ds.classes[s.category] for s in ds] == ["cat", "dog", "cat"]
    labelme_file(tmp_path / "2.json", "2.jpg", shapes=[], flags={"cat": True, "dog": True})
    with pytest.raises(FormatError, match=r"2\.json: image-level flags set: \['cat', 'dog'\]"):
        read(tmp_path)


# 6, 7 ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_time_budget_is_wall_clock_and_progress_prints_when_piped(tmp_path):
    write(generate(tmp_path / "img", 40, seed=0, size=(64, 64)), tmp_path / "set", "yolo")
    cmd = [sys.executable, "-m", "detforge", "train", "--data", str(tmp_path / "set")]
    cmd += ["--model", "ssdlite", "--imgsz", "64", "--batch", "2", "--workers", "0"]
    cmd += ["--project", str(tmp_path / "runs"), "--epochs", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)  # piped: not a TTY
    assert r.returncode == 0, r.stderr
    # piped: progress lines at most every 10 s (their cadence: test_train's fake-clock test),
    # whole, and one line for the finished epoch
    out = r.stdout.splitlines()
    lines = [line for line in out if "images/s" in line]
    assert all("batches (" in line and line.endswith("left in this epoch") for line in lines)
    assert any(line.startswith("epoch 1/1 ") and "mAP50-95" in line for line in out), r.stdout
    r = subprocess.run(cmd[:-1] + ["50", "--time", "0.001"], capture_output=True, text=True)
    assert r.returncode == 0 and "time budget of 0.001 min reached" in r.stdout, r.stdout
    import torch

    run = tmp_path / "runs" / "train" / "exp2"
    ckpt = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert ckpt["train"]["epoch"] == 1  # the first epoch, cut short and validated once
    assert len((run / "metrics.csv").read_text().splitlines()) == 2
    assert (run / "weights" / "best.pt").is_file()


# 8 -------------------------------------------------------------------------------------------


def test_check_shows_whole_paths_and_an_unreadable_image_once(tmp_path):
    deep = tmp_path / ("a_rather_long_folder_name_" * 4) / "set"
    for i in range(3):
        save_image(deep / f"{i}.jpg", fmt="JPEG", seed=i)
        labelme_file(deep / f"{i}.json", f"{i}.jpg")
    (deep / "1.jpg").write_bytes((deep / "1.jpg").read_bytes()[:200])
    report = detforge.check(deep, progress=False)
    assert report.by_kind()["unreadable_image"] == 1
    bad = next(f for f in report.findings if f.kind == "unreadable_image")
    assert str(deep / "1.jpg") not in bad.message  # the path is not repeated in the message
    r = runner.invoke(app, ["data", "check", str(deep)], terminal_width=80)
    assert "1.jpg" in r.output and "…" not in r.output


def test_small_things(tmp_path):
    import inspect

    from detforge.cli import app as _  # noqa: F401
    from detforge.data.viz import grid

    pred = importlib_app().predict
    assert inspect.signature(pred).parameters["device"].default.default == "auto"
    tiles = [np.zeros((20, 20, 3), np.uint8)] * 2
    assert grid(tiles, 2, 64, captions=["a.jpg", "b.jpg"]).shape[0] > grid(tiles, 2, 64).shape[0]
    one = tmp_path / "one"
    for i in range(3):
        save_image(one / "cat" / f"{i}.jpg", fmt="JPEG", seed=i)
    with pytest.raises(DetforgeError, match="only one class"):
        detforge.train(data=str(one), model="resnet18", epochs=1, project=str(tmp_path / "r"))


def importlib_app():
    import importlib

    return importlib.import_module("detforge.cli.predict")


def test_cli_says_no_epoch_finished_and_how_many_labelme_files_were_kept(tmp_path, monkeypatch):
    stopped = {"task": "detect", "best": -1.0, "best_epoch": -1, "run_dir": str(tmp_path)}
    monkeypatch.setattr(detforge, "train", lambda *a, **k: {**stopped, "stopped": "interrupted"})
    r = cli("train", "--data", tmp_path)
    assert "no epoch finished yet" in r.output and "-1.0000" not in r.output
    summary = {"skipped": [], "task": "detect", "counts": {}, "frames": 3, "fps": 1.0}
    summary.update(labelme_written=0, labelme_kept=3, save_dir=str(tmp_path))
    monkeypatch.setattr(detforge, "predict", lambda *a, **k: summary)
    r = cli("predict", tmp_path / "m.pt", "--source", tmp_path, "--save-labelme")
    assert "written beside the images: 0, 3 existing kept (--overwrite-labelme" in r.output
