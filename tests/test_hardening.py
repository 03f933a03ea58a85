"""Hardening: errors cross processes, files keep the umask, full disks get one line."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pickle
import pkgutil
import subprocess
import sys

import pytest

import detforge
from detforge.errors import DetforgeError, DiskFullError
from detforge.fileio import atomic_write_bytes


def _all_error_classes() -> list[type]:
    for m in pkgutil.walk_packages(detforge.__path__, "detforge."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    found, todo = [], [DetforgeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def _args_for(cls) -> tuple[list, dict]:
    values = {"path": "data/x.jpg", "message": "broken", "hint": "fix it", "needed": 2**20}
    args, kwargs = [], {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = 3 if p.default is None else p.default
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(values.get(p.name, "value"))
    return args, kwargs


def test_every_detforge_error_survives_pickling():
    classes = _all_error_classes()
    assert len(classes) >= 9  # errors.py's own plus the engine's
    for cls in classes:
        args, kwargs = _args_for(cls)
        err = cls(*args, **kwargs)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert str(back) == str(err) and back.args == err.args
        assert back.__dict__ == err.__dict__, cls


def test_atomic_writes_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import detforge.fileio as fileio

        fileio._UMASK.clear()
        p = atomic_write_bytes(tmp_path / "a.txt", b"x")
        assert p.stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        fileio._UMASK.clear()
        assert atomic_write_bytes(tmp_path / "b.txt", b"x").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
        fileio._UMASK.clear()


def test_file_size_limit_is_one_clear_error_and_no_temp_left(tmp_path):
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from detforge.fileio import atomic_write_bytes
from detforge.errors import DiskFullError
try:
    atomic_write_bytes({str(tmp_path / "big.bin")!r}, b"x" * 5000)
except DiskFullError as e:
    print(e.message)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "big.bin: file-size limit reached while writing; about 0.0 MiB needed" in r.stdout
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file


def test_disk_full_message_names_file_and_space(tmp_path):
    e = DiskFullError(tmp_path / "out.pt", 3 * 2**20)
    assert str(tmp_path / "out.pt") in e.message and "about 3.0 MiB needed" in e.message
    assert "MiB free" in e.message and e.hint


def test_cli_errors_are_one_line_and_a_hint(tmp_path):
    bad = tmp_path / "x.record"
    bad.write_bytes(b"\x00" * 3)
    r = subprocess.run(
        [sys.executable, "-m", "detforge", "data", "stats", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_unexpected_exceptions_are_one_line_without_verbose(tmp_path, monkeypatch, capsys):
    cli_app = importlib.import_module("detforge.cli.app")

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(detforge, "stats", boom)
    monkeypatch.setattr(sys, "argv", ["detforge", "data", "stats", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        cli_app.main()
    assert e.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: unexpected RuntimeError: boom" and "--verbose" in lines[1]


# ---- images that do not decode: checked once, cached, skipped ---------------------------------


def _labelme_set(folder, n=6, size=(64, 48)):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", size, (i * 30, 60, 90)).save(folder / f"{i}.jpg")
        shape = {"label": "cat", "points": [[2, 2], [30, 20]], "shape_type": "rectangle"}
        obj = {"shapes": [shape], "imagePath": f"{i}.jpg", "imageWidth": 64, "imageHeight": 48}
        (folder / f"{i}.json").write_text(json.dumps(obj))
    return folder


def test_image_check_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    from detforge.data import read, verify

    monkeypatch.setenv("DETFORGE_CACHE", str(tmp_path / "cache"))
    src = _labelme_set(tmp_path / "src")
    (src / "3.jpg").write_bytes((src / "3.jpg").read_bytes()[:200])
    ds = read(src)
    good, bad = verify.verify_images(ds)
    assert [b.path for b in bad] == [str(src / "3.jpg")] and len(good) == 5
    assert "truncated" in bad[0].reason
    calls = []
    real = verify.check_image
    monkeypatch.setattr(verify, "check_image", lambda ref: calls.append(ref) or real(ref))
    good2, bad2 = verify.verify_images(read(src))
    assert calls == [] and bad2 == bad and len(good2) == 5  # a second run decodes nothing
    os.utime(src / "1.jpg", ns=(1, 1))  # a changed file is checked again, and only it
    verify.verify_images(read(src))
    assert [c.path.name for c in calls] == ["1.jpg"]


def test_png_and_jpeg_with_trailing_bytes_pass_without_a_full_decode(tmp_path):
    from PIL import Image

    from detforge.data.image import FileImage
    from detforge.data.verify import check_image

    Image.new("RGB", (20, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (20, 10)).save(tmp_path / "b.jpg")
    (tmp_path / "c.jpg").write_bytes((tmp_path / "b.jpg").read_bytes() + b"\x00" * 7)
    Image.effect_noise((64, 64), 60).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "d.png").write_bytes(data[: len(data) * 2 // 3])
    assert [check_image(FileImage(tmp_path / n)) for n in ("a.png", "b.jpg", "c.jpg")] == [None] * 3
    assert "truncated" in check_image(FileImage(tmp_path / "d.png"))


def test_an_image_that_breaks_during_training_is_skipped_with_a_warning(tmp_path):
    from detforge.data import read
    from detforge.data.torch.loader import make_loader

    src = _labelme_set(tmp_path / "src", n=4)
    ds = read(src)
    (src / "2.jpg").write_bytes(b"\xff\xd8\xff broken")  # changed after the up-front check
    with pytest.warns(UserWarning, match=r"no longer decodes: .*2\.jpg"):
        batches = list(make_loader(ds, batch_size=4, workers=0))
    assert len(batches[0][0]) == 4  # the next image stood in


def test_pack_refuses_or_skips_an_undecodable_image_with_two_workers(tmp_path):
    """The old hang: an error in a pool worker could not be unpickled."""
    src = _labelme_set(tmp_path / "src")
    (src / "4.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "detforge", "data", "pack", str(src), "--out", str(out)]
    cmd += ["--shard-size", "1", "--workers", "2", "--strict"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "4.jpg: not an image" in r.stderr and not out.exists()
    r = subprocess.run(cmd[:-1], capture_output=True, text=True, timeout=120)
    index = json.loads((out / "index.json").read_text())
    assert r.returncode == 0 and index["records"] == 5 and index["skipped"] == 1
    assert index["skipped_images"][0]["path"].endswith("4.jpg")
    from detforge.data import read

    assert len(read(out)) == 5  # what pack wrote reads back


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_train_skips_a_truncated_jpeg_and_names_it(tmp_path):
    from detforge.data import write
    from detforge.data.synth import generate

    ds = generate(tmp_path / "img", 12, seed=0, size=(64, 64))
    bad = ds.samples[3].path
    bad.write_bytes(bad.read_bytes()[:300])
    write(ds, tmp_path / "set", "yolo")  # the copy is skipped too: rewrite it truncated
    copy = tmp_path / "set" / "images" / bad.name
    copy.write_bytes(bad.read_bytes()) if not copy.exists() else None
    cmd = [sys.executable, "-m", "detforge", "train", "--data", str(tmp_path / "set")]
    cmd += ["--model", "ssdlite", "--epochs", "1", "--imgsz", "64", "--batch", "4"]
    cmd += ["--workers", "2", "--project", str(tmp_path / "runs")]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"skipping {copy}: " in r.stderr
    assert (tmp_path / "runs" / "train" / "exp" / "weights" / "last.pt").is_file()


# ---- outputs: sources, manifests, leftovers --------------------------------------------------


def test_overwrite_replaces_only_what_detforge_wrote(tmp_path):
    from detforge.data import convert
    from detforge.errors import DestinationError

    src = _labelme_set(tmp_path / "src", n=3)
    out = tmp_path / "out"
    convert(src, out, "voc")
    manifest = json.loads((out / ".detforge-manifest.json").read_text())["files"]
    assert "Annotations/0.xml" in manifest and "classes.txt" in manifest
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match="not empty"):
        convert(src, out, "voc")
    convert(src, out, "voc", overwrite=True)  # replaces its own files, keeps mine
    assert (out / "notes.txt").read_text() == "mine"
    (out / "Annotations" / "0.xml").unlink()
    (out / "Annotations" / "0.xml").write_text("<mine/>")  # now a file detforge did not write?
    convert(src, out, "voc", overwrite=True)  # listed in the manifest: still detforge's to replace
    user = tmp_path / "user"
    user.mkdir()
    (user / "classes.txt").write_text("precious\n")
    with pytest.raises(DestinationError, match=r"classes\.txt exists and was not written"):
        convert(src, user, "voc", overwrite=True)
    assert (user / "classes.txt").read_text() == "precious\n"
    assert sorted(p.name for p in user.iterdir()) == ["classes.txt"]  # nothing else left


def test_a_failed_convert_leaves_no_destination(tmp_path, monkeypatch):
    from detforge.data import convert
    from detforge.data.formats import voc

    src = _labelme_set(tmp_path / "src", n=3)

    def fail(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(voc, "write_classes", fail)
    with pytest.raises(OSError):
        convert(src, tmp_path / "out", "voc")
    assert not (tmp_path / "out").exists()


def test_a_changed_dataset_may_pack_over_its_own_unfinished_pack(tmp_path):
    from detforge.data import read
    from detforge.data.shards import STATE, pack

    src = _labelme_set(tmp_path / "src", n=4)
    out = tmp_path / "out"
    out.mkdir()
    (out / STATE).write_text(json.dumps({"fingerprint": "older", "done": {}}))
    (out / f".{STATE}.x1y2.tmp").write_text("{")  # what a kill during a state write leaves
    index = pack(read(src), out, shard_size=2, workers=1, progress=False)
    assert index["records"] == 4
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


def test_check_fix_drop_lists_what_it_dropped(tmp_path):
    from typer.testing import CliRunner

    from detforge.cli import app

    src = _labelme_set(tmp_path / "src", n=3)
    obj = json.loads((src / "1.json").read_text())
    obj["shapes"].append(
        {"label": "cat", "points": [[50, 40], [90, 60]], "shape_type": "rectangle"}
    )
    (src / "1.json").write_text(json.dumps(obj))
    r = CliRunner().invoke(
        app, ["data", "check", str(src), "--fix", "drop", "--out", str(tmp_path / "fixed")]
    )
    assert r.exit_code == 0, r.output
    assert "dropped box 1 [50.0, 40.0, 90.0, 60.0] of" in r.output and "(out_of_bounds)" in r.output


def test_failed_training_leaves_no_run_folder(tmp_path, monkeypatch):
    from detforge.data import write
    from detforge.data.synth import generate
    from detforge.engine.train import loop

    write(generate(tmp_path / "img", 8, seed=0, size=(64, 64)), tmp_path / "set", "yolo")

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(loop, "_train_epoch", boom)
    with pytest.raises(RuntimeError):
        loop.train(
            data=str(tmp_path / "set"),
            model="ssdlite",
            epochs=1,
            imgsz=64,
            batch=4,
            workers=0,
            project=str(tmp_path / "runs"),
        )
    assert list((tmp_path / "runs" / "train").iterdir()) == []


def test_max_pixels_refuses_and_raises(tmp_path, monkeypatch):
    from PIL import Image

    from detforge.data import image as imageio
    from detforge.errors import ImageError

    Image.new("L", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv(imageio.PIXELS_ENV, "50000")
    with pytest.raises(
        ImageError, match=r"300x200 = 0 megapixels, over the limit.*--max-pixels 60000"
    ):
        imageio.file_info(tmp_path / "big.png")
    monkeypatch.setenv(imageio.PIXELS_ENV, "60000")
    assert imageio.file_info(tmp_path / "big.png")[:2] == (300, 200)


def test_image_check_cache_keeps_both_parts_of_one_root(tmp_path, monkeypatch):
    """Training checks its train and val parts in turn; neither may evict the other's entries."""
    from detforge.data import read, verify

    monkeypatch.setenv("DETFORGE_CACHE", str(tmp_path / "cache"))
    ds = read(_labelme_set(tmp_path / "src"))
    train, val = ds.subset(range(3)), ds.subset(range(3, 6))
    verify.verify_images(train), verify.verify_images(val)
    calls = []
    real = verify.check_image
    monkeypatch.setattr(verify, "check_image", lambda ref: calls.append(ref) or real(ref))
    verify.verify_images(train), verify.verify_images(val)
    assert calls == []
