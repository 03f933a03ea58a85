"""COCO metrics: faster-coco-eval agrees with pycocotools; negatives count."""

import numpy as np
import pytest

from detforge.data.synth import generate
from detforge.engine.evaluate import coco_dt, coco_gt, coco_metrics


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
