"""ONNX export: every exportable model agrees with PyTorch; the rest are refused with why."""

from __future__ import annotations

import numpy as np
import pytest

import detforge
from detforge.data.synth import render
from detforge.engine.export.onnx import NOT_EXPORTABLE
from detforge.engine.export.parity import _match, _probs, _safe
from detforge.errors import DetforgeError
from detforge.models import names

from conftest import jittered_checkpoint


@pytest.mark.parametrize("name", sorted(names()))
def test_parity_or_refusal_for_every_model(name, tmp_path):
    weights = jittered_checkpoint(tmp_path / f"{name}.pt", name, imgsz=128)
    if name in NOT_EXPORTABLE:
        with pytest.raises(DetforgeError, match="cannot be exported"):
            detforge.export(weights)
        return
    report = detforge.export(weights, dynamic_batch=name in ("tracker", *names("classify")))
    p = report["parity"]
    if name in names("classify"):
        assert p["same_top1"] and p["max_prob_diff"] <= 1e-4 and p["images"] == 4
        return
    assert p["detections"] > 0 and p["unmatched"] == 0  # export raises otherwise
    assert p["worst_iou"] >= 0.99 and p["worst_score_diff"] <= 1e-3


def test_probability_parity_tells_a_tie_from_a_disagreement():
    """A barely trained classifier can hold two classes equal to 1e-7: a top-1 that flips
    between them is within the runtime's precision; one that flips across a real gap is not."""
    ref = np.array([[0.5, 0.5 - 1e-7, 1e-7], [0.7, 0.2, 0.1]], np.float32)
    tie = np.array([[0.5 - 1e-7, 0.5, 1e-7], [0.7, 0.2, 0.1]], np.float32)
    p = _probs(ref, tie, "m.onnx", "ONNX")
    assert p["same_top1"] and p["images"] == 2 and p["max_prob_diff"] < 2e-7
    with pytest.raises(DetforgeError, match=r"m\.onnx: ONNX and PyTorch probabilities differ"):
        _probs(ref, np.array([[0.5, 0.5, 0.0], [0.2, 0.7, 0.1]], np.float32), "m.onnx", "ONNX")


def _image(seed=5, w=180, h=140):
    return np.asarray(render(np.random.default_rng(seed), w, h, 3)[0])


def test_onnx_predictor_matches_pytorch_and_needs_only_the_file(tmp_path):
    weights = jittered_checkpoint(tmp_path / "m.pt", "ssdlite", imgsz=160)
    path = detforge.export(weights, tmp_path / "sub" / "model.onnx")["path"]
    onnx_det, pt_det = detforge.load(path), detforge.load(weights)
    assert onnx_det.backend.kind == "onnx" and onnx_det.names == pt_det.names
    assert onnx_det.imgsz == 160
    images = [_image(s) for s in range(3)]  # 3 images through a batch-1 graph
    # no host NMS (iou=1): a random model's scores tie, and NMS over ties is order-dependent
    opts = {"conf": 0.05, "iou": 1.0}
    for a, b in zip(onnx_det.predict(images, **opts), pt_det.predict(images, **opts)):
        a, b = (a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels)
        assert len(a[0]) == len(b[0]) > 0
        for x, y in ((_safe(a), b), (_safe(b), a)):
            unmatched, worst_iou, worst_ds = _match(x, y, 0.99, 1e-3)
            assert unmatched == 0 and worst_iou >= 0.99 and worst_ds <= 1e-3
    with pytest.raises(DetforgeError, match="already exists"):
        detforge.export(weights, path)


def test_nms_left_out_and_applied_by_the_predictor(tmp_path):
    weights = jittered_checkpoint(tmp_path / "m.pt", "retinanet", imgsz=128)
    raw = detforge.export(weights, tmp_path / "raw.onnx", nms=False)
    assert raw["parity"]["unmatched"] == 0
    det = detforge.load(raw["path"])
    assert det.backend.metadata["nms"] == "false"
    r = det.predict(_image(), conf=0.05, iou=0.5)[0]
    import torch
    from torchvision.ops import box_iou

    ious = box_iou(torch.from_numpy(r.boxes), torch.from_numpy(r.boxes)).numpy()
    same = r.labels[:, None] == r.labels[None, :]
    np.fill_diagonal(same, False)
    assert len(r) > 1 and (ious[same] <= 0.5 + 1e-6).all()  # NMS ran on the host


def test_dynamic_batch(tmp_path):
    ssd = jittered_checkpoint(tmp_path / "ssd.pt", "ssdlite", imgsz=128)
    with pytest.raises(DetforgeError, match="per image") as e:
        detforge.export(ssd, dynamic_batch=True)
    assert "--batch" in e.value.hint
    fixed = detforge.export(ssd, tmp_path / "b2.onnx", batch=2)
    assert detforge.load(fixed["path"]).backend.batch == 2
    tr = jittered_checkpoint(tmp_path / "tr.pt", "tracker", imgsz=96)
    det = detforge.load(detforge.export(tr, dynamic_batch=True)["path"])
    assert det.backend.batch is None
    out = det.predict([_image(s) for s in range(5)], conf=0.0, batch=5)
    assert [len(r) for r in out] == [1] * 5
