"""A run's page: ``report.html`` in a training or evaluation run folder.

What the run was (model, data, resolved config, environment, best epoch), its curves from
``metrics.csv`` (losses, the task's metrics, learning rate), the evaluation (COCO table,
per-class AP with box counts, PR curves, confusion matrix; for classifiers per-class
precision/recall/F1), and a gallery of the validation images with ground truth and
predictions, worst first: images sorted by false positives plus misses (classifiers: the
misclassified ones, by how sure the model was), filterable by class. Built from the same
Scored result ``detforge eval`` writes (:mod:`detforge.engine.tasks` scores, this module
draws), so page and results.json never disagree.
"""

from __future__ import annotations

import csv
import datetime
import json
from pathlib import Path

import numpy as np

from detforge._version import __version__
from detforge.data.reading import is_data_yaml
from detforge.data.report.page import THUMBS, Thumbnails, box_rows, figure, svg, write_page
from detforge.engine.evaluate.plots import confusion_figure, f1_figure, image_errors, pr_figure
from detforge.engine.loading import load
from detforge.engine.scoring import scoring_set
from detforge.engine.tasks import task as task_of
from detforge.errors import DetforgeError

DETECT_SORTS = [
    {"key": "err", "label": "most errors first"},
    {"key": "fp", "label": "most false positives first"},
    {"key": "fn", "label": "most misses first"},
    {"key": "name", "label": "by name"},
]
CLASSIFY_SORTS = [
    {"key": "err", "label": "misclassified first (surest first)"},
    {"key": "name", "label": "by name"},
]
COCO_ROWS = [
    ("mAP50-95", "AP @ IoU 0.50:0.95"),
    ("mAP50", "AP @ IoU 0.50"),
    ("mAP75", "AP @ IoU 0.75"),
    ("mAP_small", "AP small (< 32² px)"),
    ("mAP_medium", "AP medium"),
    ("mAP_large", "AP large (> 96² px)"),
    ("AR1", "AR, 1 detection per image"),
    ("AR10", "AR, 10 detections"),
    ("AR100", "AR, 100 detections"),
]


def read_metrics(run: Path) -> list[dict]:
    """metrics.csv as rows of floats (empty when the run has none)."""
    path = Path(run) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        row = {}
        for k, v in r.items():
            try:
                row[k] = float(v)
            except (TypeError, ValueError):
                continue
        out.append(row)
    return out


def curve_figure(rows: list[dict], keys: list[str], title: str, ylabel: str, log=False,
                 size=(4.4, 2.8)):  # fmt: skip
    """Per-epoch curves of ``keys`` from metrics.csv rows (a matplotlib Figure): the report
    draws it as SVG, the run folder's plots/ as PNG."""
    fig = figure(*size)
    ax = fig.subplots()
    epochs = [r.get("epoch", i + 1) for i, r in enumerate(rows)]
    for k in keys:
        ys = [r.get(k, np.nan) for r in rows]
        ax.plot(epochs, ys, marker="o" if len(rows) < 30 else None, ms=3, label=k)
    ax.set(title=title, xlabel="epoch", ylabel=ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(keys) > 1:
        ax.legend(fontsize=8)
    return fig


def _chart(rows: list[dict], keys: list[str], title: str, ylabel: str, log=False) -> str:
    return svg(curve_figure(rows, keys, title, ylabel, log))


def curves(rows: list[dict], logged: tuple[str, ...]) -> list[str]:
    """SVG charts of losses, the task's metrics and the learning rate per epoch."""
    if not rows:
        return []
    losses = [k for k in rows[0] if k.startswith("loss")]
    metrics = [k for k in logged if k in rows[0]]
    out = []
    if losses:
        out.append(_chart(rows, losses, "training losses", "loss"))
    if metrics:
        out.append(_chart(rows, metrics, "validation", "value"))
    if "lr" in rows[0]:
        out.append(_chart(rows, ["lr"], "learning rate", "lr", log=True))
    return out


def detect_items(ds, scored, thumbs: Thumbnails, conf: float, iou: float) -> list[dict]:
    """One gallery item per image: thumbnail, ground truth, predictions at ``conf`` and
    their false positives and misses at IoU ``iou`` (class-aware)."""
    items = []
    made = thumbs.make_all(ds.samples)
    for s, pred, t in zip(ds.samples, scored.predictions, made):
        k = thumbs.scale(s)
        keep = np.asarray(pred["scores"]) >= conf
        fp, fn = image_errors(s.boxes, s.labels, pred, conf, iou)
        w, h = thumbs.size(s)
        items.append(
            {
                "n": s.name,
                "t": t,
                "w": w,
                "h": h,
                "g": box_rows(s.boxes, s.labels, (k, k)),
                "p": box_rows(
                    np.asarray(pred["boxes"]).reshape(-1, 4)[keep],
                    np.asarray(pred["labels"])[keep],
                    (k, k),
                    np.asarray(pred["scores"])[keep],
                ),
                "fp": fp,
                "fn": fn,  # the page adds err = fp + fn
            }
        )
    return items


def classify_items(ds, scored, thumbs: Thumbnails) -> list[dict]:
    """One item per image: thumbnail, true class and the top-3; misclassified images rank
    by the probability given to the wrong class."""
    items = []
    made = thumbs.make_all(ds.samples)
    for s, pred, t in zip(ds.samples, scored.predictions, made):
        w, h = thumbs.size(s)
        probs = np.asarray(pred["probs"], float)
        top = np.argsort(-probs)[:3]
        wrong = int(top[0]) != s.category
        items.append(
            {
                "n": s.name,
                "t": t,
                "w": w,
                "h": h,
                "y": s.category,
                "top": [[int(c), round(float(probs[c]), 3)] for c in top],
                "err": round(1 + float(probs[top[0]]), 4) if wrong else 0,
                "bad": wrong,
            }
        )
    return items


def _boxes_per_class(ds) -> dict[str, int]:
    counts = np.zeros(len(ds.classes), np.int64)
    for s in ds.samples:
        np.add.at(counts, s.labels, 1)
    return dict(zip(ds.classes, counts.tolist()))


def _evaluation(task: str, scored, ds) -> dict:
    m = scored.metrics
    names = list(ds.classes)
    cm = np.asarray(m["confusion"])
    title = f"confusion at conf {m['conf']}, IoU {m['iou']}" if task == "detect" else ""
    out = {"confusion": svg(confusion_figure(cm, names, title)), "metrics": m}
    if task == "detect":
        # COCO's -1: no ground truth of that size
        out["coco"] = [(label, m[k] if m[k] >= 0 else None) for k, label in COCO_ROWS if k in m]
        out["pr"] = svg(pr_figure(scored.extra["pr50"]))
        if "f1" in scored.extra:
            out["f1"] = svg(f1_figure(scored.extra["f1"], m["conf"]))
        out["boxes"] = _boxes_per_class(ds)
    return out


def write_run_report(run, *, info: dict, task: str, scored, ds, rows=None) -> Path:
    """Write ``run/report.html`` (thumbnails in ``run/report_files``) from a scored
    evaluation of ``ds``; ``info`` is what the page says about the run (rows of key,
    value, plus ``config`` and ``environment`` dicts)."""
    run = Path(run)
    t = task_of(task)
    thumbs = Thumbnails(run)
    m = scored.metrics
    if task == "detect":
        items = detect_items(ds, scored, thumbs, m["conf"], m.get("iou", 0.5))
        legend = (
            '<i class="gt"></i>ground truth (dashed) <i class="pred"></i>predictions at conf '
            f"{m['conf']:g} (the model's default), in their class colour, with score"
        )
    else:
        items = classify_items(ds, scored, thumbs)
        legend = "caption: the true class, then the model's top 3 with probabilities"
    gallery = {
        "items": items,
        "classes": list(ds.classes),
        "sorts": DETECT_SORTS if task == "detect" else CLASSIFY_SORTS,
        "negatives": task == "detect",
        "page_size": 48,
        "thumbs": THUMBS,
    }
    page = write_page(
        run / "report.html",
        "run.html.j2",
        title=f"{info.get('kind', 'run')} report: {run.name}",
        subtitle=str(run),
        version=__version__,
        written=datetime.datetime.now().isoformat(timespec="seconds"),
        sections=[
            ("run", "run"),
            *([("curves", "curves")] if rows else []),
            ("evaluation", "evaluation"),
            ("gallery", "gallery"),
        ],
        task=task,
        fitness=t.fitness,
        info=info,
        config_text=json.dumps(info.get("config", {}), indent=2, default=str),
        env_text=json.dumps(info.get("environment", {}), indent=2, default=str),
        charts=curves(rows or [], t.logged),
        ev=_evaluation(task, scored, ds),
        gallery=gallery,
        legend=legend,
    )
    thumbs.prune()
    return page


def try_report(make) -> Path | None:
    """Run ``make()`` (which writes a report and returns its path); a failure is one warning
    (a Python warning: the CLI shows it as one line), never the end of the run that asked."""
    import warnings

    try:
        return make()
    except Exception as e:  # noqa: BLE001 - the report must never fail a run
        first = str(e).splitlines()[0] if str(e) else ""
        warnings.warn(f"the HTML report was not written: {type(e).__name__}: {first}", stacklevel=2)
        return None


# --- the report job: (re)score a run folder and write its page ------------------------------


def eval_info(results: dict) -> dict:
    rows = [
        ("weights", results["weights"]),
        ("data", results.get("data", "(a Dataset in memory)")),
        ("split", results["split"]),
        ("images", results["images"]),
    ]
    return {"kind": "evaluation", "split": results["split"], "rows": rows}


def _train_info(run: Path, cfg: dict, weights: Path, split: str, rows: list[dict], t) -> dict:
    key = t.fitness
    best = max((r for r in rows if key in r), key=lambda r: r[key], default=None)
    started = (run / "config.yaml").stat().st_mtime
    ended = max((p.stat().st_mtime for p in (run / "weights").glob("*.pt")), default=started)
    stamp = datetime.datetime.fromtimestamp
    info_rows = [
        ("model", cfg.get("model")),
        ("data", cfg.get("data")),
        ("epochs run", len(rows)),
        (
            "best epoch",
            f"{int(best['epoch'])} ({key} {best[key]:.4f})" if best else "no epoch finished",
        ),
        ("image size, batch", f"{cfg.get('imgsz')} px, {cfg.get('batch')}"),
        ("started", stamp(started).isoformat(timespec="seconds")),
        ("last checkpoint", f"{stamp(ended).isoformat(timespec='seconds')}"
         f" ({(ended - started) / 60:.1f} min after the start)"),
        ("scored", f"{weights.name} on the {split} split"),
    ]  # fmt: skip
    return {"kind": "training", "split": split, "rows": info_rows, "config": cfg}


def _what_to_score(run: Path) -> dict:
    """What a run folder's report scores: weights, data, split, thresholds, and what the
    page says about the run."""
    import yaml

    if (run / "results.json").is_file():
        res = json.loads((run / "results.json").read_text(encoding="utf-8"))
        if not res.get("data"):
            raise DetforgeError(
                f"{run / 'results.json'} does not name the data it scored",
                "evaluate again with detforge eval (it writes the report itself)",
            )
        return {
            "weights": Path(res["weights"]),
            "data": res["data"],
            "split": res["split"],
            "conf": res.get("conf"),
            "iou": res.get("iou", 0.5),
            "results": res,
        }
    if not (run / "config.yaml").is_file():
        raise DetforgeError(
            f"{run}: not a run folder (no config.yaml or results.json)",
            "pass a folder under runs/train or runs/eval",
        )
    cfg = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    found = [run / "weights" / n for n in ("best.pt", "last.pt")]
    weights = next((p for p in found if p.is_file()), None)
    if weights is None:
        raise DetforgeError(f"{run}: no weights yet", "train at least one epoch first")
    data = cfg.get("data")
    env = run / "environment.json"
    return {
        "weights": weights,
        "data": data,
        "conf": None,  # the model's own
        "iou": 0.5,
        "config": cfg,
        "split": None if is_data_yaml(Path(data)) else "val",
        "environment": json.loads(env.read_text(encoding="utf-8")) if env.is_file() else {},
    }


def report_run(run, *, device: str = "auto", progress: bool = False) -> Path:
    """Write (again) ``report.html`` of a run folder: a training run's best.pt (else
    last.pt) scored on its validation images, or an eval run's model on its data and split.
    Returns the page's path."""
    run = Path(run)
    w = _what_to_score(run)
    det = load(w["weights"], device=device)
    ds, split = scoring_set(det, w["weights"], w["data"], w["split"])
    t = task_of(det.task)
    scored = t.score(det, ds, conf=w["conf"], iou=w["iou"], progress=progress)
    rows = [] if "results" in w else read_metrics(run)
    if "results" in w:
        info = eval_info({**w["results"], "images": len(ds)})
    else:
        info = _train_info(run, w["config"], w["weights"], split, rows, t)
        info["environment"] = w["environment"]
    return write_run_report(run, info=info, task=t.name, scored=scored, ds=ds, rows=rows)
