"""labelme files as labelme writes them: Windows paths, embedded images, every shape type."""

import base64
import json

import numpy as np
import pytest

from detforge.data import formats, read
from detforge.data.formats import labelme
from detforge.data.image import EmbeddedImage, FileImage
from detforge.errors import FormatError

from conftest import save_image


def shape(label, points, kind="rectangle", group_id=None, **extra):
    return {
        "label": label,
        "points": points,
        "group_id": group_id,
        "description": "",
        "shape_type": kind,
        "flags": {},
        **extra,
    }


def labelme_json(path, shapes, image_path, w=64, h=48, image_data=None, version="5.5.0"):
    obj = {
        "version": version,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": image_data,
        "imageHeight": h,
        "imageWidth": w,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2))
    return path


def test_windows_relative_path_and_corner_order(tmp_path):
    save_image(tmp_path / "images" / "x.jpg", 64, 48, fmt="JPEG")
    labelme_json(
        tmp_path / "ann" / "x.json", [shape("face", [[50.5, 40.25], [10, 5]])], "..\\images\\x.jpg"
    )
    ds = read(tmp_path / "ann")
    assert ds.format == "labelme" and ds.classes == ["face"]
    s = ds[0]
    assert isinstance(s.image, FileImage) and s.path.name == "x.jpg"
    np.testing.assert_allclose(s.boxes, [[10, 5, 50.5, 40.25]])


def test_embedded_image_data_when_file_absent(tmp_path):
    img = save_image(tmp_path / "tmp.png", 30, 20, fmt="PNG")
    data = base64.b64encode(img.read_bytes()).decode()
    img.unlink()
    labelme_json(
        tmp_path / "d" / "y.json",
        [shape("cat", [[1, 2], [11, 12]])],
        "C:\\Users\\me\\Desktop\\y.png",
        30,
        20,
        image_data=data,
    )
    ds = read(tmp_path / "d")
    assert isinstance(ds[0].image, EmbeddedImage)
    assert ds[0].load().shape == (20, 30, 3)
    # writing copies the embedded pixels out as a real file
    back = read(formats.get("labelme").write(ds, tmp_path / "out"))
    assert isinstance(back[0].image, FileImage) and back[0].load().shape == (20, 30, 3)


def test_shapes_groups_ignore_and_skip(tmp_path):
    save_image(tmp_path / "a.jpg", 100, 100, fmt="JPEG")
    shapes = [
        shape("dog", [[10, 10], [20, 30], [5, 25]], "polygon"),
        shape("ball", [[50, 50], [50, 60]], "circle"),  # center + rim point, r = 10
        shape("person", [[0, 0], [10, 10]], group_id=1),
        shape("person", [[30, 40], [35, 45]], group_id=1),  # same group: one union box
        shape("person", [[60, 60], [70, 70]], group_id=2),
        shape("__ignore__", [[0, 0], [99, 99]]),
        shape("line", [[1, 1], [9, 3]], "linestrip"),
        shape("eye", [[40, 41]], "point"),  # no area: skipped with a note
        shape("edge", [[5, 7], [30, 7]], "line"),  # flat: the same
    ]
    labelme_json(tmp_path / "a.json", shapes, "a.jpg", 100, 100)
    with pytest.warns(UserWarning, match=r"2 shapes that enclose no area skipped \(point 'eye'"):
        ds = read(tmp_path)
    got = sorted((ds.classes[lab], b) for lab, b in zip(ds[0].labels, ds[0].boxes.tolist()))
    assert got == [
        ("ball", [40, 40, 60, 60]),
        ("dog", [5, 10, 20, 30]),
        ("line", [1, 1, 9, 3]),
        ("person", [0, 0, 35, 45]),
        ("person", [60, 60, 70, 70]),
    ]
    skip = labelme.read(tmp_path, shapes="skip")
    assert sorted(skip.classes[i] for i in skip[0].labels) == ["ball", "person", "person"]


def test_labelme3_files_and_size_mismatch(tmp_path):
    save_image(tmp_path / "b.jpg", 64, 48, fmt="JPEG")
    obj = {
        "version": "3.16.7",
        "flags": {},
        "lineColor": [0, 255, 0, 128],
        "fillColor": [255, 0, 0, 128],
        "imagePath": "b.jpg",
        "imageData": None,
        "imageHeight": 480,
        "imageWidth": 640,
        "shapes": [
            {
                "label": "x",
                "line_color": None,
                "fill_color": None,
                "points": [[1, 1], [5, 1], [5, 5], [1, 5]],
            }
        ],
    }  # no shape_type: polygon
    (tmp_path / "b.json").write_text(json.dumps(obj))
    ds = read(tmp_path)
    np.testing.assert_allclose(ds[0].boxes, [[1, 1, 5, 5]])
    assert (ds[0].width, ds[0].height) == (64, 48)  # the real image wins
    assert [i.kind for i in ds.issues] == ["size_mismatch"]


def test_negatives_and_empty_shapes(tmp_path):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    save_image(tmp_path / "b.jpg", fmt="JPEG", seed=1)
    save_image(tmp_path / "c.jpg", fmt="JPEG", seed=2)
    labelme_json(tmp_path / "a.json", [shape("x", [[1, 1], [5, 5]])], "a.jpg")
    labelme_json(tmp_path / "b.json", [], "b.jpg")  # labelme saves images with no shapes so
    assert read(tmp_path).num_negatives == 1
    ds = labelme.read(tmp_path, negatives=True)  # c.jpg has no JSON at all
    assert len(ds) == 3 and ds.num_negatives == 2


def test_missing_image_reported_not_fatal(tmp_path):
    labelme_json(tmp_path / "gone.json", [shape("x", [[1, 1], [5, 5]])], "gone.jpg")
    with pytest.raises(FormatError, match=r"no usable images.*gone\.json.*'gone\.jpg' not found"):
        read(tmp_path, "labelme")  # a dataset of only missing images is an error
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    labelme_json(tmp_path / "a.json", [shape("x", [[1, 1], [5, 5]])], "a.jpg")
    ds = read(tmp_path, "labelme")
    assert len(ds) == 1 and ds.issues[0].kind == "missing_image"
    assert "gone.json" in ds.issues[0].path


def test_bad_shape_names_file(tmp_path):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    labelme_json(tmp_path / "a.json", [shape("x", [], "polygon")], "a.jpg")
    with pytest.raises(FormatError, match=r"a\.json.*shape 0"):
        read(tmp_path / "a.json", "labelme")


def test_written_json_is_what_labelme_saves(synth_ds, tmp_path):
    dst = formats.get("labelme").write(synth_ds, tmp_path / "lm")
    obj = json.loads(next(dst.glob("*.json")).read_text())
    assert set(obj) >= {
        "version",
        "flags",
        "shapes",
        "imagePath",
        "imageData",
        "imageHeight",
        "imageWidth",
    }
    assert (dst / obj["imagePath"]).is_file()
    for sh in obj["shapes"]:
        assert sh["shape_type"] == "rectangle" and len(sh["points"]) == 2
        assert set(sh) >= {"label", "points", "group_id", "shape_type", "flags"}
