"""Does micro-batching pay in `detforge serve`? Throughput and latency of concurrent clients
against the same model served with --batch 1 (every request alone) and --batch 8, both
servers measured in this run, interleaved, on loopback.

    python benchmarks/bench_serve.py [--model det-n] [--clients 8] [--requests 200]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import scratch


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(weights: Path, batch: int):
    import httpx

    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "detforge", "serve", str(weights), "--port", str(port),
         "--batch", str(batch), "--wait-ms", "3"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def load(url: str, body: bytes, clients: int, requests: int) -> dict:
    import httpx

    lat: list[float] = []
    per = requests // clients

    def client():
        with httpx.Client(timeout=120) as c:
            for _ in range(per):
                t = time.perf_counter()
                c.post(url + "/predict", content=body).raise_for_status()
                lat.append(time.perf_counter() - t)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"rps": len(lat) / wall, "p50_ms": 1000 * float(np.median(lat)),
            "p95_ms": 1000 * float(np.percentile(lat, 95))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="det-n")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import torch

    from detforge.models import build, save_checkpoint

    tmp = scratch("detforge-serve-")
    weights = save_checkpoint(tmp / "m.pt", build(args.model, ["a", "b", "c"]))
    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=90)
    servers = {b: start(weights, b) for b in (1, 8)}
    got: dict = {b: [] for b in servers}
    try:
        for url in (u for _, u in servers.values()):  # warm up
            load(url, buf.getvalue(), args.clients, args.clients * 2)
        for _ in range(args.rounds):
            for b, (_, url) in servers.items():
                got[b].append(load(url, buf.getvalue(), args.clients, args.requests))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    print(f"{args.model}, 640x480 JPEG, {args.clients} clients, {args.requests} requests x "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}")  # fmt: skip
    for b, rows in got.items():
        rps = np.median([r["rps"] for r in rows])
        p50 = np.median([r["p50_ms"] for r in rows])
        p95 = np.median([r["p95_ms"] for r in rows])
        print(f"--batch {b}: {rps:.1f} requests/s, p50 {p50:.0f} ms, p95 {p95:.0f} ms")
    ratio = np.median([r["rps"] for r in got[8]]) / np.median([r["rps"] for r in got[1]])
    print(f"micro-batching gain: {ratio:.2f}x requests/s")


if __name__ == "__main__":
    main()
