"""The HTML pages: a run's report and a dataset's report, their data, and what a user sees in
a real browser (headless Chromium; those checks skip with the reason when it is missing)."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import detforge
from detforge.data import read, write
from detforge.data.synth import generate
from detforge.engine.evaluate import classification, detection
from detforge.engine.evaluate.plots import image_errors
from detforge.engine.infer.results import ClassResult, Result
from detforge.engine.report import write_run_report
from detforge.models.base import FALLBACK_CONF

from browser import broken_images, gallery_state, opened


def page_data(page: Path, gallery: str) -> dict:
    """The JSON a gallery of ``page`` draws from."""
    html = page.read_text(encoding="utf-8")
    m = re.search(
        rf'<script type="application/json" id="{gallery}-data">(.*?)</script>', html, re.S
    )
    assert m, f"no {gallery} in {page}"
    return json.loads(m.group(1))


class Replay:
    """A stand-in model that returns the given results in order, so what the page must show
    (each image's false positives and misses) is known exactly."""

    conf = FALLBACK_CONF  # no measured threshold: the fallback, as a model without one

    def __init__(self, task: str, results: list):
        self.task, self.results = task, iter(results)

    def predict(self, images, **_):
        return [next(self.results) for _ in images]


def test_image_errors_counts_class_aware_matches_at_conf():
    gt = np.float32([[0, 0, 10, 10], [20, 20, 30, 30]])
    pred = {
        "boxes": np.float32([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]]),
        "scores": np.float32([0.9, 0.8, 0.1]),
        "labels": np.int64([0, 0, 1]),  # the second is the wrong class; the third under conf
    }
    assert image_errors(gt, [0, 1], pred, conf=0.25) == (1, 1)
    assert image_errors(gt, [0, 1], pred, conf=0.05) == (2, 1)
    assert image_errors(np.zeros((0, 4)), [], pred, conf=0.25) == (2, 0)


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """An evaluation of 14 synthetic images where image A gets 5 false positives, image B
    gets no detections (all its boxes missed) and every other image is detected exactly."""
    root = tmp_path_factory.mktemp("run")
    ds = generate(root / "data", 14, seed=4, size=(160, 120), negatives=0.15)
    with_boxes = [i for i, s in enumerate(ds.samples) if len(s.boxes)]
    a, b = with_boxes[0], with_boxes[1]
    names = list(ds.classes)
    results = []
    for i, s in enumerate(ds.samples):
        boxes, labels = s.boxes.copy(), s.labels.copy()
        if i == b:
            boxes, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
        if i == a:
            extra = np.float32([[1 + 4 * k, 1, 4 + 4 * k, 4] for k in range(5)])
            boxes, labels = np.concatenate([boxes, extra]), np.concatenate([labels, [0] * 5])
        scores = np.full(len(boxes), 0.9, np.float32)
        results.append(Result(boxes, scores, labels, names))
    scored = detection.score(Replay("detect", results), ds)
    info = {"kind": "evaluation", "split": "val", "rows": [("data", str(root / "data"))]}
    page = write_run_report(root / "eval", info=info, task="detect", scored=scored, ds=ds)
    return page, ds, a, b


def test_run_report_ranks_images_by_their_errors(scored_run):
    page, ds, a, b = scored_run
    assert page.name == "report.html" and page.parent.name == "eval"
    data = page_data(page, "run-gallery")
    items = {it["n"]: it for it in data["items"]}
    assert len(items) == len(ds)
    na, nb = ds.samples[a].name, ds.samples[b].name
    assert (items[na]["fp"], items[na]["fn"]) == (5, 0)
    assert (items[nb]["fp"], items[nb]["fn"]) == (0, len(ds.samples[b].boxes))
    assert all(it["fp"] + it["fn"] == 0 for n, it in items.items() if n not in (na, nb))
    thumbs = list((page.parent / "report_files" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == len({s.name for s in ds.samples})
    # a box lands where it is: scaled by the thumbnail's size
    s = ds.samples[a]
    k = min(1.0, 320 / max(s.width, s.height))
    assert items[na]["g"][0][:4] == pytest.approx((s.boxes[0] * k).tolist(), abs=0.5)


def test_run_report_in_a_browser(scored_run):
    page, ds, a, b = scored_run
    with opened(page, "run-report") as (view, problems):
        assert broken_images(view) == []
        state = gallery_state(view, "run-gallery")
        assert (state["shown"], state["total"]) == (len(ds), len(ds))
        assert state["names"][:2] == [ds.samples[a].name, ds.samples[b].name]  # worst first
        view.select_option("#run-gallery [data-role=sort]", "fn")
        assert gallery_state(view, "run-gallery")["names"][0] == ds.samples[b].name
        k = int(ds.samples[b].labels[0])
        with_k = [s for s in ds.samples if k in s.labels.tolist()]
        view.select_option("#run-gallery [data-role=class]", str(k))
        state = gallery_state(view, "run-gallery")
        assert state["total"] == len(with_k) < len(ds)
        assert set(state["names"]) == {s.name for s in with_k}
        view.select_option("#run-gallery [data-role=class]", "neg")
        negatives = sum(s.is_negative for s in ds.samples)
        assert gallery_state(view, "run-gallery")["total"] == negatives > 0
        assert view.locator("#evaluation table[data-role=per-class] tr").count() == 4
        assert view.locator("#evaluation svg").count() == 3  # PR, F1 vs confidence, confusion
        assert problems == []
    html = page.read_text()
    assert "F1 against confidence" in html and "default conf 0.25" in html


def test_classifier_report_shows_the_misclassified_first(tmp_path):
    ds = generate(tmp_path / "cls", 9, seed=2, size=(64, 64), task="classify")
    names, k = list(ds.classes), len(ds.classes)
    results = []
    for i, s in enumerate(ds.samples):
        probs = np.full(k, 0.1, np.float32)
        wrong = (s.category + 1) % k
        probs[wrong if i in (2, 5) else s.category] = 0.6 if i == 2 else 0.9 if i == 5 else 0.8
        results.append(ClassResult(probs / probs.sum(), names))
    scored = classification.score(Replay("classify", results), ds)
    info = {"kind": "evaluation", "split": "val", "rows": []}
    page = write_run_report(tmp_path / "ev", info=info, task="classify", scored=scored, ds=ds)
    data = page_data(page, "run-gallery")
    assert [it["n"] for it in data["items"] if it["bad"]] == [
        ds.samples[2].name,
        ds.samples[5].name,
    ]
    assert data["items"][5]["top"][0][0] == (ds.samples[5].category + 1) % k
    with opened(page, "classify-report") as (view, problems):
        names_shown = gallery_state(view, "run-gallery")["names"]
        assert names_shown[:2] == [ds.samples[5].name, ds.samples[2].name]  # surest mistake first
        assert view.locator("table[data-role=per-class] tr").count() == k + 1
        assert broken_images(view) == [] and problems == []


def _voc_with_problems(root: Path) -> tuple[Path, Path]:
    """Two VOC splits; train has one truncated JPEG and one box reaching past its image."""
    train = write(generate(root / "g1", 12, seed=5, size=(160, 120)), root / "train", "voc")
    write(generate(root / "g2", 6, seed=6, size=(160, 120)), root / "val", "voc")
    xml = next(p for p in sorted(train.rglob("*.xml")) if "<object>" in p.read_text())
    text = xml.read_text()
    xml.write_text(re.sub(r"<xmax>[\d.]+</xmax>", "<xmax>400</xmax>", text, count=1))
    jpg = sorted(p for p in train.rglob("*.jpg") if p.stem != xml.stem)[0]
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])
    yaml_path = root / "data.yaml"
    yaml_path.write_text("train: train\nval: val\n")
    return yaml_path, xml


def test_data_report_of_every_split_in_a_browser(tmp_path):
    yaml_path, xml = _voc_with_problems(tmp_path)
    page = detforge.data_report(yaml_path, tmp_path / "page", progress=False)
    assert page == tmp_path / "page" / "report.html"
    train, val = read(tmp_path / "train"), read(tmp_path / "val")
    findings = detforge.check(tmp_path / "train", progress=False).findings
    findings += detforge.check(tmp_path / "val", progress=False).findings
    kinds = sorted(f.kind for f in findings)
    assert "out_of_bounds" in kinds and "unreadable_image" in kinds
    images = page_data(page, "images-gallery")
    found = page_data(page, "findings-gallery")
    assert len(images["items"]) == len(train) + len(val)
    assert sorted(it["kind"] for it in found["items"]) == kinds
    oob = next(it for it in found["items"] if it["kind"] == "out_of_bounds")
    assert oob["n"].startswith("train/") and oob["n"].endswith(f"/{xml.stem}.jpg")
    assert len(oob["b"]) == 4
    unreadable = next(it for it in found["items"] if it["kind"] == "unreadable_image")
    assert unreadable["t"] is None  # no thumbnail, and no broken image on the page
    every = train.samples + val.samples
    with opened(page, "data-report") as (view, problems):
        assert broken_images(view) == []
        state = gallery_state(view, "images-gallery")
        assert state["total"] == len(every)
        by_name = {it["n"]: it for it in images["items"]}
        assert len(by_name[state["names"][0]]["g"]) == max(len(s.boxes) for s in every)
        for k in range(len(train.classes)):
            view.select_option("#images-gallery [data-role=class]", str(k))
            expect = sum(k in s.labels.tolist() for s in every)
            assert gallery_state(view, "images-gallery")["total"] == expect
        view.select_option("#images-gallery [data-role=class]", "neg")
        assert gallery_state(view, "images-gallery")["total"] == sum(s.is_negative for s in every)
        assert gallery_state(view, "findings-gallery")["total"] == len(findings)
        assert problems == []


def test_data_report_pages_a_large_set(tmp_path):
    ds = generate(tmp_path / "g", 130, seed=7, size=(48, 48))
    page = detforge.data_report(ds, tmp_path / "p", progress=False)
    again = detforge.data_report(ds, tmp_path / "p", progress=False)  # thumbnails reused
    assert again == page
    assert len(list((tmp_path / "p" / "report_files" / "thumbs").glob("*.jpg"))) == 130
    with opened(page) as (view, problems):
        assert gallery_state(view, "images-gallery")["shown"] == 60
        view.click("#images-gallery [data-role=next]")
        view.click("#images-gallery [data-role=next]")
        state = gallery_state(view, "images-gallery")
        assert (state["shown"], state["total"]) == (10, 130)
        assert broken_images(view) == [] and problems == []


def test_a_failing_report_is_one_warning_and_the_eval_still_ends(tmp_path, monkeypatch):
    import detforge.engine.jobs as jobs

    from conftest import jittered_checkpoint

    data = write(generate(tmp_path / "g", 6, seed=3, size=(96, 96)), tmp_path / "d", "yolo")
    weights = jittered_checkpoint(tmp_path / "m.pt", classes=read(data).classes, imgsz=96)

    def broken(*a, **k):
        raise OSError("disk on fire\nsecond line")

    monkeypatch.setattr(jobs, "write_run_report", broken)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        m = detforge.evaluate(weights, data, project=tmp_path / "runs")
    assert m["report"] is None and (Path(m["run_dir"]) / "results.json").is_file()
    lines = [str(w.message) for w in seen if "report" in str(w.message)]
    assert lines == ["the HTML report was not written: OSError: disk on fire"]
    monkeypatch.undo()
    page = detforge.report(m["run_dir"])  # written again from the folder: the same scores
    assert page == Path(m["run_dir"]) / "report.html"
    assert page_data(page, "run-gallery")["items"][0]["n"] in {s.name for s in read(data).samples}


def test_report_of_a_folder_that_is_no_run(tmp_path):
    with pytest.raises(detforge.errors.DetforgeError, match="not a run folder"):
        detforge.report(tmp_path)
