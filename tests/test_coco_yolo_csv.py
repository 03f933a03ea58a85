"""COCO, YOLO and CSV as their tools write them."""

import json

import numpy as np
import pytest
import yaml

from detforge.data import formats, read
from detforge.errors import FormatError

from conftest import save_image


def test_coco_noncontiguous_ids_crowd_and_negatives(tmp_path):
    save_image(tmp_path / "images" / "a.jpg", fmt="JPEG")
    save_image(tmp_path / "images" / "b.jpg", fmt="JPEG", seed=1)
    obj = {
        "images": [
            {"id": 7, "file_name": "a.jpg", "width": 64, "height": 48},
            {"id": 9, "file_name": "b.jpg", "width": 64, "height": 48},
        ],
        "categories": [{"id": 90, "name": "zebra"}, {"id": 3, "name": "car"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 90, "bbox": [10, 5, 20, 15], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [0.5, 0.5, 3, 4], "iscrowd": 1},
        ],
    }
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "instances_default.json").write_text(json.dumps(obj))
    assert formats.detect(tmp_path / "annotations" / "instances_default.json") == "coco"
    ds = read(tmp_path / "annotations" / "instances_default.json")
    assert ds.classes == ["car", "zebra"]  # ordered by category id
    a = next(s for s in ds if s.path.name == "a.jpg")
    assert [ds.classes[i] for i in a.labels] == ["zebra", "car"]
    np.testing.assert_allclose(a.boxes, [[10, 5, 30, 20], [0.5, 0.5, 3.5, 4.5]])
    assert a.iscrowd.tolist() == [False, True]
    assert ds.num_negatives == 1
    # written COCO keeps iscrowd and is valid for pycocotools-style readers
    out = formats.get("coco").write(ds, tmp_path / "w")
    w = json.loads((out / "annotations.json").read_text())
    assert sorted(a["iscrowd"] for a in w["annotations"]) == [0, 1]
    assert all(len(a["segmentation"][0]) == 8 for a in w["annotations"])


def test_coco_unknown_category_names_annotation(tmp_path):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    obj = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "x"}],
        "annotations": [{"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 1, 2, 2]}],
    }
    (tmp_path / "c.json").write_text(json.dumps(obj))
    with pytest.raises(FormatError, match=r"c\.json.*annotation 0 \(id 5\)"):
        read(tmp_path / "c.json")


def test_yolo_data_yaml_names_dict_splits_and_negatives(tmp_path):
    for split in ("train", "val"):
        for i in range(2):
            save_image(tmp_path / "images" / split / f"{split}{i}.jpg", 100, 50, fmt="JPEG")
    lab = tmp_path / "labels" / "train"
    lab.mkdir(parents=True)
    (lab / "train0.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2 0.3 0.1\n")
    (lab / "train1.txt").write_text("")  # empty: negative; val has no txt at all: negatives
    cfg = {"path": ".", "train": "images/train", "val": "images/val", "names": {0: "a", 1: "b"}}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump(cfg))
    ds = read(tmp_path / "data.yaml")
    assert ds.classes == ["a", "b"] and len(ds) == 4 and ds.num_negatives == 3
    s = next(s for s in ds if s.path.name == "train0.jpg")
    np.testing.assert_allclose(s.boxes, [[40, 15, 60, 35], [10, 5, 30, 10]], atol=1e-4)
    # the folder of one split is detected as YOLO too
    assert formats.detect(tmp_path / "images" / "train") == "yolo"
    assert len(read(tmp_path / "images" / "train", names=["a", "b"])) == 2


def test_yolo_bad_line_names_file_and_line(tmp_path):
    save_image(tmp_path / "images" / "a.jpg", fmt="JPEG")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.5 0.5\n")
    (tmp_path / "classes.txt").write_text("x\n")
    with pytest.raises(FormatError, match=r"a\.txt:2"):
        read(tmp_path)
    (tmp_path / "labels" / "a.txt").write_text("3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(FormatError, match=r"a\.txt:1.*class id 3"):
        read(tmp_path)


def test_csv_tf_tutorial_layout_and_negatives(tmp_path):
    save_image(tmp_path / "images" / "a.jpg", fmt="JPEG")
    save_image(tmp_path / "images" / "b.jpg", fmt="JPEG", seed=1)
    (tmp_path / "train_labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "a.jpg,64,48,raccoon,1,2,30,40\n"
        "a.jpg,64,48,dog,5,5,10.5,12\n"
        "b.jpg,64,48,,,,,\n"
    )
    assert formats.detect(tmp_path) == "csv"
    ds = read(tmp_path)
    assert ds.classes == ["dog", "raccoon"] and ds.num_negatives == 1 and ds.num_boxes == 2
    (tmp_path / "train_labels.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\na.jpg,64,48,x,1,2,three,4\n"
    )
    with pytest.raises(FormatError, match=r"train_labels\.csv:2"):
        read(tmp_path)


def test_labelimg_yolo_folder_and_roboflow_yaml(tmp_path):
    """LabelImg saves YOLO txt beside the images with classes.txt; Roboflow writes
    ``train: ../train/images`` in a data.yaml that sits beside train/."""
    lab = tmp_path / "labelimg"
    save_image(lab / "a.jpg", 100, 50, fmt="JPEG")
    save_image(lab / "b.jpg", 100, 50, fmt="JPEG", seed=1)
    (lab / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (lab / "classes.txt").write_text("dog\ncat\n")
    assert formats.detect(lab) == "yolo"
    ds = read(lab)
    assert ds.classes == ["dog", "cat"] and len(ds) == 2 and ds.num_negatives == 1

    rf = tmp_path / "roboflow"
    save_image(rf / "train" / "images" / "t.jpg", 100, 50, fmt="JPEG")
    (rf / "train" / "labels").mkdir(parents=True)
    (rf / "train" / "labels" / "t.txt").write_text("0 0.5 0.5 0.2 0.4\n")
    (rf / "data.yaml").write_text(
        "train: ../train/images\nval: ../train/images\nnc: 1\nnames: ['fish']\n"
    )
    ds = read(rf / "data.yaml")
    assert ds.classes == ["fish"] and len(ds) == 1 and ds.num_boxes == 1
    assert len(read(rf)) == 1
