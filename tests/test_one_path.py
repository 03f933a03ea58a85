"""One prediction path: what training validates is what `detforge eval` reports on the same
split (to 1e-6 for the checkpoint; within the parity tolerance for the exported ONNX), and
eval writes COCO files that re-score to the same numbers."""

import csv
import json
from pathlib import Path

import pytest
import torch

import detforge
from detforge.data import write
from detforge.data.synth import classify_folders, generate
from detforge.engine.train.loop import train

from conftest import LEARN_SEED, TRAIN_THREADS, hold_bars

NO_AUG = {"hflip": 0.0, "scale_jitter": [1.0, 1.0], "color": 0.0, "hue": 0.0, "iou_crop": 0.0}


def best_row(result) -> dict:
    with open(Path(result["run_dir"]) / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return next(r for r in rows if int(r["epoch"]) == result["best_epoch"])


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    ds = generate(root / "img", 16, seed=0, size=(128, 128), max_objects=3, negatives=0.1)
    write(ds, root / "train", "yolo")
    write(ds, root / "val", "yolo")  # val = train: a model that learns in seconds scores > 0
    (root / "data.yaml").write_text("train: train\nval: val\nnames: [circle, square, triangle]\n")
    torch.set_num_threads(TRAIN_THREADS)
    r = train(data=str(root / "data.yaml"), model="ssdlite", epochs=10, imgsz=128, batch=8,
              workers=0, lr=3e-3, warmup_epochs=1, augment=NO_AUG,
              project=str(root / "runs"), seed=LEARN_SEED)  # fmt: skip
    return root, r


@pytest.mark.learning
def test_detector_validation_equals_eval(detector):
    root, r = detector
    row = best_row(r)
    best = Path(r["run_dir"]) / "weights" / "best.pt"
    m = detforge.evaluate(best, root / "data.yaml", split="val", project=root / "runs")
    assert m["task"] == "detect" and m["split"] == "val" and m["images"] == 16
    # the model found something: the equality below is not 0 == 0
    hold_bars("one-path detector", mAP50=(m["mAP50"], ">=", 0.05))
    for k in ("mAP50-95", "mAP50"):
        assert abs(float(row[k]) - m[k]) <= 1e-6, (k, row[k], m[k])
    assert r["best"] == pytest.approx(m["mAP50-95"], abs=1e-6)
    onnx = detforge.export(best, root / "model.onnx")["path"]
    mo = detforge.evaluate(onnx, root / "data.yaml", split="val", project=root / "runs")
    assert abs(mo["mAP50-95"] - m["mAP50-95"]) <= 0.01 and abs(mo["mAP50"] - m["mAP50"]) <= 0.01


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_training_stores_the_f1_best_threshold_that_eval_measures(detector):
    """best.pt carries the threshold of best F1 on validation; eval on the same split finds
    the same one, and reports precision and recall at it by default."""
    root, r = detector
    th = r["default_conf"]
    best = Path(r["run_dir"]) / "weights" / "best.pt"
    assert th and 0 < th["conf"] < 1 and detforge.load(best).conf == th["conf"]
    m = detforge.evaluate(best, root / "data.yaml", split="val", project=root / "runs")
    assert m["threshold"] == th and m["conf"] == th["conf"]
    assert m["precision"] == pytest.approx(th["precision"], abs=1e-4)
    assert m["recall"] == pytest.approx(th["recall"], abs=1e-4)
    onnx = detforge.load(detforge.export(best, root / "thr.onnx")["path"])
    assert onnx.conf == th["conf"]


@pytest.mark.slow  # needs the trained detector
def test_eval_writes_coco_files_that_rescore_the_same(detector):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, r = detector
    best = Path(r["run_dir"]) / "weights" / "best.pt"
    m = detforge.evaluate(best, root / "data.yaml", split="val", project=root / "runs")
    run = Path(m["run_dir"])
    gt = COCO(str(run / "gt.json"))
    preds = json.loads((run / "predictions.json").read_text())
    assert len(gt.getImgIds()) == 16 and preds and {"image_id", "bbox", "score"} <= set(preds[0])
    ev = COCOeval(gt, gt.loadRes(str(run / "predictions.json")), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(m["mAP50-95"], abs=1e-6)
    assert ev.stats[1] == pytest.approx(m["mAP50"], abs=1e-6)


@pytest.mark.learning
def test_classifier_validation_equals_eval(tmp_path):
    classify_folders(tmp_path / "train", 48, size=(48, 48), seed=0)
    classify_folders(tmp_path / "val", 21, size=(56, 40), seed=1)  # other sizes: resized
    (tmp_path / "data.yaml").write_text("train: train\nval: val\n")
    r = train(data=str(tmp_path / "data.yaml"), model="resnet18", epochs=3, imgsz=48, batch=8,
              workers=0, lr=1e-3, project=str(tmp_path / "runs"), seed=LEARN_SEED)  # fmt: skip
    row = best_row(r)
    best = Path(r["run_dir"]) / "weights" / "best.pt"
    m = detforge.evaluate(best, tmp_path / "data.yaml", split="val", project=tmp_path / "runs")
    assert m["task"] == "classify" and m["images"] == 21
    for k in ("top1", "top5"):
        assert abs(float(row[k]) - m[k]) <= 1e-6, (k, row[k], m[k])
    onnx = detforge.export(best, tmp_path / "c.onnx", dynamic_batch=True)["path"]
    mo = detforge.evaluate(onnx, tmp_path / "data.yaml", split="val", project=tmp_path / "runs")
    assert abs(mo["top1"] - m["top1"]) <= 1 / 21 + 1e-9  # one near-tie may flip
