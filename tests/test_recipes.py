"""A model's training recipe fills the fields the user leaves unset; decoded images held in
memory serve the same items as the loose files."""

from __future__ import annotations

import numpy as np
import torch

from detforge.data import read, write
from detforge.data.synth import generate
from detforge.data.torch import cache
from detforge.data.torch.loader import SampleDataset
from detforge.engine.train.config import TrainConfig, load_config
from detforge.models import describe


def test_recipe_fills_only_the_fields_left_unset(tmp_path):
    plain = TrainConfig()
    ssd = load_config(model="ssdlite")
    assert ssd.augment.iou_crop == 0.5 and plain.augment.iou_crop == 0.0
    assert ssd.augment.hflip == plain.augment.hflip  # fields the recipe leaves alone
    # the user's augment keys win one by one; the recipe's other keys stay
    mine = load_config(model="ssdlite", augment={"iou_crop": 0.0, "mosaic": 0.25})
    assert (mine.augment.iou_crop, mine.augment.mosaic, mine.augment.color) == (0.0, 0.25, 0.3)
    det = load_config(model="det-n")
    assert (det.batch, det.imgsz) == (describe()["det-n"]["recipe"]["batch"], 320)
    assert load_config(model="det-n", batch=4, lr=0.01).batch == 4
    # a YAML file's fields sit between the recipe and the options
    cfg = tmp_path / "run.yaml"
    cfg.write_text("model: det-n\nbatch: 6\naugment: {mosaic: 0.0}\n")
    mixed = load_config(cfg, lr=0.02)
    assert (mixed.batch, mixed.lr, mixed.augment.mosaic) == (6, 0.02, 0.0)
    assert mixed.augment.color == describe()["det-n"]["recipe"]["augment"]["color"]
    # a model no one registered gets no recipe here; building it names the problem later
    assert load_config(model="nope").batch == plain.batch


def test_decoded_cache_serves_the_same_items(tmp_path):
    ds = generate(tmp_path / "img", 6, seed=2, size=(120, 90))
    write(ds, tmp_path / "set", "yolo")
    ds = read(tmp_path / "set")
    loose = SampleDataset(ds)
    held = cache.DecodedSamples(ds, max_side=200)  # all smaller: pixels kept as they are
    for i in range(len(ds)):
        (a, ta), (b, tb) = loose[i], held[i]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
        assert torch.equal(ta["labels"], tb["labels"])
        b[:] = 0  # an item is a copy: the cache is not touched
        assert torch.equal(held[i][0], a)
    small = cache.DecodedSamples(ds, max_side=60)  # shrunk: longest side 60, boxes follow
    for i, s in enumerate(ds.samples):
        img, t = small[i]
        assert max(img.shape[-2:]) == 60
        gx, gy = img.shape[2] / s.width, img.shape[1] / s.height
        want = np.asarray(s.boxes, np.float32).reshape(-1, 4) * [gx, gy, gx, gy]
        np.testing.assert_allclose(t["boxes"].numpy(), want, rtol=1e-5)
    need = cache.cached_bytes(ds, 60)
    assert cache.fits(ds, 60, budget=need) and not cache.fits(ds, 60, budget=need - 1)


def test_models_command_shows_each_recipe():
    import json

    from typer.testing import CliRunner

    from detforge.cli import app
    from detforge.cli.app import _recipe_text

    r = CliRunner().invoke(app, ["models", "--json"])
    assert r.exit_code == 0
    table = json.loads(r.output)
    assert table["ssdlite"]["recipe"] == {"augment": {"iou_crop": 0.5, "color": 0.3, "hue": 0.03}}
    assert table["localizer"]["recipe"] == {}
    assert _recipe_text(table["ssdlite"]["recipe"]) == (
        "augment.iou_crop=0.5, augment.color=0.3, augment.hue=0.03"
    )


def test_mosaic_is_off_for_the_last_share_of_the_run():
    from types import SimpleNamespace as NS

    from detforge.engine.train.loop import _mosaic_phase

    def phase(epoch, epochs=20, time=0.0, spent=0.0, close=0.15):
        cfg = load_config(
            model="det-n", epochs=epochs, time=time, augment={"mosaic": 0.5, "close_mosaic": close}
        )
        view = NS(p=0.5)
        s = NS(
            cfg=cfg,
            data=NS(loader=NS(dataset=view)),
            state=NS(epoch=epoch),
            optim=NS(budget_spent=[spent]),
        )
        _mosaic_phase(s)
        return view.p

    assert [phase(e) for e in (0, 16, 17, 19)] == [0.5, 0.5, 0.0, 0.0]  # 17/20 >= 0.85
    assert phase(3, epochs=0, time=10, spent=0.84) == 0.5  # a time budget: its share spent
    assert phase(3, epochs=0, time=10, spent=0.86) == 0.0
    assert phase(19, close=0.0) == 0.5  # close_mosaic 0 keeps it to the end
