"""The learning tests' figures over training seeds x PyTorch kernel paths, against their bars.

A test that trains from scratch and asserts a bar (``pytest -m learning``) must hold it on every
x86 CPU: floating-point differences at the last bit (AVX2 vs AVX-512 kernels) move a short run,
and a bar that sits on a knife's edge passes on one machine and fails on the next. This runs the
learning tests once per (``ATEN_CPU_CAPABILITY``, ``DETFORGE_TEST_SEED``) cell, each writing its
measured values (``hold_bars`` in tests/conftest.py), and prints per metric every cell, the worst
value, the bar and the margin between them.

    python benchmarks/learning_margins.py                       # default/avx2/avx512 x seeds 0-2
    python benchmarks/learning_margins.py --caps avx2 --seeds 0 1 -k classif
    python benchmarks/learning_margins.py --log runs/margins.jsonl   # add to (or resume) a log
    python benchmarks/learning_margins.py --cells avx512:0 avx2:1 --workers auto  # as CI runs

``--workers N`` runs each cell as ``pytest -n N`` does (each worker trains on its share of the
cores, one thread on two cores: another last-bit path); its columns are marked ``/nN``.

A cell already in ``--log`` is not run again; ``--table`` only prints the log's table. Kernel
paths the CPU lacks are skipped (PyTorch would fall back to a lower one).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPS = ("default", "avx2", "avx512")


def available(cap: str) -> bool:
    """Whether PyTorch runs ``cap`` kernels here (it silently falls back when the CPU lacks it)."""
    code = "import torch; print(torch.backends.cpu.get_cpu_capability())"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap}
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return got.stdout.strip().lower() == cap


def run_cell(cap: str, seed: int, log: Path, select: str | None, workers: str | None):
    """The learning tests under one kernel path and seed (``pytest -n workers`` when set);
    their values go to ``log``. Returns pytest's exit code and the seconds taken."""
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "DETFORGE_TEST_SEED": str(seed),
           "DETFORGE_LEARNING_LOG": str(log)}  # fmt: skip
    cmd = [sys.executable, "-m", "pytest", "-m", "learning", "-q", "-p", "no:cacheprovider"]
    cmd += ["-k", select] if select else []
    cmd += ["-n", workers] if workers else []
    t0 = time.time()
    rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL).returncode
    return rc, time.time() - t0


def read_log(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def cell(row: dict) -> tuple[str, int, int]:
    """A logged value's cell: kernel path, seed, pytest workers (1 in logs from before)."""
    return row["kernels"].lower(), row["seed"], row.get("workers", 1)


def table(rows: list[dict]) -> str:
    """Per metric: each cell's value, the worst, the bar and the margin (worst minus bar,
    signed so that positive means held)."""
    cells = sorted({cell(r) for r in rows})
    by_metric: dict = defaultdict(dict)
    bars = {}
    for r in rows:
        key = f"{r['test']}: {r['metric']}"
        by_metric[key][cell(r)] = r["value"]
        bars[key] = (r["op"], r["bar"])
    label = {(c, s, n): f"{c}/s{s}" + (f"/n{n}" if n > 1 else "") for c, s, n in cells}
    head = ["metric", *(label[c] for c in cells), "worst", "bar", "margin"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in sorted(by_metric):
        op, bar = bars[key]
        vals = by_metric[key]
        worst = (min if op == ">=" else max)(vals.values())
        margin = worst - bar if op == ">=" else bar - worst
        row = [key, *(f"{vals[c]:.3g}" if c in vals else "-" for c in cells)]
        row += [f"{worst:.3g}", f"{op} {bar:g}", f"{margin:+.3g}"]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--caps", nargs="+", default=list(CAPS), choices=CAPS)
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--cells", nargs="+", metavar="CAP:SEED",
                    help="run these cells in this order instead of caps x seeds")  # fmt: skip
    ap.add_argument("-k", dest="select", help="pytest -k expression: a subset of the tests")
    ap.add_argument("--log", type=Path, default=ROOT / "runs" / "learning_margins.jsonl")
    ap.add_argument("--table", action="store_true", help="print the log's table, run nothing")
    ap.add_argument("--workers", help="run each cell as pytest -n WORKERS (auto: one per core)")
    args = ap.parse_args()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    if not args.table:
        n = (os.cpu_count() or 1) if args.workers == "auto" else int(args.workers or 1)
        done = {cell(r)[:2] for r in read_log(args.log) if cell(r)[2] == n}
        cells = [(c, s) for c in args.caps for s in args.seeds]
        if args.cells:
            cells = [(c, int(s)) for c, s in (x.split(":") for x in args.cells)]
        have = {c: available(c) for c in {c for c, _ in cells}}
        for cap, seed in cells:
            if not have[cap]:
                print(f"{cap}: this CPU has no such kernels; skipped", flush=True)
            elif (cap, seed) not in done or args.select:
                rc, seconds = run_cell(cap, seed, args.log, args.select, args.workers)
                status = "passed" if rc == 0 else f"FAILED (pytest exit {rc})"
                print(f"{cap} seed {seed}: {status} in {seconds:.0f} s", flush=True)
    print(table(read_log(args.log)))


if __name__ == "__main__":
    main()
