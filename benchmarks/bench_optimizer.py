"""What one optimizer step costs, one tensor at a time against PyTorch's fused kernel (what
training uses on CPU and CUDA), for the models detforge trains most. Both are timed in this run,
interleaved, on the same parameters and gradients; the ratio is what counts.

    python benchmarks/bench_optimizer.py                  # det-n, det-s, resnet18; AdamW and SGD
    python benchmarks/bench_optimizer.py --models det-n --steps 50
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from detforge.models import build


def step_ms(opt, steps: int) -> float:
    for _ in range(3):  # first steps allocate the state
        opt.step()
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    return (time.perf_counter() - t0) / steps * 1000


def optimizer(kind: str, params, fused: bool):
    if kind == "sgd":
        return torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True, fused=fused)
    return torch.optim.AdamW(params, lr=1e-3, fused=fused)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["det-n", "det-s", "resnet18"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels")  # fmt: skip
    print(f"{'model':10} {'params':>9} {'optimizer':9} {'one-by-one ms':>14} {'fused ms':>9} "
          f"{'speed-up':>8}")  # fmt: skip
    for name in args.models:
        model = build(name, ["a", "b", "c"])
        params = [p for p in model.parameters() if p.requires_grad]
        for p in params:
            p.grad = torch.randn_like(p)
        n = sum(p.numel() for p in params)
        for kind in ("adamw", "sgd"):
            plain, fused = [], []
            for _ in range(args.rounds):  # interleaved, so drift hits both alike
                plain.append(step_ms(optimizer(kind, params, False), args.steps))
                fused.append(step_ms(optimizer(kind, params, True), args.steps))
            a, b = statistics.median(plain), statistics.median(fused)
            print(f"{name:10} {n / 1e6:8.2f}M {kind:9} {a:14.1f} {b:9.1f} {a / b:7.1f}x")


if __name__ == "__main__":
    main()
