"""Batch inference on Ray Data: the same detections as `predict`, one row per image (a
corrupt file gives an error row), every image exactly once when an actor is killed mid-run,
and one line on how to install Ray when it is missing. A local 2-CPU Ray, started once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detforge
from detforge.data.synth import render
from detforge.errors import DetforgeError

from conftest import jittered_checkpoint

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'detforge[ray]')")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.alone  # a local Ray takes every core


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """A det-n checkpoint and a folder of 48 images (two in a subfolder, one corrupt, one
    text file that is not an image)."""
    root = tmp_path_factory.mktemp("corpus")
    weights = jittered_checkpoint(root / "m.pt", "det-n", imgsz=128)
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    for s in range(47):
        arr = np.asarray(render(np.random.default_rng(s), 170 + s, 130, 3)[0])
        Image.fromarray(arr).save(images / ("sub" if s < 2 else "") / f"im{s:02d}.jpg")
    (images / "broken.jpg").write_bytes((images / "im10.jpg").read_bytes()[:400])
    (images / "notes.txt").write_text("not an image")
    return weights, images


def _rows(out: Path) -> list[dict]:
    rows = []
    for f in sorted(out.glob("*.json")):
        if not f.name.startswith("_"):
            rows += [json.loads(line) for line in f.read_text().splitlines() if line]
    return rows


@pytest.mark.slow
def test_cli_on_its_own_local_ray_gives_the_same_detections_as_predict(corpus, tmp_path):
    """`predict --ray` starts (and stops) a local Ray; every image is one row, the corrupt
    one an error row, and the boxes are `stream`'s (as the prediction row rounds them)."""
    import tempfile

    weights, images = corpus
    tmp = Path(tempfile.gettempdir())
    before = set(tmp.glob("detforge-model-*"))
    r = subprocess.run(
        [sys.executable, "-m", "detforge", "predict", str(weights), "--source", str(images),
         "--ray", "--out", str(tmp_path / "out"), "--conf", "0.0125", "--batch", "8"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "48 images, 1 could not be read" in r.stdout
    assert "1 actors x 2 threads" in r.stdout
    assert set(tmp.glob("detforge-model-*")) == before  # the actors' model copies are gone
    rows = _rows(tmp_path / "out")
    by_path = {r["source"]: r for r in rows}
    assert len(rows) == len(by_path) == 48  # each image once
    broken = by_path.pop(str(images / "broken.jpg"))
    assert broken["boxes"] == [] and "truncated" in broken["error"]
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["images"] == 48 and summary["errors"][0]["error"] == broken["error"]
    det = detforge.load(weights, device="cpu")
    expected = {r.source: r for r in det.stream(images, conf=0.0125, on_error=lambda f: None)}
    assert set(expected) == set(by_path)
    found = 0
    for path, r in expected.items():
        row = by_path[path]
        assert row["error"] is None
        assert row["labels"] == r.labels.tolist()
        assert row["names"] == [det.classes[k] for k in r.labels]
        # the shared prediction row rounds boxes to 0.01 px (Result.to_dict)
        np.testing.assert_allclose(np.reshape(row["boxes"], (-1, 4)), r.boxes, atol=0.0051)
        np.testing.assert_allclose(row["scores"], r.scores, atol=1e-5)
        found += len(r)
    assert found > 20  # the comparison compared boxes, not empty lists


def _actor_pids() -> list:
    import psutil

    return [
        p
        for p in psutil.process_iter(["cmdline"])
        if any("PredictActor" in part for part in p.info["cmdline"] or [])
    ]


@pytest.mark.slow
def test_every_image_exactly_once_when_an_actor_is_killed(local_ray, corpus, tmp_path):
    """The actor is SIGKILLed once the first block is written; Ray restarts it and retries
    its batch. Parquet output this time, from a recursive glob."""
    import pyarrow.parquet as pq

    weights, images = corpus
    out = tmp_path / "out"
    partial = tmp_path / ".out.partial"
    killed: list[int] = []

    def kill_after_first_block():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            if partial.is_dir() and any(partial.glob("*.parquet")):
                for p in _actor_pids():
                    p.kill()  # SIGKILL: the actor process dies mid-run
                    killed.append(p.pid)
            time.sleep(0.05)

    watcher = threading.Thread(target=kill_after_first_block, daemon=True)
    watcher.start()
    s = detforge.predict_dataset(weights, str(images / "**" / "*.jpg"), out, fmt="parquet",
                                 batch=2, conf=0.0125, progress=False)  # fmt: skip
    watcher.join(timeout=5)
    assert killed, "no actor was running when the first block was written"
    table = pq.read_table(out)
    paths = table.column("source").to_pylist()
    assert len(paths) == len(set(paths)) == s["images"] == 48
    assert table.column_names[:2] == ["source", "error"]
    assert sum(e is not None for e in table.column("error").to_pylist()) == 1
    with pytest.raises(DetforgeError, match="already exists and is not empty"):
        detforge.predict_dataset(weights, images, out, progress=False)


def test_without_ray_the_flag_says_how_to_install(monkeypatch, capsys, corpus, tmp_path):
    weights, images = corpus
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DetforgeError) as e:
        detforge.predict_dataset(weights, images, tmp_path / "o", progress=False)
    assert "pip install 'detforge[ray]'" in e.value.hint
    assert not (tmp_path / "o").exists()
    # the CLI prints the hint as written: brackets are text, not Rich markup
    from detforge.cli.app import main

    argv = ["detforge", "predict", str(weights), "--source", str(images), "--ray"]
    monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    assert "pip install 'detforge[ray]' (or: pip install 'ray[data]')" in capsys.readouterr().err
