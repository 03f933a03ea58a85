"""CVAT (for images and for video 1.1) and Label Studio (JSON, JSON-MIN): files the tools'
own projects test with (tests/fixtures/README.md), hand-made edge cases, and round trips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detforge.data import read, write
from detforge.data.formats import detect
from detforge.data.synth import generate
from detforge.errors import FormatError

FIX = Path(__file__).parent / "fixtures"


def _issues(ds, kind):
    return [i for i in ds.issues if i.kind == kind]


def test_cvat_for_images_as_cvat_exports_it(tmp_path):
    shutil.copytree(FIX / "cvat" / "images", tmp_path / "images")
    shutil.copy(FIX / "cvat" / "images.xml", tmp_path / "annotations.xml")
    assert detect(tmp_path) == "cvat" and detect(tmp_path / "annotations.xml") == "cvat"
    ds = read(tmp_path)
    assert ds.format == "cvat" and ds.classes == ["label1", "label2"]  # <meta> order
    a, b = ds.samples
    assert (a.name, a.width, a.height) == ("img0.jpg", 8, 8)
    np.testing.assert_array_equal(a.boxes, [[0, 2, 4, 4]])
    assert a.labels.tolist() == [0] and a.truncated.tolist() == [True]  # occluded="1"
    assert a.attributes == ({"a1": "true", "a2": "v3", "a3": "0003", "a4": "2.4"},)
    assert b.is_negative  # an unlabeled polygon and points: no box
    skipped = _issues(ds, "skipped_shape")
    assert len(skipped) == 2 and "unlabeled polyline" in skipped[0].message


def test_cvat_project_export_finds_images_by_subset(tmp_path):
    for subset in ("Test", "Train", "Validation"):
        shutil.copytree(FIX / "cvat" / "images", tmp_path / "images" / subset)
    shutil.copy(FIX / "cvat" / "project.xml", tmp_path / "annotations.xml")
    ds = read(tmp_path)
    assert len(ds) == 6 and ds.classes[:2] == ["label1", "label2"]
    assert {Path(s.path).parent.name for s in ds.samples} == {"Test", "Train", "Validation"}
    polygon = [s for s in ds.samples if s.name == "img1.jpg"][0]
    np.testing.assert_array_equal(polygon.boxes, [[1, 2, 6, 5]])  # the polygon's enclosing box


def test_cvat_for_video_tracks_become_frames(tmp_path):
    shutil.copytree(FIX / "cvat" / "video_frames", tmp_path / "images")
    shutil.copy(FIX / "cvat" / "video.xml", tmp_path / "annotations.xml")
    with pytest.warns(UserWarning, match="frame_000019"):  # stop_frame 19 has no image
        ds = read(tmp_path)
    assert [s.name for s in ds.samples] == [f"frame_0000{f}.png" for f in (10, 13, 16)]
    f10, f13, f16 = ds.samples
    assert ds.classes[f10.labels[0]] == "II" and f10.truncated.tolist() == [True]
    assert f10.attributes == ({"track_id": "0"},)
    np.testing.assert_array_equal(f10.boxes, [[3, 4, 10, 5]])
    assert f13.is_negative and f16.is_negative  # outside from frame 13 on
    assert "skeleton" not in ds.classes
    assert len(_issues(ds, "missing_image")) == 1


def _frames(tmp_path, n):
    (tmp_path / "images").mkdir(parents=True)
    for f in range(n):
        Image.new("RGB", (40, 40)).save(tmp_path / "images" / f"frame_{f:06d}.jpg")


def test_cvat_track_interpolates_leaves_and_comes_back(tmp_path):
    _frames(tmp_path, 10)
    (tmp_path / "annotations.xml").write_text("""<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version><meta><task><start_frame>0</start_frame>
<stop_frame>9</stop_frame><labels><label><name>car</name></label></labels></task></meta>
<track id="7" label="car">
 <box frame="0" outside="0" occluded="0" keyframe="1" xtl="0" ytl="0" xbr="10" ybr="10">
  <attribute name="colour">red</attribute></box>
 <box frame="4" outside="0" occluded="0" keyframe="1" xtl="4" ytl="0" xbr="14" ybr="10"/>
 <box frame="5" outside="1" occluded="0" keyframe="1" xtl="4" ytl="0" xbr="14" ybr="10"/>
 <box frame="8" outside="0" occluded="0" keyframe="1" xtl="20" ytl="20" xbr="30" ybr="30"/>
</track></annotations>""")
    ds = read(tmp_path / "annotations.xml")
    boxes = {int(s.name[6:12]): s.boxes.tolist() for s in ds.samples}
    assert boxes[2] == [[2, 0, 12, 10]]  # halfway between keyframes 0 and 4
    assert boxes[4] == [[4, 0, 14, 10]]
    assert boxes[5] == boxes[6] == boxes[7] == []  # left the view
    assert boxes[8] == boxes[9] == [[20, 20, 30, 30]]  # came back, kept to the end
    attrs = {int(s.name[6:12]): s.attributes for s in ds.samples}
    assert attrs[2] == ({"track_id": "7", "colour": "red"},)  # the keyframe's, with the id
    assert attrs[5] is None and attrs[9] == ({"track_id": "7"},)


@pytest.mark.parametrize("fmt", ["cvat", "coco"])
def test_track_ids_and_attributes_survive_conversion(tmp_path, fmt):
    """CVAT video -> CVAT for images or COCO -> back: every box keeps its track id and its
    attributes (CVAT declares them in <meta>; COCO holds them as CVAT's COCO export does)."""
    _frames(tmp_path / "src", 3)
    (tmp_path / "src" / "annotations.xml").write_text("""<annotations><version>1.1</version>
<meta><task><start_frame>0</start_frame><stop_frame>2</stop_frame><labels>
<label><name>car</name></label><label><name>bus</name></label></labels></task></meta>
<track id="3" label="bus">
 <box frame="0" outside="0" occluded="1" keyframe="1" xtl="1" ytl="1" xbr="9" ybr="9">
  <attribute name="difficult">true</attribute><attribute name="plate">AB 12</attribute></box>
</track><track id="11" label="car">
 <box frame="1" outside="0" occluded="0" keyframe="1" xtl="5" ytl="5" xbr="25" ybr="15"/>
</track></annotations>""")
    src = read(tmp_path / "src" / "annotations.xml")
    out = write(src, tmp_path / "out", fmt)
    if fmt == "cvat":  # declared for CVAT's import: a text attribute of its label
        text = (out / "annotations.xml").read_text()
        assert "<name>plate</name>" in text and "<name>track_id</name>" in text
    back = {s.name: s for s in read(out).samples}
    for s in src.samples:
        t = back[s.name]
        np.testing.assert_allclose(t.boxes, s.boxes, atol=1e-3)
        assert t.attributes == s.attributes, s.name
        if fmt == "cvat":  # COCO has no difficult flag
            assert t.difficult.tolist() == s.difficult.tolist()
    assert back["frame_000000.jpg"].attributes == ({"plate": "AB 12", "track_id": "3"},)


def test_cvat_rotated_box_windows_name_and_bad_numbers(tmp_path):
    (tmp_path / "sub").mkdir()
    Image.new("RGB", (20, 20)).save(tmp_path / "sub" / "a.jpg")
    xml = tmp_path / "annotations.xml"
    body = """<annotations><version>1.1</version><meta><task><labels><label><name>x</name>
</label></labels></task></meta><image id="0" name="sub\\a.jpg" width="20" height="20">
<box label="x" occluded="0" xtl="{}" ytl="8" xbr="10" ybr="12" rotation="90"/>
</image></annotations>"""
    xml.write_text(body.format("0"))
    (s,) = read(xml).samples
    np.testing.assert_allclose(s.boxes, [[3, 5, 7, 15]], atol=1e-4)  # 10x4 turned to 4x10
    xml.write_text(body.format("abc"))
    with pytest.raises(FormatError, match=r"annotations.xml.*xtl='abc' is not a number"):
        read(xml)


def test_cvat_refuses_a_path_that_leaves_the_dataset(tmp_path):
    (tmp_path / "ds").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "secret.jpg")
    (tmp_path / "ds" / "annotations.xml").write_text(
        '<annotations><version>1.1</version><image id="0" name="../secret.jpg" width="8" '
        'height="8"/></annotations>'
    )
    with pytest.raises(FormatError, match="points outside the dataset"):
        read(tmp_path / "ds")


def _ls_images(folder: Path, names, size=(2800, 2800)):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.new("RGB", size, (20, 20, 20)).save(folder / n)


def test_labelstudio_json_as_label_studio_exports_it(tmp_path):
    _ls_images(tmp_path / "images", ["image1.jpg", "image2.jpg"])
    shutil.copy(FIX / "labelstudio" / "boxes.json", tmp_path / "export.json")
    assert detect(tmp_path) == "labelstudio" and detect(tmp_path / "export.json") == "labelstudio"
    ds = read(tmp_path)
    assert ds.format == "labelstudio" and ds.classes == ["parasites", "white"]
    a, b = ds.samples
    # task 1 has two annotators: the first annotation is read
    assert a.labels.tolist() == [0, 1] and b.labels.tolist() == [1, 1]
    x, y, w, h = 37.15846994535519, 70.67395264116576, 4.189435336976321, 4.735883424408015
    np.testing.assert_allclose(a.boxes[0], np.array([x, y, x + w, y + h]) * 28, atol=1e-3)


def test_labelstudio_polygons_rotation_and_upload_paths(tmp_path):
    _ls_images(tmp_path, ["image2.jpg"], (640, 426))
    shutil.copy(FIX / "labelstudio" / "polygons.json", tmp_path / "p.json")
    (s,) = read(tmp_path / "p.json").samples
    pts = np.array(json.loads((FIX / "labelstudio" / "polygons.json").read_text())[0]
                   ["annotations"][0]["result"][0]["value"]["points"]) * [6.4, 4.26]  # fmt: skip
    np.testing.assert_allclose(s.boxes[0], [*pts.min(0), *pts.max(0)], atol=1e-3)
    # an upload path: Label Studio's hash prefix is not part of the file's name
    up = tmp_path / "up"
    _ls_images(up, ["example.png", "cat.jpg"], (128, 128))
    shutil.copy(FIX / "labelstudio" / "upload.json", up / "u.json")
    assert read(up / "u.json").samples[0].name == "example.png"
    task = {
        "id": 1,
        "data": {"image": "/data/upload/3/8f2c1a7e-cat.jpg"},
        "annotations": [
            {
                "result": [
                    {
                        "type": "rectanglelabels",
                        "original_width": 128,
                        "original_height": 128,
                        "value": {
                            "x": 10,
                            "y": 10,
                            "width": 20,
                            "height": 10,
                            "rotation": 90,
                            "rectanglelabels": ["cat"],
                        },
                    }
                ]
            }
        ],
    }
    (up / "u.json").write_text(json.dumps([task]))
    (s,) = read(up / "u.json").samples
    # 25.6 x 12.8 px at (12.8, 12.8), turned 90 degrees clockwise about its top-left corner
    np.testing.assert_allclose(s.boxes[0], [0.0, 12.8, 12.8, 38.4], atol=1e-3)


def test_labelstudio_local_files_min_negatives_unlabeled_and_clipping(tmp_path):
    _ls_images(tmp_path / "photos", ["a.jpg", "b.jpg", "c.jpg"], (100, 50))
    value = {"x": 50, "y": 0, "width": 50.0001, "height": 100.0001, "rotation": 0,
             "rectanglelabels": ["cat"]}  # fmt: skip
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=photos%2Fa.jpg"},
         "annotations": [{"result": [{"type": "rectanglelabels", "value": value,
                                      "original_width": 100, "original_height": 50},
                                     {"type": "choices", "value": {"choices": ["blurry"]}}]}]},
        {"id": 2, "data": {"image": "/data/local-files/?d=photos%5Cb.jpg"},
         "annotations": [{"result": []}]},
        {"id": 3, "data": {"image": "photos/c.jpg"}, "annotations": [],
         "predictions": [{"result": []}]},
    ]  # fmt: skip
    (tmp_path / "export.json").write_text(json.dumps(tasks))
    ds = read(tmp_path / "export.json")
    assert [s.name for s in ds.samples] == ["a.jpg", "b.jpg"]
    np.testing.assert_allclose(ds.samples[0].boxes, [[50, 0, 100, 50]])  # clipped to the image
    assert ds.samples[1].is_negative  # labeled with nothing
    assert "1 tasks without an annotation" in _issues(ds, "unlabeled_task")[0].message
    assert "1 results that are no box skipped (choices)" in _issues(ds, "skipped_shape")[0].message
    rows = [{"id": 1, "image": "/data/local-files/?d=photos/a.jpg", "label": [
        {**value, "original_width": 100, "original_height": 50}]}]  # fmt: skip
    (tmp_path / "min.json").write_text(json.dumps(rows))
    assert detect(tmp_path / "min.json") == "labelstudio"
    (s,) = read(tmp_path / "min.json").samples
    np.testing.assert_allclose(s.boxes, [[50, 0, 100, 50]])
    tasks[0]["data"]["image"] = "/data/local-files/?d=..%2F..%2Fetc%2Fpasswd.jpg"
    (tmp_path / "export.json").write_text(json.dumps(tasks[:1]))
    _ls_images(tmp_path.parent, ["passwd.jpg"], (8, 8))
    with pytest.raises(FormatError):
        read(tmp_path / "export.json")


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio"])
def test_round_trip_keeps_boxes_classes_and_flags(tmp_path, fmt):
    from detforge.data.dataset import Dataset, Sample

    gen = generate(tmp_path / "src", 12, seed=4, size=(160, 120))
    samples = []
    for s in gen.samples:
        n = len(s.boxes)
        flags = np.arange(n) == 0, np.arange(n) == n - 1  # difficult first, truncated last
        samples.append(Sample(s.image, s.width, s.height, s.boxes, s.labels, *flags))
    src = Dataset(gen.classes, samples, gen.root)
    out = write(src, tmp_path / fmt, fmt)
    back = read(out)
    assert back.format == fmt and back.classes == src.classes
    assert len(back) == len(src)
    by_name = {s.name: s for s in back.samples}
    for s in src.samples:
        t = by_name[s.name]
        np.testing.assert_allclose(t.boxes, s.boxes, atol=1e-3)
        assert t.labels.tolist() == s.labels.tolist()
        if fmt == "cvat":  # CVAT holds both flags; Label Studio's rectangles hold neither
            assert t.difficult.tolist() == s.difficult.tolist()
            assert t.truncated.tolist() == s.truncated.tolist()


def test_convert_finds_images_in_the_folder_given(tmp_path):
    from typer.testing import CliRunner

    from detforge.cli import app

    _ls_images(tmp_path / "pics", ["image1.jpg", "image2.jpg"])
    (tmp_path / "ls").mkdir()
    shutil.copy(FIX / "labelstudio" / "boxes.json", tmp_path / "ls" / "export.json")
    r = CliRunner().invoke(app, ["data", "convert", str(tmp_path / "ls" / "export.json"),
                                 "--out", str(tmp_path / "out"), "--to", "yolo", "--images",
                                 str(tmp_path / "pics")])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert len(read(tmp_path / "out")) == 2


def test_cvat_video_leaves_out_an_unreadable_frame_and_names_it(tmp_path):
    _frames(tmp_path, 3)
    (tmp_path / "images" / "frame_000001.jpg").write_bytes(b"\xff\xd8\xff")  # cut short
    (tmp_path / "annotations.xml").write_text("""<annotations><version>1.1</version>
<meta><task><start_frame>0</start_frame><stop_frame>2</stop_frame><labels>
<label><name>car</name></label></labels></task></meta>
<track id="1" label="car">
 <box frame="0" outside="0" occluded="0" keyframe="1" xtl="1" ytl="1" xbr="9" ybr="9"/>
</track></annotations>""")
    ds = read(tmp_path / "annotations.xml")
    assert [s.name for s in ds.samples] == ["frame_000000.jpg", "frame_000002.jpg"]
    (bad,) = _issues(ds, "unreadable_image")
    assert bad.path.endswith("frame_000001.jpg") and bad.severity == "error"
