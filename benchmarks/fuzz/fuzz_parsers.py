"""Coverage-guided fuzzing of detforge's parsers with atheris (libFuzzer).

    pip install atheris
    python benchmarks/fuzz/fuzz_parsers.py all --seconds 120     # each target, a table at the end
    python benchmarks/fuzz/fuzz_parsers.py labelme --seconds 600  # one target

Targets: labelme, voc, coco, yolo, csv, tfrecord, labelmap. Each input is written as that
format's file beside a real image and read with ``detforge.data.read`` (``read_label_map`` for
labelmap). A DetforgeError is the documented answer to a bad file; any other exception is a
crash: libFuzzer saves the input under ``benchmarks/fuzz/crashes/`` and it belongs in the test
corpus (``tests/badinputs.py``) once fixed. Seeds are written by detforge's own writers.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS = {  # target -> (file name of the fuzzed input, format)
    "labelme": ("a.json", "labelme"),
    "voc": ("a.xml", "voc"),
    "coco": ("annotations.json", "coco"),
    "yolo": ("labels/a.txt", "yolo"),
    "csv": ("labels.csv", "csv"),
    "tfrecord": ("x.record", "tfrecord"),
    "labelmap": ("label_map.pbtxt", None),
}


def _image() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 90, 200)).save(buf, "JPEG")
    return buf.getvalue()


def write_seeds(target: str, folder: Path) -> None:
    """A few valid inputs for ``target``, written by detforge itself."""
    from detforge.data import write
    from detforge.data.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        ds = generate(Path(tmp) / "img", 3, seed=0, size=(64, 48))
        name, fmt = TARGETS[target]
        out = write(ds, Path(tmp) / "out", fmt or "tfrecord")
        if target == "labelmap":
            files = [out / "label_map.pbtxt"]
        elif target == "tfrecord":
            files = sorted(out.glob("*.tfrecord"))
        elif target == "yolo":
            files = sorted((out / "labels").glob("*.txt"))
        else:
            files = sorted(p for p in out.rglob("*") if p.suffix == Path(name).suffix)
        for k, f in enumerate(files[:3]):
            (folder / f"seed{k}").write_bytes(f.read_bytes())


def make_target(target: str):
    from detforge.data import read
    from detforge.data.records import read_label_map
    from detforge.errors import DetforgeError

    work = Path(tempfile.mkdtemp(prefix=f"fuzz-{target}-"))
    image = _image()
    for p in ("a.jpg", "images/a.jpg", "img/synth_000000.jpg"):
        (work / p).parent.mkdir(parents=True, exist_ok=True)
        (work / p).write_bytes(image)
    (work / "labels").mkdir(exist_ok=True)
    name, fmt = TARGETS[target]
    path = work / name
    warnings.simplefilter("ignore")

    def one_input(data: bytes) -> None:
        path.write_bytes(data)
        try:
            if fmt is None:
                read_label_map(path)
            else:
                read(work if target == "yolo" else path, fmt)
        except DetforgeError:
            pass  # the documented answer to a bad file

    return one_input


def run_one(target: str, seconds: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["detforge"]):
        import detforge.data  # noqa: F401
        import detforge.data.records  # noqa: F401
    corpus = Path(tempfile.mkdtemp(prefix=f"corpus-{target}-"))
    write_seeds(target, corpus)
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
        "-rss_limit_mb=4096",
        "-timeout=20",
    ]
    atheris.Setup(argv, make_target(target))
    atheris.Fuzz()


def run_all(seconds: int) -> None:
    rows = []
    for target in TARGETS:
        r = subprocess.run(
            [sys.executable, __file__, target, "--seconds", str(seconds)],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        execs = re.search(r"stat::number_of_executed_units:\s*(\d+)", r.stderr)
        crashed = "crash-" in r.stderr or "Uncaught Python exception" in r.stderr
        rows.append((target, int(execs.group(1)) if execs else 0, "CRASH" if crashed else "ok"))
        print(f"{target:9s} {rows[-1][1]:9d} inputs in {seconds}s: {rows[-1][2]}", flush=True)
        if crashed:
            print(r.stderr[-3000:])
    total = sum(r[1] for r in rows)
    bad = [r[0] for r in rows if r[2] != "ok"]
    print(f"total {total} inputs, {len(rows) * seconds}s; crashes in: {', '.join(bad) or 'none'}")
    sys.exit(1 if bad else 0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("target", choices=[*TARGETS, "all"])
    ap.add_argument("--seconds", type=int, default=60)
    args, _ = ap.parse_known_args()
    if args.target == "all":
        run_all(args.seconds)
    else:
        run_one(args.target, args.seconds)


if __name__ == "__main__":
    main()
