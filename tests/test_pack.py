"""Sharded packing: exact bytes, TF keys, parallel == serial, kill-and-resume == uninterrupted."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import google_crc32c
import pytest
from PIL import Image

from detforge.data import read, write
from detforge.data.records import iter_records, read_label_map
from detforge.data.shards import STATE, pack, parse_shard_size, plan
from detforge.errors import DestinationError, DetforgeError

from conftest import assert_same


def digest(folder: Path) -> dict:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_pack_reads_back_and_keeps_jpeg_bytes(synth_ds, tmp_path):
    index = pack(synth_ds, tmp_path / "p", shard_size=5, workers=1, progress=False)
    assert len(index["shards"]) == 5 and index["records"] == len(synth_ds)
    assert index["boxes"] == synth_ds.num_boxes and index["negatives"] == synth_ds.num_negatives
    assert sum(index["per_class"].values()) == synth_ds.num_boxes
    assert read_label_map(tmp_path / "p" / "label_map.pbtxt") == {
        1: "circle",
        2: "square",
        3: "triangle",
    }
    back = read(tmp_path / "p")
    assert_same(synth_ds, back)
    src = {s.name: s.read_bytes() for s in synth_ds}
    assert all(s.read_bytes() == src[s.name] for s in back)  # never re-encoded
    for sh in index["shards"]:
        data = (tmp_path / "p" / sh["file"]).read_bytes()
        assert f"{google_crc32c.value(data):08x}" == sh["crc32c"] and len(data) == sh["bytes"]


def test_parallel_equals_serial_and_rerun_is_a_no_op(synth_ds, tmp_path):
    pack(synth_ds, tmp_path / "a", shard_size="20KB", workers=1, progress=False)
    pack(synth_ds, tmp_path / "b", shard_size="20KB", workers=2, progress=False)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert len(list((tmp_path / "a").glob("*.tfrecord"))) > 2
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}
    pack(synth_ds, tmp_path / "a", shard_size="20KB", workers=1, progress=False)
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").iterdir()}


def test_refuses_foreign_destination_and_bad_sizes(synth_ds, tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep.txt").write_text("x")
    with pytest.raises(DestinationError):
        pack(synth_ds, tmp_path / "d", progress=False)
    assert parse_shard_size("100MB") == ("bytes", 100_000_000)
    assert parse_shard_size("1000") == ("records", 1000)
    with pytest.raises(DetforgeError, match="shard size"):
        parse_shard_size("lots")
    assert [len(x) for x in plan(synth_ds, 10)] == [10, 10, 4]
    assert [len(x) for x in plan(synth_ds, "1MB")] == [24]


def test_exif_rotated_and_odd_formats_are_reencoded(tmp_path):
    src = tmp_path / "data"
    (src / "images").mkdir(parents=True)
    img = Image.new("RGB", (60, 40), (10, 200, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(src / "images" / "rot.jpg", exif=exif.tobytes())
    img.save(src / "images" / "b.bmp")
    (src / "a.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "rot.jpg,40,60,x,1,2,30,50\nb.bmp,60,40,x,1,1,5,5\n"
    )
    ds = read(src / "a.csv")
    index = pack(ds, tmp_path / "p", workers=1, progress=False)
    assert index["reencoded"] == 2
    back = {s.name: s for s in read(tmp_path / "p")}
    assert back["rot.jpg"].load().shape == (60, 40, 3)  # pixels stored upright, no EXIF needed
    assert back["b.bmp"].read_bytes()[:4] == b"\x89PNG"


KILLER = """
import sys, time
from detforge.data import read, shards
orig = shards.record_image
def slow(s):
    time.sleep(0.08)
    return orig(s)
shards.record_image = slow
shards.pack(read(sys.argv[1]), sys.argv[2], shard_size=4, workers=1, progress=False)
"""


def test_killed_pack_resumes_to_identical_result(synth_ds, tmp_path):
    src = write(synth_ds, tmp_path / "src", "yolo")
    ref = tmp_path / "ref"
    pack(read(src), ref, shard_size=4, workers=1, progress=False)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(src), str(out)])
    state = out / STATE
    deadline = time.time() + 60
    while time.time() < deadline:
        if state.is_file():
            try:
                if len(json.loads(state.read_text())["done"]) >= 2:
                    break
            except ValueError:
                pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = json.loads(state.read_text())["done"]
    assert 2 <= len(done) < 6, "the kill should land mid-pack"
    assert not (out / "index.json").exists()
    complete = {f: (out / f).stat().st_mtime_ns for f in done}
    pack(read(src), out, shard_size=4, workers=2, progress=False)  # resume
    assert digest(out) == digest(ref)
    assert {f: (out / f).stat().st_mtime_ns for f in done} == complete  # kept, not rewritten
    assert not list(out.glob(".*"))  # no temp or state files left


def test_corrupt_shard_is_reported_with_record(synth_ds, tmp_path):
    pack(synth_ds, tmp_path / "p", shard_size=100, workers=1, progress=False)
    f = next((tmp_path / "p").glob("*.tfrecord"))
    raw = bytearray(f.read_bytes())
    offsets = [off for _, off, _ in iter_records(f)]
    raw[offsets[3] + 40] ^= 0x55
    f.write_bytes(bytes(raw))
    from detforge.errors import FormatError

    with pytest.raises(FormatError, match=r"record 3"):
        read(tmp_path / "p")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_scan_agrees_with_pillow(fmt):
    import io

    from detforge.data.tfexample import _exif_orientation, sniff

    for value in range(0, 10):
        exif = Image.Exif()
        exif[0x010F] = "camera"  # another tag first, as cameras write them
        exif[0x0112] = value
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, fmt, exif=exif.tobytes())
        data = buf.getvalue()
        assert _exif_orientation(data, sniff(data)) == (value if 1 <= value <= 8 else 1)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, fmt)
    assert _exif_orientation(buf.getvalue(), sniff(buf.getvalue())) == 1
