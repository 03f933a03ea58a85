"""Predictor: one API over inputs of every kind, streams, and what `detforge predict` writes."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import detforge
from detforge.data.synth import render, video
from detforge.errors import CameraError, DetforgeError

from conftest import jittered_checkpoint


@pytest.fixture(scope="module")
def det(tmp_path_factory):
    path = jittered_checkpoint(tmp_path_factory.mktemp("w") / "m.pt")
    return detforge.load(path)


@pytest.fixture(scope="module")
def image():
    return np.asarray(render(np.random.default_rng(3), 200, 150, 3)[0])


def _same(a, b):
    """The same detections. At conf 0 many share a score and the list is cut at max_det; a
    batch of several may compute scores a few 1e-5 apart (oneDNN picks kernels by batch
    size), which moves tied ones across the cut and reorders them: compared above the cut
    (1e-3 over the lowest score kept), in (label, score to 1e-4, box) order."""
    assert len(a) == len(b) > 0
    cut = max(a.scores.min(), b.scores.min()) + 1e-3

    def ordered(r):
        keep = r.scores > cut
        boxes, scores, labels = r.boxes[keep], r.scores[keep], r.labels[keep]
        k = np.lexsort(np.c_[labels, -np.round(scores, 4), np.round(boxes, 2)].T[::-1])
        return boxes[k], scores[k], labels[k]

    (ba, sa, la), (bb, sb, lb) = ordered(a), ordered(b)
    assert len(ba) == len(bb) > 0
    np.testing.assert_allclose(ba, bb, atol=1e-3)
    np.testing.assert_allclose(sa, sb, atol=1e-4)
    np.testing.assert_array_equal(la, lb)


def test_same_boxes_from_every_input_kind(det, image):
    ref = det.predict(image, conf=0.0)[0]
    assert ref.boxes.shape[1] == 4 and ref.boxes.dtype == np.float32
    assert (ref.boxes[:, 2] <= 200).all() and (ref.boxes[:, 3] <= 150).all()  # original pixels
    f01 = image.astype(np.float32) / 255
    _same(ref, det.predict(f01, conf=0.0, value_range=(0, 1))[0])
    _same(ref, det.predict(f01 * 2 - 1, conf=0.0, value_range=(-1, 1))[0])
    _same(ref, det.predict(image.astype(np.float64), conf=0.0, value_range=(0, 255))[0])
    _same(ref, det.predict(torch.from_numpy(image.copy()).permute(2, 0, 1), conf=0.0)[0])
    _same(ref, det.predict(Image.fromarray(image), conf=0.0)[0])
    _same(ref, det.predict(image[..., ::-1].copy(), conf=0.0, bgr=True)[0])
    batch = det.predict([image, image[:100]], conf=0.0, batch=2)
    assert len(batch) == 2
    _same(ref, batch[0])


def test_wrong_inputs_are_refused_with_the_fix(det, image):
    with pytest.raises(DetforgeError, match=r"value_range=\(0, 255\)"):
        det.predict(image.astype(np.float32))  # 0-255 floats, undeclared
    with pytest.raises(DetforgeError, match=r"value_range=\(-1, 1\)"):
        det.predict(image / 127.5 - 1)
    with pytest.raises(DetforgeError, match="shape"):
        det.predict(np.zeros((10, 10, 5), np.uint8))
    with pytest.raises(DetforgeError, match="dtype"):
        det.predict(image.astype(np.int32))
    with pytest.raises(DetforgeError, match="uint8"):
        det.predict(image, value_range=(0, 1))


def test_files_folders_globs_and_result_helpers(det, image, tmp_path):
    for k in range(3):
        Image.fromarray(np.roll(image, 20 * k, axis=1)).save(tmp_path / f"im{k}.png")
    by_folder = det.predict(tmp_path, conf=0.0)
    by_glob = det.predict(str(tmp_path / "im*.png"), conf=0.0)
    assert [Path(r.source).name for r in by_folder] == ["im0.png", "im1.png", "im2.png"]
    for a, b in zip(by_folder, by_glob):
        _same(a, b)
    r = by_folder[0]
    _same(det.predict(image, conf=0.0)[0], r)
    masks = r.box_masks(per_box=True)
    assert masks.shape == (len(r), 150, 200) and r.box_masks().shape == (150, 200)
    x0, y0, x1, y1 = np.rint(r.boxes[0]).astype(int)
    assert masks[0, y0:y1, x0:x1].all() and masks[0].sum() == (y1 - y0) * (x1 - x0)
    crop = r.crops()[0]
    assert crop.shape == (y1 - y0, x1 - x0, 3)
    np.testing.assert_array_equal(crop, image[y0:y1, x0:x1])
    d = json.loads(r.to_json())
    assert set(d) == {"source", "boxes", "scores", "labels", "names"}
    assert len(d["boxes"]) == len(d["scores"]) == len(d["names"]) == len(r)
    assert d["names"] == [det.classes[k] for k in d["labels"]]
    np.testing.assert_allclose(d["boxes"], r.boxes, atol=0.005)


def test_thresholds_are_kept_and_bad_ones_refused_before_anything_is_written(det, image, tmp_path):
    full = det.predict(image, conf=0.0, iou=1.0)[0]  # no NMS beyond the model's
    assert len(full) > 3
    top3 = det.predict(image, conf=0.0, iou=1.0, max_det=3)[0]
    np.testing.assert_array_equal(top3.scores, full.scores[:3])  # the best three, best first
    cut = float(np.median(full.scores))
    above = det.predict(image, conf=cut, iou=1.0)[0]
    assert len(above) == int((full.scores >= cut).sum()) and above.scores.min() >= cut
    nms = det.predict(image, conf=0.0, iou=0.3)[0]
    assert len(nms) < len(full)  # class-wise NMS at 0.3 merged overlapping boxes
    # one object carries every threshold: the driver, a stream and a batch all keep the same
    Image.fromarray(image).save(tmp_path / "a.png")
    s = detforge.predict(det, tmp_path / "a.png", out=tmp_path / "o", conf=cut, iou=1.0,
                         max_det=2, save=False, progress=False)  # fmt: skip
    (row,) = [json.loads(x) for x in Path(s["predictions"]).read_text().splitlines()]
    np.testing.assert_allclose(row["scores"], above.scores[:2], atol=1e-5)  # 5 decimals
    bads = [({"conf": 1.5}, "conf 1.5"), ({"iou": 0}, "iou 0"), ({"max_det": 0}, "max_det 0"),
            ({"max_det": 2.5}, "max_det 2.5")]  # fmt: skip
    for bad, said in bads:
        with pytest.raises(DetforgeError, match=said):
            detforge.predict(det, tmp_path / "a.png", out=tmp_path / "bad", progress=False, **bad)
        with pytest.raises(DetforgeError, match=said):
            det.predict(image, **bad)
    assert not (tmp_path / "bad").exists()  # refused before a folder was made
    assert detforge.Thresholds(conf=0.3) == detforge.Thresholds(0.3, 0.5, 100)  # requests batch


def test_video_in_annotated_video_out(det, tmp_path):
    src, _, _ = video(tmp_path / "v.mp4", frames=24, size=(200, 120), fps=12)
    results = list(det.stream(str(src), batch=4, conf=0.0))
    assert [r.index for r in results] == list(range(24))
    out = tmp_path / "out"
    out.mkdir()
    s = detforge.predict(det, str(src), out=out, conf=0.1, progress=False)
    assert s["frames"] == 24 and Path(s["video"]).name == "v.mp4"
    cap = cv2.VideoCapture(s["video"])
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(12)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (200, 120)
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 24
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(x)["frame"] for x in lines] == list(range(24))


def test_corrupt_image_skipped_in_stream_refused_in_predict(det, image, tmp_path):
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "b.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    seen = []
    results = list(det.stream(tmp_path, on_error=seen.append))
    assert [Path(r.source).name for r in results] == ["a.png"]
    assert Path(seen[0].source).name == "b.jpg" and seen[0].error
    with pytest.raises(DetforgeError, match="b.jpg"):
        det.predict(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    s = detforge.predict(det, str(tmp_path), out=out, progress=False)
    assert s["frames"] == 1 and Path(s["skipped"][0]["source"]).name == "b.jpg"


def test_missing_camera_and_unreadable_video(det, tmp_path):
    with pytest.raises(CameraError, match="camera 97"):
        next(det.stream(97))
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DetforgeError, match="bad.mp4"):
        next(det.stream(str(bad)))
    with pytest.raises(DetforgeError, match="video"):
        det.predict(str(bad))


def test_save_labelme_round_trips_and_keeps_user_files(det, image, tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for k in range(3):
        Image.fromarray(np.roll(image, 30 * k, axis=0)).save(imgs / f"p{k}.jpg", quality=95)
    mine = {"mine": True}
    (imgs / "p2.json").write_text(json.dumps(mine))
    out = tmp_path / "out"
    out.mkdir()
    s = detforge.predict(det, str(imgs), out=out, conf=0.05, save_labelme=True, progress=False)
    assert s["labelme_written"] == 2
    assert json.loads((imgs / "p2.json").read_text()) == mine  # the user's file is untouched
    (imgs / "p2.json").unlink()
    back = detforge.read(imgs, format="labelme", names=det.classes)
    preds = {Path(r.source).stem: r for r in det.predict(imgs, conf=0.05)}
    assert {Path(s.name).stem for s in back} == {"p0", "p1"}
    for smp in back:
        r = preds[Path(smp.name).stem]
        assert len(r) > 0
        np.testing.assert_allclose(smp.boxes, r.boxes, atol=1e-3)
        assert [back.classes[i] for i in smp.labels] == [det.classes[i] for i in r.labels]


def test_preannotations_for_cvat_and_label_studio_load_back(det, image, tmp_path):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    for k in range(3):
        where = imgs / "sub" if k == 2 else imgs
        Image.fromarray(np.roll(image, 30 * k, axis=0)).save(where / f"p{k}.jpg", quality=95)
    out = tmp_path / "out"
    s = detforge.predict(det, str(imgs), out=out, conf=0.05, save_cvat=True, save_labelstudio=True,
                         progress=False)  # fmt: skip
    assert sorted(Path(p).name for p in s["preannotations"]) == [
        "cvat_annotations.xml", "labelstudio_tasks.json"]  # fmt: skip
    preds = {Path(r.source).name: r for r in det.predict(imgs, conf=0.05)}
    # CVAT: names relative to the source folder, found there with --images
    cvat = detforge.read(out / "cvat_annotations.xml", images=imgs, names=det.classes)
    ls = detforge.read(out / "labelstudio_tasks.json", images=imgs, names=det.classes,
                       predictions=True)  # fmt: skip
    for back in (cvat, ls):
        assert sorted(s.name for s in back) == ["p0.jpg", "p1.jpg", "p2.jpg"]
        for smp in back:
            r = preds[smp.name]
            assert len(r) > 0
            np.testing.assert_allclose(smp.boxes, r.boxes, atol=1e-3)
            assert [back.classes[i] for i in smp.labels] == [det.classes[i] for i in r.labels]
    tasks = json.loads((out / "labelstudio_tasks.json").read_text())
    t = next(t for t in tasks if t["data"]["image"].endswith("sub/p2.jpg"))
    assert t["data"]["image"] == "/data/local-files/?d=sub/p2.jpg" and "annotations" not in t
    (pred,) = t["predictions"]
    assert pred["model_version"] == "detforge m.pt"
    scores = [item["score"] for item in pred["result"]]
    np.testing.assert_allclose(scores, preds["p2.jpg"].scores, atol=1e-4)
    assert 'source="auto"' in (out / "cvat_annotations.xml").read_text()
    # a video has no image files to annotate
    clip, _, _ = video(tmp_path / "v.mp4", frames=4, size=(64, 48), fps=4)
    with pytest.raises(DetforgeError, match="--save-cvat needs image files"):
        detforge.predict(det, clip, out=tmp_path / "v", save_cvat=True, progress=False)
