"""det-n against Ultralytics YOLO26n and YOLO11n on this machine, every side measured in
this run: accuracy for the same wall-clock training budget from scratch, training peak RSS,
and end-to-end onnxruntime speed (host resize of 640x480 frames + the graph with its
post-processing inside, batch 1, 2 intra-op threads, interleaved).

Ultralytics (AGPL-3.0) is installed into its own throwaway virtualenv under the system temp
folder and runs there in subprocesses; detforge never imports it. The raccoon split
(``train.txt`` / ``val.txt``) is converted with detforge's YOLO writer; every side's
predictions on the 40 val images (conf 0.001) are scored by pycocotools through detforge's
evaluator.

    python benchmarks/vs_yolo.py [--minutes 14] [--seeds 0,1] [--sides det-n,yolo26n,yolo11n]
                                 [--json vs_yolo.json] [--speed-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from raccoon_table import splits

from _common import run_measured, scratch

HERE = Path(__file__).resolve().parent
VENV = Path(tempfile.gettempdir()) / "detforge-ultralytics-venv"
PEERS = {"yolo26n": "yolo26n.yaml", "yolo11n": "yolo11n.yaml"}

PEER_TRAIN = r"""
import json, os, sys
from pathlib import Path
import ultralytics.utils.torch_utils as tu
from ultralytics import YOLO
tu.NUM_THREADS = os.cpu_count()  # its CPU default leaves one core idle (cpu_count - 1)
cfg, data, out, minutes, seed, imgsz = sys.argv[1:7]
m = YOLO(cfg)
m.train(data=data, imgsz=int(imgsz), epochs=10000, time=float(minutes) / 60, batch=16,
        workers=2, device="cpu", pretrained=False, amp=False, seed=int(seed), project=out,
        name="run", plots=False, exist_ok=True, verbose=False)
best = Path(out) / "run" / "weights" / "best.pt"
m = YOLO(str(best))
images = json.loads(Path(sys.argv[7]).read_text())
preds = {}
for r in m.predict(images, imgsz=int(imgsz), conf=0.001, max_det=100, device="cpu",
                   verbose=False, stream=True):
    b = r.boxes
    preds[Path(r.path).name] = {"boxes": b.xyxy.tolist(), "scores": b.conf.tolist(),
                                "labels": b.cls.int().tolist()}
rows = list(open(Path(out) / "run" / "results.csv"))
Path(out, "preds.json").write_text(json.dumps({"preds": preds, "epochs": len(rows) - 1,
                                               "best": str(best)}))
"""

PEER_EXPORT = r"""
import sys
from ultralytics import YOLO
best, imgsz, name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = {} if name.startswith("yolo26") else {"nms": True}
print(YOLO(best).export(format="onnx", imgsz=imgsz, device="cpu", **kw))
"""


def venv_python() -> Path:
    """A virtualenv with Ultralytics next to the torch build this machine uses."""
    py = VENV / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(py), "-m", "pip", "install", "-q"]
        import torch
        import torchvision

        tv = torchvision.__version__.split("+")[0]
        subprocess.run(
            pip + [f"torch=={torch.__version__.split('+')[0]}", f"torchvision=={tv}"], check=True
        )
        subprocess.run(pip + ["ultralytics", "onnx", "onnxslim", "onnxruntime"], check=True)
    return py


def score(preds: list[dict], val_ds) -> dict:
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics

    m = coco_metrics(coco_gt(val_ds), coco_dt(preds), engine="pycocotools")
    return {"mAP50-95": round(m["mAP50-95"], 4), "mAP50": round(m["mAP50"], 4)}


def train_detn(tmp: Path, data: Path, val_ds, minutes: float, seed: int, extra=(),
               name: str = "") -> dict:  # fmt: skip
    project = tmp / "runs"
    name = name or f"detn-{seed}"
    rss = run_measured(
        [
            sys.executable,
            "-m",
            "detforge",
            "train",
            "--data",
            str(data),
            "--model",
            "det-n",
            "--pretrained",  # scratch against scratch (the peers train with pretrained=False)
            "none",
            "--time",
            str(minutes),
            "--seed",
            str(seed),
            "--project",
            str(project),
            "--name",
            name,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
    )
    return {**reuse_detn(project / "train" / name, val_ds), "peak_rss_gib": round(rss, 2)}


def reuse_detn(run: Path, val_ds) -> dict:
    """A det-n run this script trained earlier (``--detn-run``), scored again the same way;
    its peak memory is the one that invocation printed."""
    import csv

    import detforge
    from detforge.engine.evaluate.detection import detections

    with open(run / "metrics.csv", newline="") as f:
        epochs = len(list(csv.DictReader(f)))
    det = detforge.load(run / "weights" / "best.pt", device="cpu")
    preds = detections(det, val_ds)
    return {
        **score(preds, val_ds),
        "epochs": epochs,
        "peak_rss_gib": -1.0,
        "weights": str(run / "weights" / "best.pt"),
    }


def train_peer(tmp: Path, py: Path, peer: str, yaml_path: Path, val_ds, minutes, seed,
               imgsz: int = 320, keep: bool = False) -> dict:  # fmt: skip
    """``keep``: also return the val predictions (``preds``, conf 0.001)."""
    out = tmp / f"{peer}-{seed}-{yaml_path.parent.name}"
    images = tmp / "val_images.json"
    images.write_text(json.dumps([str(s.path) for s in val_ds.samples]))
    script = tmp / "peer_train.py"
    script.write_text(PEER_TRAIN)
    rss = run_measured(
        [
            str(py),
            str(script),
            PEERS[peer],
            str(yaml_path),
            str(out),
            str(minutes),
            str(seed),
            str(imgsz),
            str(images),
        ],
        stdout=subprocess.DEVNULL,
        cwd=tmp,
    )
    got = json.loads((out / "preds.json").read_text())
    empty = {"boxes": [], "scores": [], "labels": []}
    preds = [got["preds"].get(s.path.name, empty) for s in val_ds.samples]
    return {
        **score(preds, val_ds),
        "epochs": got["epochs"],
        "peak_rss_gib": round(rss, 2),
        "weights": got["best"],
        **({"preds": preds} if keep else {}),
    }


def export_all(tmp: Path, py: Path, weights: dict) -> dict:
    """{(side, imgsz): onnx path}; detforge's export for det-n, Ultralytics' for the peers."""
    import detforge

    script = tmp / "peer_export.py"
    script.write_text(PEER_EXPORT)
    paths = {}
    for side, w in weights.items():
        for size in (320, 640):
            if side.startswith("det-"):
                out = tmp / f"{side}-{size}.onnx"
                paths[side, size] = detforge.export(w, out, imgsz=size)["path"]
            else:
                r = subprocess.run(
                    [str(py), str(script), w, str(size), side],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                src = Path(r.stdout.strip().splitlines()[-1])
                dst = tmp / f"{side}-{size}.onnx"
                src.replace(dst)
                paths[side, size] = str(dst)
    return paths


def speed(paths: dict, frames: int = 100, rounds: int = 5) -> dict:
    """ms per 640x480 frame: host resize + graph (post-processing inside), interleaved."""
    import cv2
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    video = [rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) for _ in range(8)]
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 2, 1
    runners = {}
    for key, path in paths.items():
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        size, uint8 = key[1], inp.type == "tensor(uint8)"

        def run(frame, sess=sess, name=inp.name, size=size, uint8=uint8):
            x = cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR)
            x = x.transpose(2, 0, 1)[None]
            x = np.ascontiguousarray(x) if uint8 else x.astype(np.float32) / 255.0
            return sess.run(None, {name: x})

        for f in video[:3]:
            run(f)
        runners[key] = run
    spent = dict.fromkeys(runners, 0.0)
    for _ in range(rounds):
        for key, run in runners.items():
            t = time.perf_counter()
            for i in range(frames // rounds):
                run(video[i % len(video)])
            spent[key] += time.perf_counter() - t
    return {f"{k[0]}@{k[1]}": round(v / frames * 1000, 2) for k, v in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=14.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--sides", default="det-n,yolo26n,yolo11n")
    ap.add_argument("--json", default="vs_yolo.json")
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--detn-run", default="", help="a det-n run folder to reuse for seed 0")
    args = ap.parse_args()
    from detforge.data import read

    tmp = scratch("detforge-vs-yolo-")
    data = splits(tmp / "data")
    yaml_path = tmp / "data" / "ultra.yaml"
    yaml_path.write_text(
        f"path: {tmp / 'data'}\ntrain: train/images\nval: val/images\nnames: {{0: raccoon}}\n"
    )
    val_ds = read(tmp / "data" / "val")
    sides = args.sides.split(",")
    py = venv_python() if any(s in PEERS for s in sides) else None
    results: dict = {
        "date": str(date.today()),
        "machine": f"{platform.processor() or 'cpu'}, {os.cpu_count()} cores",
        "minutes": args.minutes,
        "runs": {},
    }
    last = {}
    for seed in map(int, args.seeds.split(",")):
        for side in sides:
            print(f"training {side} seed {seed} for {args.minutes} min", flush=True)
            if side.startswith("det-") and args.detn_run and seed == 0:
                r = reuse_detn(Path(args.detn_run), val_ds)
            elif side.startswith("det-"):
                r = train_detn(tmp, data, val_ds, args.minutes, seed)
            else:
                r = train_peer(tmp, py, side, yaml_path, val_ds, args.minutes, seed)
            results["runs"][f"{side}/seed{seed}"] = r
            last[side] = r.pop("weights")
            print(f"  {side} seed {seed}: {r}", flush=True)
    results["ms_per_frame"] = ms = speed(export_all(tmp, py, last), args.frames)
    lines = [
        "| side | seed | epochs | mAP50-95 | mAP50 | train peak memory (PSS) |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results["runs"].items():
        side, seed = key.split("/")
        lines.append(
            f"| {side} | {seed[4:]} | {r['epochs']} | {r['mAP50-95']:.3f} | "
            f"{r['mAP50']:.3f} | {r['peak_rss_gib']:.2f} GiB |"
        )
    lines += [
        "",
        "| side | ms/frame @320 | ms/frame @640 | fps ratio det-n/side @320 | @640 |",
        "|---|---|---|---|---|",
    ]
    for side in sides:
        a, b = ms[f"{side}@320"], ms[f"{side}@640"]
        lines.append(
            f"| {side} | {a:.1f} | {b:.1f} | {a / ms['det-n@320']:.2f}x | "
            f"{b / ms['det-n@640']:.2f}x |"
            if "det-n" in sides
            else f"| {side} | {a:.1f} | {b:.1f} | | |"
        )
    print("\n".join(lines))
    results["table"] = lines
    Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
