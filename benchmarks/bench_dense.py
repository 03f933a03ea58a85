"""What a user sees of a trained detector: F1 at the model's default threshold against the best
F1 over all thresholds, where its false positives come from, and small-object AP; det-n
against YOLO11n at its default (0.25), every side trained in this run for the same budget.

Two sets: a generated dense one (640x480, 1-30 shapes an image in three classes, a third of
them small, overlapping up to IoU 0.35; 300 train, 80 val images) and the raccoon split
(``train.txt`` / ``val.txt``). det-n trains with its defaults (``--imgsz`` not given: the size
is picked from the boxes); ``--fixed-imgsz 320`` adds a det-n run at 320 on the dense set to
show what the pick is worth. Every side's val predictions (conf 0.001) are scored by the same
code: COCO AP, AP small, and precision, recall and F1 at a threshold (class-aware greedy
matching at IoU 0.5, the one ``eval`` uses).

False positives at the default threshold, each counted once, in this order: ``duplicate``
(IoU >= 0.5 with a same-class object another detection already matched), ``wrong class``
(IoU >= 0.5 with an object of another class), ``localization`` (0.1 <= IoU < 0.5 with a
same-class object), ``background`` (the rest).

    python benchmarks/bench_dense.py [--minutes 8] [--raccoon-minutes 14] [--seed 0]
        [--sets dense,raccoon] [--sides det-n,yolo11n] [--fixed-imgsz 320] [--json dense.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from _common import scratch

SCALES = ((0.02, 0.05), (0.05, 0.12), (0.12, 0.25))  # small, medium, large: side / image side


def dense_set(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """YOLO train / val folders of the generated dense set, an Ultralytics data YAML."""
    from detforge.data import write
    from detforge.data.synth import generate

    for split, n, s in (("train", 300, seed), ("val", 80, seed + 1000)):
        ds = generate(root / "render" / split, n, seed=s, size=(640, 480), negatives=0.05,
                      max_objects=30, scales=SCALES)  # fmt: skip
        write(ds, root / split, "yolo")
    (root / "data.yaml").write_text("train: train\nval: val\n")
    ultra = root / "ultra.yaml"
    ultra.write_text(
        f"path: {root}\ntrain: train/images\nval: val/images\n"
        "names: {0: circle, 1: square, 2: triangle}\n"
    )
    return root / "data.yaml", ultra


def raccoon_set(root: Path) -> tuple[Path, Path]:
    from raccoon_table import splits

    data = splits(root)
    ultra = root / "ultra.yaml"
    ultra.write_text(f"path: {root}\ntrain: train/images\nval: val/images\nnames: {{0: raccoon}}\n")
    return data, ultra


def false_positive_sources(gts, preds, conf: float) -> dict:
    """Counts of TP, FN and each kind of false positive (see the module docstring)."""
    import torch
    from torchvision.ops import box_iou

    out = dict.fromkeys(("tp", "fn", "duplicate", "wrong class", "localization", "background"), 0)
    for (gb, gl), p in zip(gts, preds):
        keep = np.asarray(p["scores"]) >= conf
        order = np.argsort(-np.asarray(p["scores"])[keep], kind="stable")
        db = np.asarray(p["boxes"], np.float32).reshape(-1, 4)[keep][order]
        dl = np.asarray(p["labels"])[keep][order]
        gl = np.asarray(gl)
        if not len(gl):
            out["background"] += len(db)
            continue
        ious = box_iou(torch.as_tensor(db), torch.as_tensor(np.asarray(gb, np.float32))).numpy()
        taken = np.zeros(len(gl), bool)
        for d in range(len(db)):
            same = gl == dl[d]
            free = np.where(same & ~taken, ious[d], -1)
            g = int(free.argmax()) if len(free) else -1
            if g >= 0 and free[g] >= 0.5:
                taken[g] = True
                out["tp"] += 1
            elif (np.where(same, ious[d], 0) >= 0.5).any():
                out["duplicate"] += 1
            elif (np.where(~same, ious[d], 0) >= 0.5).any():
                out["wrong class"] += 1
            elif (np.where(same, ious[d], 0) >= 0.1).any():
                out["localization"] += 1
            else:
                out["background"] += 1
        out["fn"] += int((~taken).sum())
    return out


def suppressed(preds, iou: float, agnostic: bool) -> list[dict]:
    """``preds`` after one more NMS at ``iou`` (class-wise, or across classes)."""
    import torch
    from torchvision.ops import batched_nms

    out = []
    for p in preds:
        b = torch.as_tensor(np.asarray(p["boxes"], np.float32).reshape(-1, 4))
        s = torch.as_tensor(np.asarray(p["scores"], np.float32))
        lab = torch.as_tensor(np.asarray(p["labels"], np.int64))
        k = batched_nms(b, s, torch.zeros_like(lab) if agnostic else lab, iou).numpy()
        out.append({"boxes": b.numpy()[k], "scores": s.numpy()[k], "labels": lab.numpy()[k]})
    return out


def judge(preds, val_ds, default_conf: float) -> dict:
    """COCO AP, AP small, and F1 at ``default_conf`` against the best F1 over thresholds."""
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics
    from detforge.engine.evaluate.threshold import best_threshold, f1_curve

    gts = [(s.boxes, s.labels) for s in val_ds.samples]
    m = coco_metrics(coco_gt(val_ds), coco_dt(preds), engine="pycocotools")
    curve = f1_curve(gts, preds)
    i = int(np.argmin(np.abs(curve["conf"] - default_conf)))
    best = best_threshold(curve) or {"conf": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}
    return {
        "mAP50-95": round(m["mAP50-95"], 4),
        "mAP50": round(m["mAP50"], 4),
        "AP_small": round(m.get("mAP_small", -1), 4),
        "default_conf": default_conf,
        "precision": round(float(curve["precision"][i]), 4),
        "recall": round(float(curve["recall"][i]), 4),
        "f1": round(float(curve["f1"][i]), 4),
        "best_conf": best["conf"],
        "best_f1": best["f1"],
        "fp_sources": false_positive_sources(gts, preds, default_conf),
        "images": len(val_ds),
    }


def detn_side(tmp: Path, data: Path, val_ds, minutes: float, seed: int, imgsz: int | None,
              which: str = ""):  # fmt: skip
    import detforge
    from detforge.engine.evaluate.detection import detections
    from vs_yolo import train_detn

    name = f"detn-{which}-{seed}-{imgsz or 'auto'}"  # one folder a set and side
    extra = ["--imgsz", str(imgsz)] if imgsz else []
    r = train_detn(tmp, data, val_ds, minutes, seed, extra=extra, name=name)
    det = detforge.load(r["weights"], device="cpu")
    preds = detections(det, val_ds)
    out = {**judge(preds, val_ds, det.conf), "epochs": r["epochs"], "imgsz": det.imgsz}
    variants = {}
    for label, iou, agnostic in (("class-wise NMS 0.5", 0.5, False),
                                 ("+ across classes 0.7", 0.7, True),
                                 ("+ across classes 0.8", 0.8, True)):  # fmt: skip
        p = suppressed(preds, iou, agnostic)
        if agnostic:
            p = suppressed(p, 0.5, False)
        v = judge(p, val_ds, det.conf)
        variants[label] = {k: v[k] for k in ("mAP50-95", "f1", "best_f1", "precision", "recall")}
    out["post_processing"] = variants
    return out, preds


def peer_side(tmp: Path, py, ultra: Path, val_ds, minutes: float, seed: int, imgsz: int):
    from vs_yolo import train_peer

    r = train_peer(tmp, py, "yolo11n", ultra, val_ds, minutes, seed, imgsz=imgsz, keep=True)
    return {**judge(r["preds"], val_ds, 0.25), "epochs": r["epochs"], "imgsz": imgsz}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=8.0, help="budget on the dense set")
    ap.add_argument("--raccoon-minutes", type=float, default=14.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sets", default="dense,raccoon")
    ap.add_argument("--sides", default="det-n,yolo11n")
    ap.add_argument("--fixed-imgsz", type=int, default=0, help="also det-n at this size (dense)")
    ap.add_argument("--json", default="dense.json")
    args = ap.parse_args()
    from detforge.data import read
    from vs_yolo import venv_python

    tmp = scratch("detforge-dense-")
    sides = args.sides.split(",")
    py = venv_python() if "yolo11n" in sides else None
    results: dict = {}
    for which in args.sets.split(","):
        data, ultra = dense_set(tmp / which) if which == "dense" else raccoon_set(tmp / which)
        minutes = args.minutes if which == "dense" else args.raccoon_minutes
        val_ds = read(tmp / which / "val")
        got = results[which] = {}
        imgsz = 320
        if "det-n" in sides:
            got["det-n"], _ = detn_side(tmp, data, val_ds, minutes, args.seed, None, which)
            imgsz = got["det-n"]["imgsz"]
            print(which, "det-n", json.dumps(got["det-n"]), flush=True)
            if which == "dense" and args.fixed_imgsz:
                key = f"det-n@{args.fixed_imgsz}"
                got[key], _ = detn_side(tmp, data, val_ds, minutes, args.seed, args.fixed_imgsz,
                                        which)  # fmt: skip
                print(which, key, json.dumps(got[key]), flush=True)
        if "yolo11n" in sides:
            got["yolo11n"] = peer_side(tmp, py, ultra, val_ds, minutes, args.seed, imgsz)
            print(which, "yolo11n", json.dumps(got["yolo11n"]), flush=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print("| set | side | imgsz | epochs | mAP50-95 | AP small | default conf | P | R | F1 "
          "| best F1 (conf) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for which, got in results.items():
        for side, r in got.items():
            print(f"| {which} | {side} | {r['imgsz']} | {r['epochs']} | {r['mAP50-95']:.3f} | "
                  f"{r['AP_small']:.3f} | {r['default_conf']:.2f} | {r['precision']:.3f} | "
                  f"{r['recall']:.3f} | {r['f1']:.3f} | {r['best_f1']:.3f} "
                  f"({r['best_conf']:.2f}) |")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
