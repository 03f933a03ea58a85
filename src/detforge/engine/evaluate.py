"""COCO detection metrics for a model on a dataset: mAP@[.5:.95], mAP50, mAP75, S/M/L, per class.

Ground truth and detections are converted to COCO dicts at this edge (xywh, 1-based category
ids); negatives are images without annotations, so detections on them lower precision.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

from detforge.boxes import from_xyxy
from detforge.data.dataset import Dataset

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
    images, anns = [], []
    for i, s in enumerate(ds.samples, start=1):
        images.append({"id": i, "width": s.width, "height": s.height, "file_name": s.name})
        for b, lab, crowd in zip(from_xyxy(s.boxes, "xywh"), s.labels, s.iscrowd):
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": int(lab) + 1,
                    "bbox": [float(v) for v in b],
                    "area": float(b[2] * b[3]),
                    "iscrowd": int(crowd),
                }
            )
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(ds.classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def coco_dt(predictions: list[dict]) -> list[dict]:
    """Detections per image (in dataset order) -> COCO results list."""
    out = []
    for i, p in enumerate(predictions, start=1):
        boxes = from_xyxy(np.asarray(p["boxes"], np.float32).reshape(-1, 4), "xywh")
        for b, s, lab in zip(boxes, np.asarray(p["scores"]), np.asarray(p["labels"])):
            out.append(
                {
                    "image_id": i,
                    "category_id": int(lab) + 1,
                    "bbox": [float(v) for v in b],
                    "score": float(s),
                }
            )
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


@torch.no_grad()
def predict_dataset(
    model, ds: Dataset, *, batch: int = 8, workers: int = 0, device="cpu", progress: bool = False
) -> list[dict]:
    """Run ``model`` (eval mode) over every sample of ``ds``; predictions in dataset order."""
    from rich.progress import track

    from detforge.data.loader import make_loader

    was_training = model.training
    model.eval()
    preds = []
    loader = make_loader(ds, batch_size=batch, workers=workers, shuffle=False)
    for images, _ in track(loader, description="evaluating", disable=not progress, transient=True):
        for o in model([im.to(device) for im in images]):
            preds.append({k: v.cpu().numpy() for k, v in o.items()})
    model.train(was_training)
    return preds


def evaluate_model(
    model,
    ds: Dataset,
    *,
    batch: int = 8,
    workers: int = 0,
    device="cpu",
    engine: str = "faster",
    progress: bool = False,
) -> dict:
    """COCO metrics of ``model`` on ``ds``."""
    preds = predict_dataset(
        model, ds, batch=batch, workers=workers, device=device, progress=progress
    )
    return coco_metrics(coco_gt(ds), coco_dt(preds), engine)


def _eval_split(data, split: str | None):
    """The dataset to evaluate on: a data YAML's ``split`` (val by default), else all of
    ``data``."""
    from pathlib import Path

    from detforge.data import read
    from detforge.data.sources import is_data_yaml, read_splits
    from detforge.errors import DetforgeError

    if is_data_yaml(Path(data)):
        parts = read_splits(data)
        split = split or ("val" if "val" in parts else "test" if "test" in parts else "train")
        if split not in parts:
            raise DetforgeError(
                f"{data}: has no {split!r} split", f"use --split {' or '.join(parts)}"
            )
        return parts[split], split
    return read(data), split or "all"


def predictions(det, ds: Dataset, *, batch: int = 8, progress: bool = False) -> list[dict]:
    """The Predictor's detections (score >= 0.001, as mAP needs) for each sample, streamed."""
    from rich.progress import track

    preds = []
    steps = range(0, len(ds), batch)
    for i in track(steps, description="evaluating", disable=not progress, transient=True):
        images = [s.load() for s in ds.samples[i : i + batch]]
        for r in det.predict(images, conf=0.001, iou=1.0, max_det=100, batch=batch):
            preds.append({"boxes": r.boxes, "scores": r.scores, "labels": r.labels})
    return preds


def evaluate(
    weights,
    data,
    *,
    split: str | None = None,
    conf: float = 0.25,
    iou: float = 0.5,
    batch: int = 8,
    device: str = "cpu",
    engine: str = "faster",
    project="runs",
    name: str = "exp",
    progress: bool = False,
) -> dict:
    """Evaluate a ``.pt`` or ``.onnx`` model on ``data`` (a data YAML's ``split``, else the
    whole dataset). COCO mAP (all images; negatives count), per-class AP, and precision,
    recall and a confusion matrix at ``conf`` (IoU ``iou``). Writes ``results.json``,
    ``pr_curve.png`` and ``confusion_matrix.png`` into ``runs/eval/NAME``; returns the
    metrics with ``run_dir``."""
    from detforge.engine.predict import load
    from detforge.engine.report import at_confidence, plot_confusion, plot_pr
    from detforge.errors import DetforgeError
    from detforge.fileio import atomic_write_json
    from detforge.runs import new_run_dir

    det = load(weights, device=device)
    ds, split = _eval_split(data, split)
    if list(ds.classes) != list(det.names):
        raise DetforgeError(
            f"{weights}: the model's classes {det.names} differ from the dataset's {ds.classes}",
            "evaluate on the data the model was trained for (same class list and order)",
        )
    if det.task == "classify":
        from detforge.engine.classify_eval import evaluate_classifier

        run = new_run_dir("eval", name, project)
        m = evaluate_classifier(det, ds, run, batch=batch)
        m.update(images=len(ds), split=split, weights=str(weights), run_dir=str(run))
        atomic_write_json(run / "results.json", m)
        return m
    preds = predictions(det, ds, batch=batch, progress=progress)
    metrics = coco_metrics(coco_gt(ds), coco_dt(preds), engine)
    pr50 = metrics.pop("pr50")
    at = at_confidence([(s.boxes, s.labels) for s in ds.samples], preds, len(ds.classes), conf, iou)
    for k, c in enumerate(ds.classes):
        metrics["per_class"][c].update(
            precision=float(at["precision"][k]),
            recall=float(at["recall"][k]),
            tp=int(at["tp"][k]),
            fp=int(at["fp"][k]),
            fn=int(at["fn"][k]),
        )
    metrics.update(
        precision=float(at["precision_all"]),
        recall=float(at["recall_all"]),
        conf=conf,
        iou=iou,
        images=len(ds),
        negatives=sum(s.is_negative for s in ds.samples),
        split=split,
        weights=str(weights),
        confusion=at["confusion"].tolist(),
    )
    run = new_run_dir("eval", name, project)
    plot_pr(pr50, run / "pr_curve.png")
    plot_confusion(
        at["confusion"],
        ds.classes,
        run / "confusion_matrix.png",
        f"confusion at conf {conf}, IoU {iou}",
    )
    metrics["run_dir"] = str(run)
    atomic_write_json(run / "results.json", metrics)
    return metrics
