"""The default confidence: the F1-best threshold measured on validation, exact on a hand-made
case, stored in the checkpoint and in exported metadata, the default of every prediction path,
and always overridden by an explicit conf."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import detforge
from detforge.engine.evaluate.plots import at_confidence
from detforge.engine.evaluate.threshold import best_threshold, f1_curve
from detforge.errors import DetforgeError
from detforge.models import load_checkpoint, save_checkpoint
from detforge.models.base import FALLBACK_CONF

from conftest import jittered_checkpoint


def _case():
    """Two ground-truth boxes (classes 0 and 1) on image 1, none on image 2. In score order:
    0.9 hits box A; 0.8 sits on box B with the wrong class; 0.6 hits B; 0.5 duplicates A; 0.3
    is off every box; 0.2 is on the empty image."""
    gts = [(np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), [0, 1]),
           (np.zeros((0, 4), np.float32), [])]  # fmt: skip
    img1 = {
        "boxes": [
            [0, 0, 10, 10],
            [20, 20, 30, 30],
            [20, 20, 30, 30],
            [1, 0, 10, 10],
            [50, 50, 60, 60],
        ],  # fmt: skip
        "scores": [0.9, 0.8, 0.6, 0.5, 0.3],
        "labels": [0, 0, 1, 0, 0],
    }
    img2 = {"boxes": [[5, 5, 15, 15]], "scores": [0.2], "labels": [1]}
    return gts, [img1, img2]


def test_threshold_search_exact_on_a_hand_made_case():
    gts, preds = _case()
    c = f1_curve(gts, preds)

    def at(t):
        return {k: float(c[k][np.isclose(c["conf"], t)][0]) for k in ("precision", "recall", "f1")}

    assert at(0.85) == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    assert at(0.70) == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert at(0.55) == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8})
    assert at(0.40) == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3})
    assert at(0.10) == pytest.approx({"precision": 2 / 6, "recall": 1.0, "f1": 0.5})
    # F1 0.8 from 0.51 to 0.60: the middle of that plateau
    assert best_threshold(c) == {"conf": 0.56, "precision": 0.6667, "recall": 1.0, "f1": 0.8}
    # the same matching as the P/R table of `detforge eval` at every threshold
    for t in (0.25, 0.55, 0.75, 0.95):
        table = at_confidence(gts, preds, 2, t)
        assert at(t)["precision"] == pytest.approx(table["precision_all"])
        assert at(t)["recall"] == pytest.approx(table["recall_all"])
    # two stretches tie (F1 2/3 on 0.81-0.90 and 0.31-0.50): the middle of the wider one
    c2 = {**c, "f1": np.where(c["f1"] > 0.7, 0.0, c["f1"])}
    assert best_threshold(c2)["conf"] == 0.41
    # nothing found anywhere: no threshold to measure
    empty = [{"boxes": np.zeros((0, 4)), "scores": [], "labels": []}] * 2
    assert best_threshold(f1_curve(gts, empty)) is None


def test_a_measured_conf_travels_and_is_the_default_everywhere(tmp_path):
    base = jittered_checkpoint(tmp_path / "raw.pt", "det-n", imgsz=96)
    model, _ = load_checkpoint(base)
    assert model.default_conf is None and detforge.load(base).conf == FALLBACK_CONF
    model.default_conf = 0.0123  # a random det-n's scores sit just above 0.01
    weights = save_checkpoint(tmp_path / "m.pt", model)
    det = detforge.load(weights)
    assert det.conf == 0.0123 and load_checkpoint(weights)[0].default_conf == 0.0123
    onnx_path = detforge.export(weights, tmp_path / "m.onnx")["path"]
    meta = {p.key: p.value for p in onnx.load(onnx_path).metadata_props}
    assert meta["conf"] == "0.0123" and detforge.load(onnx_path).conf == 0.0123
    image = np.random.default_rng(0).integers(0, 256, (80, 120, 3), np.uint8)
    for d in (det, detforge.load(onnx_path)):
        default = d.predict(image, iou=1.0)[0]
        assert len(default) > 0 and default.scores.min() >= 0.0123
        same = d.predict(image, conf=0.0123, iou=1.0)[0]
        np.testing.assert_allclose(default.boxes, same.boxes, atol=1e-3)
        lower = d.predict(image, conf=0.005, iou=1.0)[0]  # an explicit conf wins
        assert len(lower) > len(default)
    # predict writes what the default keeps; --conf on the command line still wins
    s = detforge.predict(weights, image_path(tmp_path, image), out=tmp_path / "p",
                         progress=False)  # fmt: skip
    rows = [json.loads(x) for x in Path(s["predictions"]).read_text().splitlines()]
    assert min(rows[0]["scores"]) >= 0.0123
    assert len(rows[0]["boxes"]) == len(det.predict(image, iou=0.5)[0])


def image_path(tmp_path, image):
    from PIL import Image

    p = tmp_path / "img.png"
    Image.fromarray(image).save(p)
    return p


def test_a_damaged_conf_in_metadata_is_named(tmp_path):
    weights = jittered_checkpoint(tmp_path / "m.pt", "det-n", imgsz=64)
    path = detforge.export(weights, tmp_path / "m.onnx")["path"]
    proto = onnx.load(path)
    proto.metadata_props.add(key="conf", value="7")
    onnx.save(proto, path)
    with pytest.raises(DetforgeError, match=r"m\.onnx: detforge metadata is damaged \(conf 7"):
        detforge.load(path)
    ckpt = torch.load(weights, weights_only=True)
    ckpt["model"]["conf"] = "high"  # not a number: the model keeps the fallback
    torch.save(ckpt, tmp_path / "odd.pt")
    assert detforge.load(tmp_path / "odd.pt").conf == FALLBACK_CONF
