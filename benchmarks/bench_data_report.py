"""`detforge data report` on a large synthetic set: time, peak memory, page size, and how fast
the page opens in Chromium; 1k vs 20k images in one run, each report in a fresh process.

    python benchmarks/bench_data_report.py [--small 1000] [--large 20000] [--size 160]

Goals (issue 14): 20k images in under 2 minutes on 2 cores, peak memory flat in dataset
size like the rest of the data layer (large <= 1.2x small plus the page's own index, a few
hundred bytes per image), the page under 5 MB plus thumbnails, open in under 2 s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from _common import scratch

CHILD = r"""
import json, sys, time
from pathlib import Path
t = time.perf_counter()
import detforge
page = detforge.data_report(sys.argv[1], sys.argv[2], progress=False)
seconds = time.perf_counter() - t
status = Path("/proc/self/status").read_text()
peak_kb = int(next(l.split()[1] for l in status.splitlines() if l.startswith("VmHWM")))
print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "page": str(page)}))
"""


def open_seconds(page: Path) -> float | None:
    """Seconds from navigation until the image grid is drawn, in headless Chromium."""
    import shutil

    exe = next((shutil.which(n) for n in ("chromium", "google-chrome") if shutil.which(n)), None)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if exe is None:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox"])
        view = browser.new_page()
        t = time.perf_counter()
        view.goto(page.resolve().as_uri(), wait_until="load")
        view.wait_for_function(
            "document.querySelector('#images-gallery [data-role=status]').dataset.total"
        )
        seconds = time.perf_counter() - t
        browser.close()
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--size", type=int, default=160)
    args = ap.parse_args()
    from detforge.data import write
    from detforge.data.synth import generate

    tmp = scratch("detforge-report-")
    rows = {}
    for n in (args.small, args.large):
        t = time.perf_counter()
        src = write(generate(tmp / f"img{n}", n, size=(args.size, args.size)), tmp / f"yolo{n}",
                    "yolo", images="link")  # fmt: skip
        print(f"generated {n} images in {time.perf_counter() - t:.0f} s", flush=True)
        out = tmp / f"report{n}"
        r = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out)], check=True,
                           capture_output=True, text=True)  # fmt: skip
        m = json.loads(r.stdout.strip().splitlines()[-1])
        page = Path(m["page"])
        thumbs = list((out / "report_files" / "thumbs").glob("*.jpg"))
        m.update(
            page_mb=page.stat().st_size / 2**20,
            thumbs=len(thumbs),
            thumbs_mb=sum(p.stat().st_size for p in thumbs) / 2**20,
            open_s=open_seconds(page),
        )
        rows[n] = m
        print(f"  {n} images: {json.dumps({k: v for k, v in m.items() if k != 'page'})}")
    a, b = rows[args.small], rows[args.large]
    print(
        f"\n{args.large} images: {b['seconds']:.0f} s ({b['seconds'] / 60:.2f} min; "
        f"{args.large / b['seconds']:.0f} images/s), peak {b['peak_mb']:.0f} MB "
        f"({b['peak_mb'] / a['peak_mb']:.2f}x of {args.small} images), page "
        f"{b['page_mb']:.2f} MB + {b['thumbs_mb']:.0f} MB of thumbnails, opens in "
        f"{b['open_s'] if b['open_s'] is None else round(b['open_s'], 2)} s"
    )


if __name__ == "__main__":
    main()
