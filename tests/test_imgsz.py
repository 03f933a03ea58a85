"""The input size from the data: train picks the size at which small boxes keep enough
pixels when it is not told one; stats and the CLI say when objects will be too small."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from detforge.data.dataset import Dataset, Sample
from detforge.data.image import FileImage
from detforge.data.stats import input_size_for, small_at, stats
from detforge.engine.train.config import load_config
from detforge.engine.train.data import pick_imgsz


def _boxes_of_sides(sides, image=(1000, 500)) -> Dataset:
    """One 1000x500 image a box, each box ``side`` x 2*side pixels (shorter side ``side``)."""
    w, h = image
    samples = [
        Sample(
            FileImage(f"/nowhere/{i}.jpg"),
            w,
            h,
            np.array([[10, 10, 10 + s, 10 + 2 * s]], np.float32),
            np.array([0]),
        )  # fmt: skip
        for i, s in enumerate(sides)
    ]
    return Dataset(["thing"], samples)


def test_the_rule_on_known_box_sizes():
    # shorter sides 10..100 px in a 1000 px image: 10th percentile 19 px -> 0.019 of the side
    ds = _boxes_of_sides(np.arange(10, 101, 10))
    assert small_at(ds, 320)["p10_side"] == pytest.approx(0.019 * 320, abs=0.05)
    assert small_at(ds, 320)["under"] == pytest.approx(0.3)  # 10, 20, 30 px -> 3.2, 6.4, 9.6
    # 12 px need 12 / 0.019 = 631.6 -> 640 (a multiple of 32), within the cap of 640
    pick = input_size_for(ds, 320, 640)
    assert pick["imgsz"] == 640 and pick["p10_side"] == pytest.approx(12.2, abs=0.05)
    assert input_size_for(ds, 320, 480)["imgsz"] == 480  # capped
    assert "capped at 480" in input_size_for(ds, 320, 480)["reason"]
    big = _boxes_of_sides([200, 300, 400])
    assert input_size_for(big, 320, 640)["imgsz"] == 320  # never below the recipe's size
    # 0.05 -> 12 / 0.05 = 240 px would do; the floor stays 320
    assert input_size_for(_boxes_of_sides([50] * 5), 320, 640)["imgsz"] == 320
    assert input_size_for(_boxes_of_sides([30] * 5), 320, 640)["imgsz"] == 416  # 400 -> 416


def test_stats_say_when_objects_will_be_too_small():
    s = stats(_boxes_of_sides(np.arange(10, 101, 10)), imgsz=320)
    assert s["small"]["suggested"]["imgsz"] == 640 and s["small"]["under"] == pytest.approx(0.3)
    assert stats(_boxes_of_sides([200] * 3))["small"]["suggested"]["imgsz"] == 320


def test_train_picks_the_size_only_when_not_told(capsys):
    ds = _boxes_of_sides(np.arange(10, 101, 10))
    said = []
    cfg = load_config(None, data="x", model="det-n")
    assert cfg.auto_imgsz and cfg.imgsz == 320
    pick_imgsz(cfg, ds, said.append)
    assert cfg.imgsz == 640 and not cfg.auto_imgsz  # recorded as chosen in the run's config
    assert said and said[0].startswith("imgsz 640 (not 320)")
    told = load_config(None, data="x", model="det-n", imgsz=320)
    assert not told.auto_imgsz
    pick_imgsz(told, ds, said.append)
    assert told.imgsz == 320 and len(said) == 1
    cls = load_config(None, data="x", model="resnet18")
    pick_imgsz(cls, Dataset(["a"], [], task="classify"), said.append)
    assert cls.imgsz == 320


def test_data_stats_prints_the_hint(tmp_path):
    from PIL import Image

    from detforge.cli import app
    from detforge.data import write

    src, root = tmp_path / "src", tmp_path / "ds"
    src.mkdir()
    samples = []
    for i in range(5):
        p = src / f"{i}.png"
        Image.new("RGB", (640, 480), (90, 90, 90)).save(p)
        samples.append(Sample(FileImage(p), 640, 480, np.array([[5, 5, 13, 13]], np.float32),
                              np.array([0])))  # fmt: skip
    write(Dataset(["dot"], samples, root=src), root, "yolo")
    r = CliRunner().invoke(app, ["data", "stats", str(root)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    # 8 px boxes in 640 px images keep 4 px at 320; 12 px need 960 -> the hint names it
    assert "4.0 px" in r.output and "too small; try --imgsz 960" in r.output
