"""Is det-n's shipped formula-pretrained start (`--pretrained synthetic`) worth it? Both sides
train det-n on the same data for the same wall-clock budget with the same seeds, one after the
other in this run: from scratch (`--pretrained none`) and from the shipped weights. Scored on
the set's val images (COCO mAP50-95 and mAP50 by detforge's evaluator), with the default
threshold each run stored.

Sets: ``raccoon`` (the shared data's train.txt / val.txt), ``few`` (a generated set of 50 train
and 100 val images: few labels, where pretraining should matter most).

    python benchmarks/bench_pretrain.py [--sets raccoon,few] [--budgets 3,5,14] [--seeds 0,1]
                                        [--json pretrain.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

from _common import scratch

SIDES = ("none", "synthetic")


def few_set(root: Path) -> Path:
    from detforge.data import write
    from detforge.data.synth import generate

    for split, n, seed in (("train", 50, 7), ("val", 100, 1007)):
        ds = generate(root / "render" / split, n, seed=seed, size=(320, 240))
        write(ds, root / split, "yolo")
    (root / "data.yaml").write_text("train: train\nval: val\n")
    return root / "data.yaml"


def data_set(name: str, root: Path) -> Path:
    if name == "raccoon":
        from raccoon_table import splits

        return splits(root)
    if name == "few":
        return few_set(root)
    raise SystemExit(f"unknown set {name!r}: use raccoon or few")


def train_and_score(tmp: Path, data: Path, side: str, minutes: float, seed: int) -> dict:
    import detforge
    from detforge.engine.evaluate.detection import coco_dt, coco_gt, coco_metrics, detections
    from detforge.engine.jobs import eval_split

    name = f"{data.parent.name}-{side}-{minutes:g}-{seed}"
    subprocess.run(
        [sys.executable, "-m", "detforge", "train", "--data", str(data), "--model", "det-n",
         "--time", str(minutes), "--epochs", "1000", "--seed", str(seed), "--pretrained", side,
         "--project", str(tmp / "runs"), "--name", name],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    weights = tmp / "runs" / "train" / name / "weights" / "best.pt"
    det = detforge.load(weights, device="cpu")
    val, _ = eval_split(data, "val")
    m = coco_metrics(coco_gt(val), coco_dt(detections(det, val)))
    return {"mAP50-95": m["mAP50-95"], "mAP50": m["mAP50"], "conf": det.backend.default_conf}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", default="raccoon,few")
    ap.add_argument("--budgets", default="3,5,14", help="minutes, comma-separated")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tmp = scratch("detforge-pretrain-")
    rows = []
    for set_name in args.sets.split(","):
        data = data_set(set_name, tmp / set_name)
        for minutes in (float(b) for b in args.budgets.split(",")):
            for seed in (int(s) for s in args.seeds.split(",")):
                for side in SIDES:  # the two sides back to back: the same machine state
                    r = train_and_score(tmp, data, side, minutes, seed)
                    rows.append({"set": set_name, "minutes": minutes, "seed": seed,
                                 "pretrained": side, **r})  # fmt: skip
                    print(json.dumps(rows[-1]), flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch threads default")
    print(
        "| set | minutes | scratch mAP50-95 | synthetic mAP50-95 | gain | scratch mAP50 "
        "| synthetic mAP50 | gain |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for set_name in args.sets.split(","):
        for minutes in sorted({r["minutes"] for r in rows if r["set"] == set_name}):
            mean = {}
            for side in SIDES:
                got = [r for r in rows if (r["set"], r["minutes"], r["pretrained"])
                       == (set_name, minutes, side)]  # fmt: skip
                mean[side] = {k: sum(r[k] for r in got) / len(got) for k in ("mAP50-95", "mAP50")}
            a, b = mean["none"], mean["synthetic"]
            print(f"| {set_name} | {minutes:g} | {a['mAP50-95']:.3f} | {b['mAP50-95']:.3f} | "
                  f"{b['mAP50-95'] - a['mAP50-95']:+.3f} | {a['mAP50']:.3f} | {b['mAP50']:.3f} | "
                  f"{b['mAP50'] - a['mAP50']:+.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
