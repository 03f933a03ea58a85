"""COCO metrics: faster-coco-eval agrees with pycocotools; negatives count."""

import json
from pathlib import Path

import numpy as np
import pytest

import detforge
from detforge.data.synth import generate
from detforge.engine.evaluate.detection import STAT_KEYS, coco_dt, coco_gt, coco_metrics
from detforge.engine.evaluate.plots import at_confidence
from detforge.errors import DetforgeError

from conftest import jittered_checkpoint


@pytest.fixture(scope="module")
def gt_and_preds(tmp_path_factory):
    ds = generate(tmp_path_factory.mktemp("ev"), 40, seed=2, size=(160, 160), negatives=0.2)
    rng = np.random.default_rng(0)
    preds = []
    for s in ds:
        b = s.boxes + rng.normal(0, 2.5, s.boxes.shape).astype(np.float32)
        xy = rng.uniform(0, 100, (2, 2))
        extra = np.concatenate([xy, xy + rng.uniform(5, 40, (2, 2))], 1)  # false positives
        preds.append(
            {
                "boxes": np.concatenate([b, extra]),
                "scores": rng.uniform(0, 1, len(b) + 2),
                "labels": np.concatenate([s.labels, rng.integers(0, 3, 2)]),
            }
        )
    return ds, preds


def test_faster_coco_eval_equals_pycocotools(gt_and_preds):
    ds, preds = gt_and_preds
    gt, dt = coco_gt(ds), coco_dt(preds)
    a = coco_metrics(gt, dt, "pycocotools")
    b = coco_metrics(gt, dt, "faster")
    assert 0.05 < a["mAP50"] < 1.0
    for k in a:
        if k == "per_class":
            for c in a[k]:
                assert b[k][c]["AP50-95"] == pytest.approx(a[k][c]["AP50-95"], abs=1e-6)
        elif k == "pr50":
            for c in a[k]:
                np.testing.assert_allclose(b[k][c], a[k][c], atol=1e-6)
        else:
            assert b[k] == pytest.approx(a[k], abs=1e-6), k


def test_false_positives_on_negatives_lower_precision(gt_and_preds):
    ds, preds = gt_and_preds
    clean = [{"boxes": s.boxes, "scores": np.ones(len(s.boxes)), "labels": s.labels} for s in ds]
    perfect = coco_metrics(coco_gt(ds), coco_dt(clean))
    assert perfect["mAP50-95"] == pytest.approx(1.0)
    neg = [i for i, s in enumerate(ds) if s.is_negative]
    assert neg
    for i in neg:  # confident boxes on images that hold no object
        clean[i] = {
            "boxes": np.array([[10, 10, 60, 60]], np.float32),
            "scores": np.array([2.0]),
            "labels": np.array([0]),
        }
    assert coco_metrics(coco_gt(ds), coco_dt(clean))["mAP50-95"] < 0.99


def test_confusion_and_precision_recall_at_confidence():
    gts = [
        (np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), np.array([0, 1])),
        (np.zeros((0, 4), np.float32), np.zeros(0, np.int64)),  # a negative
    ]
    preds = [
        {  # class 0 found; class 1 box called class 0; a low-score box ignored
            "boxes": np.array([[0, 0, 10, 10], [21, 20, 40, 40], [50, 50, 60, 60]], np.float32),
            "scores": np.array([0.9, 0.8, 0.1]),
            "labels": np.array([0, 0, 1]),
        },
        {"boxes": np.array([[1, 1, 5, 5]], np.float32), "scores": [0.7], "labels": [1]},
    ]
    r = at_confidence(gts, preds, 2, conf=0.5)
    assert r["tp"].tolist() == [1, 0] and r["fp"].tolist() == [1, 1] and r["fn"].tolist() == [0, 1]
    # rows: true 0, 1, background; columns: predicted 0, 1, background
    assert r["confusion"].tolist() == [[1, 0, 0], [1, 0, 0], [0, 1, 0]]
    assert r["precision_all"] == pytest.approx(1 / 3) and r["recall_all"] == pytest.approx(0.5)


def test_evaluate_report_equals_pycocotools(tmp_path):
    ds = detforge.synth(tmp_path / "data", 16, "yolo", seed=2)
    weights = jittered_checkpoint(tmp_path / "m.pt", "ssdlite", imgsz=128, classes=ds.classes)
    kw = dict(project=tmp_path / "runs", conf=0.3)
    a = detforge.evaluate(weights, tmp_path / "data", engine="pycocotools", **kw)
    b = detforge.evaluate(weights, tmp_path / "data", **kw)
    assert a["mAP50"] > 0  # a random model still finds something to score
    for k in STAT_KEYS:
        assert b[k] == pytest.approx(a[k], abs=1e-6), k
    run = Path(b["run_dir"])
    assert run != Path(a["run_dir"])  # each evaluation its own folder
    for f in ("results.json", "pr_curve.png", "confusion_matrix.png"):
        assert (run / f).stat().st_size > 0
    saved = json.loads((run / "results.json").read_text())
    assert saved["mAP50-95"] == pytest.approx(b["mAP50-95"])
    cm = np.array(b["confusion"])
    boxes = np.bincount(np.concatenate([s.labels for s in ds]), minlength=3)
    assert cm[:3].sum(1).tolist() == boxes.tolist()  # each true box is counted once
    det = detforge.load(weights)
    n_conf = sum(
        (r.scores >= 0.3).sum() for r in det.predict([s.load() for s in ds], conf=0.001, iou=1.0)
    )
    per = b["per_class"]
    assert sum(per[c]["tp"] + per[c]["fp"] for c in per) == n_conf == cm[:, :3].sum()


def test_evaluate_refuses_other_classes(tmp_path):
    detforge.synth(tmp_path / "data", 4, "yolo", seed=2)
    weights = jittered_checkpoint(tmp_path / "m.pt", "ssdlite", imgsz=96, classes=["cat", "dog"])
    with pytest.raises(DetforgeError, match="classes"):
        detforge.evaluate(weights, tmp_path / "data", project=tmp_path / "runs")
