"""`detforge serve` under load, on loopback, every figure against a baseline measured in this
run. Parts (``--parts``, default all):

- ``load``: det-n exported to ONNX at 320 (batch 1) on 640x480 JPEGs. The in-process
  Predictor (decode + predict, one image at a time, and in batches of 8) against the server
  driven by ``wrk`` (Debian's, a C load generator) at 1, 4 and 16 connections: images/s,
  p50 / p99 latency. Goals: >= 0.85x the in-process images/s at concurrency >= 4, p99 at
  concurrency 1 under 2x the in-process latency.
- ``batching``: the same server with ``--batch 1`` and ``--batch 8`` at 8 connections.
- ``soak``: 10,000 requests, every tenth a bad one (not an image, truncated, a bad ``conf``,
  an empty body): 5xx answers, restarts, and the server's RSS after the first 1,000 and at
  the end (goal: 0, 0, within 10%).
- ``live``: an RTSP camera at 30 frames/s (FFmpeg, tests/rtsp_camera.py) into det-s at 640,
  slower than the camera: frames received, processed and dropped, and the delay from a
  frame's arrival to its result (p50, p99).

    apt-get install wrk ffmpeg
    python benchmarks/bench_serve.py [--parts load,batching,soak,live] [--seconds 15]
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from _common import scratch

LUA = r"""
local function slurp(p)
  local f = assert(io.open(p, "rb")); local d = f:read("*a"); f:close(); return d
end
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args)
  local jpeg = slurp(args[1])
  good = wrk.format("POST", "/predict", {["Content-Type"] = "image/jpeg"}, jpeg)
  bads = {}
  if args[2] ~= nil and args[2] ~= "" then
    bads[1] = wrk.format("POST", "/predict", {["Content-Type"] = "text/plain"}, "not an image")
    bads[2] = wrk.format("POST", "/predict", {["Content-Type"] = "image/jpeg"}, slurp(args[2]))
    bads[3] = wrk.format("POST", "/predict?conf=7", {["Content-Type"] = "image/jpeg"}, jpeg)
    bads[4] = wrk.format("POST", "/predict", {["Content-Type"] = "image/jpeg"}, "")
  end
  n = 0; s2 = 0; s4 = 0; s5 = 0; other = 0
end
function request()
  n = n + 1
  if #bads > 0 and n % 10 == 0 then return bads[math.floor(n / 10) % #bads + 1] end
  return good
end
function response(status, headers, body)
  if status >= 500 then s5 = s5 + 1
  elseif status >= 400 then s4 = s4 + 1
  elseif status >= 200 and status < 300 then s2 = s2 + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  for _, t in ipairs(threads) do
    io.write(string.format("STATUS %d %d %d %d\n",
                           t:get("s2"), t:get("s4"), t:get("s5"), t:get("other")))
  end
end
"""
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(weights: Path, *args: str):
    import httpx

    port = _port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "detforge", "serve", str(weights), "--port", str(port), *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/health", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def wrk(url: str, lua: Path, jpeg: Path, connections: int, seconds: float,
        bad: Path | None = None) -> dict:  # fmt: skip
    """One wrk run (one thread, ``connections`` open connections): requests/s, p50/p99 ms,
    and the answers by class (2xx, 4xx, 5xx) counted by the script."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "60s",
           "--latency", "-s", str(lua), url + "/predict",
           "--", str(jpeg), str(bad or "")]  # fmt: skip
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    pct = {int(p): float(v) * UNIT[u] for p, v, u in
           re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}  # fmt: skip
    ok, c4, c5, other = map(int, re.search(r"STATUS (\d+) (\d+) (\d+) (\d+)", text).groups())
    return {"rps": rps, "p50": pct[50], "p99": pct[99], "2xx": ok, "4xx": c4, "5xx": c5 + other,
            "n": ok + c4 + c5 + other}  # fmt: skip


def in_process(weights: Path, jpeg: bytes, seconds: float) -> dict:
    """The Predictor in this process on the same JPEG: decode + predict one at a time
    (images/s, p50/p99 ms), and decode + predict in batches of 8 (images/s)."""
    import detforge
    from detforge.data.image import decode
    from detforge.engine.infer.inputs import Frame

    det = detforge.load(weights, device="cpu")
    for _ in range(5):
        det.run([Frame(decode(jpeg, "a.jpg"), "a.jpg")])
    lat, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        t = time.perf_counter()
        det.run([Frame(decode(jpeg, "a.jpg"), "a.jpg")])
        lat.append(time.perf_counter() - t)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        det.run([Frame(decode(jpeg, "a.jpg"), "a.jpg") for _ in range(8)])
        n += 8
    ms = np.percentile(np.array(lat) * 1000, [50, 99])
    return {"rps": len(lat) / sum(lat), "p50": ms[0], "p99": ms[1],
            "rps8": n / (time.perf_counter() - t0)}  # fmt: skip


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def part_load(onnx: Path, lua: Path, jpeg: Path, seconds: float) -> None:
    base = in_process(onnx, jpeg.read_bytes(), seconds)
    print(f"in-process Predictor: {base['rps']:.1f} images/s one at a time (p50 "
          f"{base['p50']:.1f} ms, p99 {base['p99']:.1f} ms); {base['rps8']:.1f} images/s in "
          "batches of 8")  # fmt: skip
    proc, url = start(onnx)
    try:
        wrk(url, lua, jpeg, 4, 3)  # warm up
        print("| connections | images/s | vs in-process | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for c in (1, 4, 16):
            r = wrk(url, lua, jpeg, c, seconds)
            print(f"| {c} | {r['rps']:.1f} | {r['rps'] / base['rps']:.2f}x | {r['p50']:.1f} | "
                  f"{r['p99']:.1f} |")  # fmt: skip
            if c == 1:
                p99 = r["p99"] / base["p50"]
        print(f"p99 at 1 connection: {p99:.2f}x the in-process p50 latency (goal < 2x)")
    finally:
        proc.terminate()
        proc.wait(30)


def part_batching(onnx: Path, lua: Path, jpeg: Path, seconds: float) -> None:
    got = {}
    for batch in (1, 8):
        proc, url = start(onnx, "--batch", str(batch))
        try:
            wrk(url, lua, jpeg, 8, 3)
            got[batch] = wrk(url, lua, jpeg, 8, seconds)
        finally:
            proc.terminate()
            proc.wait(30)
        r = got[batch]
        print(f"--batch {batch}, 8 connections: {r['rps']:.1f} images/s, p50 {r['p50']:.1f} ms")
    print(f"micro-batching gain: {got[8]['rps'] / got[1]['rps']:.2f}x")


def part_soak(onnx: Path, lua: Path, jpeg: Path, truncated: Path, total: int) -> None:
    """At least ``total`` requests, in wrk runs of a few seconds until the count is reached;
    the RSS after the first run (about 1,000 requests) and at the end."""
    proc, url = start(onnx)
    try:
        first = wrk(url, lua, jpeg, 4, 5, truncated)
        rss1 = rss_mb(proc.pid)
        n = {k: first[k] for k in ("2xx", "4xx", "5xx")}
        seconds = max(1000 / max(first["n"] / 5, 1), 1)  # about 1,000 requests a run
        while sum(n.values()) < total and proc.poll() is None:
            r = wrk(url, lua, jpeg, 4, seconds, truncated)
            n = {k: n[k] + r[k] for k in n}
        rss2 = rss_mb(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(30)
    print(f"{sum(n.values())} requests (every tenth bad): {n['2xx']} answered 2xx, {n['4xx']} "
          f"4xx, {n['5xx']} 5xx or other; server alive: {alive} (0 restarts)")  # fmt: skip
    print(f"RSS after the first {first['n']}: {rss1:.0f} MB, at the end: {rss2:.0f} MB "
          f"({100 * (rss2 / rss1 - 1):+.1f}%)")  # fmt: skip


def part_live(tmp: Path, seconds: float) -> None:
    if not shutil.which("ffmpeg"):
        print("live: skipped, FFmpeg is not installed (apt-get install ffmpeg)")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import detforge
    from detforge.models import build, save_checkpoint

    from rtsp_camera import RtspCamera

    weights = save_checkpoint(tmp / "s.pt", build("det-s", ["a", "b", "c"], imgsz=640))
    cam = RtspCamera(tmp)
    cam.start()
    threading.Timer(seconds, cam.stop).start()  # the camera goes away for good: the run ends
    try:
        s = detforge.predict(weights, cam.url(), save=False, reconnect=0, progress=False,
                             out=tmp / "live", device="cpu")  # fmt: skip
    finally:
        cam.close()
    st = s["stream"]
    print(f"RTSP camera at 30 frames/s into det-s@640 at {s['fps']} frames/s: {st['received']} "
          f"frames received, {st['processed']} processed, {st['dropped']} dropped; frame to "
          f"result p50 {st['latency_ms_p50']} ms, p99 {st['latency_ms_p99']} ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="load,batching,soak,live")
    ap.add_argument("--seconds", type=float, default=15.0, help="per measurement")
    ap.add_argument("--requests", type=int, default=10_000, help="for the soak part")
    args = ap.parse_args()
    import torch

    import detforge
    from detforge.models import build, save_checkpoint

    parts = args.parts.split(",")
    if {"load", "batching", "soak"} & set(parts) and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    tmp = scratch("detforge-serve-")
    pt = save_checkpoint(tmp / "n.pt", build("det-n", ["a", "b", "c"], imgsz=320))
    onnx = Path(detforge.export(pt, tmp / "n.onnx")["path"])  # batch 1: as predict runs it
    frame = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, "JPEG", quality=90)
    jpeg, truncated, lua = tmp / "a.jpg", tmp / "cut.jpg", tmp / "post.lua"
    jpeg.write_bytes(buf.getvalue())
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    lua.write_text(LUA)
    print(f"det-n ONNX at 320, 640x480 JPEG, torch threads {torch.get_num_threads()}, loopback")
    if "load" in parts:
        part_load(onnx, lua, jpeg, args.seconds)
    if "batching" in parts:
        part_batching(onnx, lua, jpeg, args.seconds)
    if "soak" in parts:
        part_soak(onnx, lua, jpeg, truncated, args.requests)
    if "live" in parts:
        part_live(tmp, 2 * args.seconds)


if __name__ == "__main__":
    main()
