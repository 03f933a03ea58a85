"""Scoring a detector on a dataset: COCO mAP@[.5:.95], mAP50, mAP75, S/M/L, per class, plus
precision, recall and a confusion matrix at one confidence.

The detections come from a Predictor (the same path as ``predict`` and the ONNX model), so
training-time validation and ``detforge eval`` score exactly the same boxes. Ground truth and
detections are converted to COCO dicts at this edge (xywh, 1-based category ids); negatives
are images without annotations, so detections on them lower precision.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from detforge.data.dataset import Dataset
from detforge.data.formats import coco
from detforge.engine.evaluate.plots import at_confidence, plot_confusion, plot_pr
from detforge.engine.evaluate.threshold import best_threshold, f1_curve
from detforge.fileio import atomic_write_json

EVAL_CONF = 0.001  # keep low scores: mAP needs the whole PR curve
EVAL_BATCH = 8  # validation and eval run the same batches (same numbers, bit for bit)

STAT_KEYS = (
    "mAP50-95",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


def coco_gt(ds: Dataset) -> dict:
    """The COCO ground-truth dict of ``ds`` (image ids are sample index + 1)."""
    return coco.to_dict(ds, [s.name for s in ds.samples])


def coco_dt(predictions: list[dict]) -> list[dict]:
    """Detections per image (in dataset order) -> COCO results list."""
    out = []
    for i, p in enumerate(predictions, start=1):
        boxes = np.asarray(p["boxes"], np.float32).reshape(-1, 4)
        out += coco.coco_results(i, boxes, np.asarray(p["scores"]), np.asarray(p["labels"]))
    return out


def _engine(name: str):
    if name == "faster":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    return COCO, COCOeval


def coco_metrics(gt: dict, dets: list[dict], engine: str = "faster") -> dict:
    """COCOeval on ``gt`` and ``dets``: the 12 standard numbers plus ``per_class`` AP50-95 and
    AP50. ``engine`` is ``faster`` (faster-coco-eval) or ``pycocotools``."""
    COCO, COCOeval = _engine(engine)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    if not dets or not gt["annotations"]:
        zero = dict.fromkeys(STAT_KEYS, 0.0)
        zero["per_class"] = {n: {"AP50-95": 0.0, "AP50": 0.0} for n in names.values()}
        zero["pr50"] = {n: np.full(101, -1.0) for n in names.values()}
        return zero
    with contextlib.redirect_stdout(io.StringIO()):
        cgt = COCO()
        cgt.dataset = {k: list(v) for k, v in gt.items()}
        cgt.createIndex()
        cdt = cgt.loadRes([dict(d) for d in dets])
        ev = COCOeval(cgt, cdt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {k: float(v) for k, v in zip(STAT_KEYS, ev.stats)}
    prec = np.asarray(ev.eval["precision"])  # [iou, recall, class, area, maxdet]
    cat_ids = list(ev.params.catIds)
    per = {}
    for k, cid in enumerate(cat_ids):
        p_all = prec[:, :, k, 0, -1]
        p50 = prec[0, :, k, 0, -1]
        per[names[cid]] = {
            "AP50-95": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0,
            "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0,
        }
    out["per_class"] = per
    out["pr50"] = {names[cid]: prec[0, :, k, 0, -1] for k, cid in enumerate(cat_ids)}
    return out


@dataclass
class Scored:
    """A model's score on a dataset: ``metrics`` (plain values, what results.json holds) and
    what the written report needs."""

    metrics: dict
    predictions: list = field(default_factory=list)  # per image: boxes, scores, labels
    extra: dict = field(default_factory=dict)


def detections(det, ds: Dataset, *, batch: int = EVAL_BATCH, progress: bool = False) -> list:
    """The Predictor's detections (score >= EVAL_CONF, no extra NMS) for each sample, in order,
    decoding ``batch`` images at a time."""
    from rich.progress import track

    preds = []
    steps = range(0, len(ds), batch)
    for i in track(steps, description="evaluating", disable=not progress, transient=True):
        images = [s.load() for s in ds.samples[i : i + batch]]
        for r in det.predict(images, conf=EVAL_CONF, iou=1.0, max_det=100, batch=batch):
            preds.append(r.scored())
    return preds


def score(
    det,
    ds: Dataset,
    *,
    batch: int = EVAL_BATCH,
    conf: float | None = None,
    iou: float = 0.5,
    engine: str = "faster",
    progress: bool = False,
) -> Scored:
    """COCO metrics of Predictor ``det`` on ``ds`` (all images; negatives count), per-class AP,
    precision, recall and the confusion matrix at ``conf`` (IoU ``iou``; default: the model's
    own threshold, ``det.conf``), and the threshold of best F1 on ``ds`` (``threshold``:
    conf, precision, recall, f1; None when nothing is found)."""
    conf = det.conf if conf is None else float(conf)
    preds = detections(det, ds, batch=batch, progress=progress)
    metrics = coco_metrics(coco_gt(ds), coco_dt(preds), engine)
    pr50 = metrics.pop("pr50")
    gts = [(s.boxes, s.labels) for s in ds.samples]
    at = at_confidence(gts, preds, len(ds.classes), conf, iou)
    curve = f1_curve(gts, preds, iou)
    for k, c in enumerate(ds.classes):
        metrics["per_class"][c].update(
            precision=float(at["precision"][k]),
            recall=float(at["recall"][k]),
            tp=int(at["tp"][k]),
            fp=int(at["fp"][k]),
            fn=int(at["fn"][k]),
        )
    metrics.update(
        fitness=metrics["mAP50-95"],
        precision=float(at["precision_all"]),
        recall=float(at["recall_all"]),
        conf=conf,
        iou=iou,
        threshold=best_threshold(curve),
        images=len(ds),
        negatives=sum(s.is_negative for s in ds.samples),
        confusion=at["confusion"].tolist(),
    )
    return Scored(metrics, preds, {"pr50": pr50, "confusion": at["confusion"], "f1": curve})


def write_report(scored: Scored, ds: Dataset, run: Path) -> None:
    """PR curves, the confusion matrix, and the scored detections as COCO files
    (``predictions.json`` against ``gt.json``) that any COCO tool re-scores."""
    m = scored.metrics
    plot_pr(scored.extra["pr50"], run / "pr_curve.png")
    title = f"confusion at conf {m['conf']}, IoU {m['iou']}"
    plot_confusion(scored.extra["confusion"], ds.classes, run / "confusion_matrix.png", title)
    atomic_write_json(run / "gt.json", coco_gt(ds), indent=None)
    atomic_write_json(run / "predictions.json", coco_dt(scored.predictions), indent=None)
