"""Where det-n's time goes in OpenVINO, fp32 against NNCF int8: per-layer times from the CPU
plugin's own counters (``PERF_COUNT``), summed by layer type and by the kernel that ran
(``exec_type``: an ``I8`` kernel or an ``FP32`` one), both IRs from the same weights, batch 1,
2 threads, measured in this run. It answers why int8 pays less at 320 than at 640: what is
left in float, what the int8 convolutions gain, and what the quantize / reorder steps cost.

    python benchmarks/profile_openvino.py [--weights best.pt] [--imgsz 320] [--runs 300]

Without --weights a det-n with random weights is calibrated on generated images (the timing
does not depend on what the weights learned).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from _common import scratch


def profile(xml: Path, runs: int) -> tuple[float, dict, dict]:
    """(ms a run, {layer type: ms}, {exec type: ms}) from the plugin's counters."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(xml), "CPU", {
        "PERF_COUNT": True, "INFERENCE_NUM_THREADS": 2, "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32"})  # fmt: skip
    port = compiled.input(0)
    x = np.random.default_rng(0).integers(0, 255, tuple(port.shape)).astype(
        port.element_type.to_dtype())  # fmt: skip
    req = compiled.create_infer_request()
    for _ in range(20):
        req.infer({0: x})
    by_type: dict = defaultdict(float)
    by_exec: dict = defaultdict(float)
    for _ in range(runs):
        req.infer({0: x})
        for p in req.profiling_info:
            ms = p.real_time.total_seconds() * 1000
            by_type[p.node_type] += ms / runs
            kind = "I8" if "I8" in p.exec_type.upper() else p.exec_type.split("_")[-1].upper()
            by_exec[f"{p.node_type} [{kind}]"] += ms / runs
    return sum(by_type.values()), dict(by_type), dict(by_exec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path)
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--runs", type=int, default=300)
    args = ap.parse_args()
    import detforge
    from detforge.data import write
    from detforge.data.synth import generate
    from detforge.models import build, save_checkpoint

    tmp = scratch("detforge-ovprof-")
    weights = args.weights
    data = None
    if weights is None:
        weights = save_checkpoint(tmp / "n.pt", build("det-n", ["a", "b", "c"], imgsz=320))
        for split, seed in (("train", 0), ("val", 1)):
            write(generate(tmp / "gen" / split, 32, seed=seed, size=(320, 240)),
                  tmp / "data" / split, "yolo")  # fmt: skip
        (tmp / "data" / "data.yaml").write_text("train: train\nval: val\n")
        data = str(tmp / "data" / "data.yaml")
    ir = detforge.export(weights, tmp / "n.xml", format="openvino", imgsz=args.imgsz,
                         check=False, int8=True, data=data)  # fmt: skip
    f32 = profile(Path(ir["path"]), args.runs)
    i8 = profile(Path(ir["int8"]["path"]), args.runs)
    print(f"det-n at {args.imgsz}, batch 1, 2 threads, {args.runs} runs: layers sum to "
          f"{f32[0]:.3f} ms fp32, {i8[0]:.3f} ms int8 ({f32[0] / i8[0]:.2f}x)")  # fmt: skip
    print("\n| layer type | fp32 ms | int8 ms | ratio |\n|---|---|---|---|")
    for t in sorted(set(f32[1]) | set(i8[1]), key=lambda t: -f32[1].get(t, i8[1].get(t, 0))):
        a, b = f32[1].get(t, 0.0), i8[1].get(t, 0.0)
        if max(a, b) >= 0.005:
            ratio = f"{a / b:.2f}x" if a and b else "-"
            print(f"| {t} | {a:.3f} | {b:.3f} | {ratio} |")
    print("\n| int8 IR: layer type [kernel] | ms | share |\n|---|---|---|")
    for t, ms in sorted(i8[2].items(), key=lambda kv: -kv[1])[:15]:
        print(f"| {t} | {ms:.3f} | {100 * ms / i8[0]:.1f}% |")


if __name__ == "__main__":
    main()
