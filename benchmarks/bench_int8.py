"""INT8 and bf16 on this CPU, every figure a ratio measured in this run: det-n, det-s and
det-m exported to onnxruntime (fp32, QDQ int8) and OpenVINO (fp32, NNCF int8, bf16 where the
CPU has it), and resnet18 in onnxruntime vs OpenVINO.

Speed is end to end as a user's loop sees it: ``detforge.load(path, threads=2).predict(frame)``
on 640x480 frames (host resize into the graph's input included), batch 1, the variants
interleaved round by round and each one's fastest round kept. Accuracy is mAP50-95 on the
raccoon val split (the shared data's val.txt) at the size det-n trained at.

    python benchmarks/bench_int8.py [--weights RUN/weights/best.pt] [--train-minutes 5]
                                    [--models det-n,det-s,det-m] [--sizes 320,640]
                                    [--rounds 5] [--frames 20]

Without --weights, det-n trains on raccoon's train.txt first (--train-minutes). det-s and det-m
run with random weights nudged off zero, calibrated on raccoon too: their rows are speed only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from raccoon_table import splits

from _common import scratch

THREADS = 2


def trained_det_n(tmp: Path, minutes: float) -> tuple[Path, Path]:
    data = splits(tmp / "raccoon")
    subprocess.run(
        [sys.executable, "-m", "detforge", "train", "--data", str(data), "--model", "det-n",
         "--time", str(minutes), "--epochs", "1000", "--project", str(tmp / "runs"),
         "--name", "int8"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return tmp / "runs" / "train" / "int8" / "weights" / "best.pt", data


def variants(weights: Path, data: Path, tmp: Path, size: int, trained: bool = True) -> dict:
    """name -> (path, load options); the int8 exports' own fp32-vs-int8 reports printed."""
    import detforge
    from detforge.engine.export.int8 import export_int8

    stem = f"{weights.stem}-{size}"
    onnx = detforge.export(weights, tmp / f"{stem}.onnx", imgsz=size, check=False)["path"]
    ir = detforge.export(weights, tmp / f"{stem}.xml", format="openvino", imgsz=size,
                         check=False, int8=True, data=str(data))  # fmt: skip
    q = export_int8(weights, Path(onnx), tmp / f"{stem}-int8.onnx", data=str(data))
    for name, r in (("onnxruntime", q), ("OpenVINO", ir["int8"])):
        if trained:
            print(
                f"  {size}: {name} int8 vs fp32 on {r['val_split']} (as trained: 320 -> "
                f"{size}): mAP50-95 {r['fp32']:.4f} -> {r['int8']:.4f} ({r['change']:+.4f})"
            )
    out = {
        "ort fp32": (onnx, {}),
        "ort int8": (q["path"], {}),
        "ov fp32": (ir["path"], {}),
        "ov int8": (ir["int8"]["path"], {}),
    }
    from detforge.engine.export.openvino import cpu_has_bf16

    if cpu_has_bf16():
        out["ov bf16"] = (ir["path"], {"precision": "bf16"})
    return out


def interleaved_ms(models: dict, frames: list, rounds: int) -> dict:
    """ms per frame of each model: the fastest of ``rounds`` rounds, models interleaved."""
    import detforge
    from detforge.engine.export.int8 import interleaved_ms as turns

    loaded = {k: detforge.load(p, threads=THREADS, **o) for k, (p, o) in models.items()}
    return dict(zip(loaded, turns([d.predict for d in loaded.values()], frames, rounds)))


def accuracy(models: dict, data: Path) -> dict:
    import detforge
    from detforge.engine.scoring import eval_split
    from detforge.engine.tasks import task

    val, _ = eval_split(str(data), "val")
    return {
        k: task("detect").score(detforge.load(p, **o), val).metrics["mAP50-95"]
        for k, (p, o) in models.items()
    }


def resnet18(tmp: Path, frames: list, rounds: int) -> None:
    import detforge

    w = jittered(tmp, "resnet18", imgsz=224)
    models = {
        "ort fp32": (detforge.export(w, tmp / "r18.onnx", check=False)["path"], {}),
        "ov fp32": (
            detforge.export(w, tmp / "r18.xml", format="openvino", check=False)["path"],
            {},
        ),  # fmt: skip
    }
    ms = interleaved_ms(models, frames, rounds)
    print(f"resnet18 at 224, batch 1, {THREADS} threads, 640x480 frames: onnxruntime "
          f"{1000 / ms['ort fp32']:.1f} frames/s, OpenVINO {1000 / ms['ov fp32']:.1f} "
          f"({ms['ort fp32'] / ms['ov fp32']:.2f}x)")  # fmt: skip


def jittered(tmp: Path, model: str, imgsz: int = 320) -> Path:
    """A random-weight checkpoint nudged off zero (the tests' helper)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import jittered_checkpoint

    return jittered_checkpoint(tmp / f"{model}.pt", model, imgsz=imgsz)


def table(model, size, weights, data, tmp, frames, rounds, trained) -> None:
    models = variants(weights, data, tmp, size, trained)
    ms = interleaved_ms(models, frames, rounds)
    maps = accuracy(models, data) if trained and size == 320 else {}
    print(
        f"{model}{'' if trained else ' (random weights)'} at {size}, batch 1, {THREADS} "
        "threads, 640x480 frames (host resize included), fastest of interleaved rounds:"
    )
    for k in models:
        m = f", mAP50-95 {maps[k]:.4f}" if k in maps else ""
        ref = "ort fp32" if k.startswith("ort") else "ov fp32"
        print(f"  {k:9s} {ms[k]:6.2f} ms  {ms[ref] / ms[k]:.2f}x its runtime's fp32{m}")
    print(f"  OpenVINO fp32 vs onnxruntime fp32: {ms['ort fp32'] / ms['ov fp32']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--data", type=Path, help="the weights' data.yaml (default: raccoon)")
    ap.add_argument("--train-minutes", type=float, default=5.0)
    ap.add_argument("--models", default="det-n,det-s,det-m")
    ap.add_argument("--sizes", default="320,640")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--frames", type=int, default=20)
    a = ap.parse_args()
    tmp = scratch("detforge-int8-")
    if a.weights:
        weights, data = a.weights, a.data or splits(tmp / "raccoon")
    else:
        weights, data = trained_det_n(tmp, a.train_minutes)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(a.frames)]
    for model in a.models.split(","):
        trained = model == "det-n"
        w = weights if trained else jittered(tmp, model)
        for size in (int(s) for s in a.sizes.split(",")):
            table(model, size, w, data, tmp, frames, a.rounds, trained)
    resnet18(tmp, frames, a.rounds)


if __name__ == "__main__":
    main()
