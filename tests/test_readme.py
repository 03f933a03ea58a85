"""The README's walk-through runs as written on folders laid out the way labelme, LabelImg and
the TensorFlow Object Detection API tools write them (only ``--time 10`` becomes one epoch)."""

from __future__ import annotations

import base64
import json
import re
import shlex
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detforge.cli import app
from detforge.data import read
from detforge.data.records import encode_example, frame
from detforge.data.synth import generate

README = Path(__file__).resolve().parents[1] / "README.md"
CLASSES = ["cat", "dog"]


def walkthrough() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- walkthrough:start -->\n```bash\n(.*?)```", text, re.S).group(1)
    return [ln for ln in block.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def photos(folder: Path, n: int, seed: int):
    """Synthetic JPEGs with their boxes; shape classes folded into two names."""
    ds = generate(folder, n, seed=seed, size=(96, 80), negatives=0.0, max_objects=2)
    return [
        (s.path, s.width, s.height, s.boxes, [CLASSES[int(k) % 2] for k in s.labels])
        for s in ds.samples
    ]


def labelme_folder(root: Path) -> int:
    """labelme's own layouts: JSON beside its image, JSON pointing at ``..\\images\\x.jpg``
    (saved on Windows), and the tutorial's JSON whose imagePath names itself, image embedded."""
    shots = photos(root / "images", 12, seed=1)
    for i, (path, w, h, boxes, names) in enumerate(shots):
        shapes = [
            {
                "label": c,
                "points": [[float(b[0]), float(b[1])], [float(b[2]), float(b[3])]],
                "shape_type": "rectangle",
                "group_id": None,
                "flags": {},
            }
            for b, c in zip(boxes, names)
        ]
        doc = {
            "version": "5.4.1",
            "flags": {},
            "shapes": shapes,
            "imageHeight": h,
            "imageWidth": w,
            "imageData": None,
        }
        json_path = root / "my_labelme" / f"{path.stem}.json"
        json_path.parent.mkdir(parents=True, exist_ok=True)
        if i % 3 == 0:  # beside its image
            doc["imagePath"] = path.name
            (json_path.parent / path.name).write_bytes(path.read_bytes())
        elif i % 3 == 1:  # labelled on Windows, images in a sibling folder
            doc["imagePath"] = f"..\\images\\{path.name}"
        else:  # the tutorial: imagePath is the JSON itself, the image only embedded
            doc["imagePath"] = json_path.name
            doc["imageData"] = base64.b64encode(path.read_bytes()).decode()
        json_path.write_text(json.dumps(doc, indent=2))
    return len(shots)


def labelimg_folder(root: Path) -> int:
    """LabelImg's Pascal VOC XML, saved into annotations/ with an absolute Windows <path>."""
    shots = photos(root / "labelimg" / "images", 12, seed=2)
    for path, w, h, boxes, names in shots:
        objects = "".join(
            f"<object><name>{c}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>0</difficult><bndbox><xmin>{int(b[0])}</xmin><ymin>{int(b[1])}</ymin>"
            f"<xmax>{int(b[2])}</xmax><ymax>{int(b[3])}</ymax></bndbox></object>"
            for b, c in zip(boxes, names)
        )
        xml = (
            f"<annotation><folder>images</folder><filename>{path.name}</filename>"
            f"<path>C:\\Users\\ana\\Pictures\\images\\{path.name}</path>"
            "<source><database>Unknown</database></source>"
            f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{objects}</annotation>"
        )
        out = root / "labelimg" / "annotations" / f"{path.stem}.xml"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(xml)
    return len(shots)


def tf_folder(root: Path) -> int:
    """What the TF OD API tutorials leave: train.record with label_map.pbtxt beside it (the
    keys of its create_tf_record scripts), and data/train_labels.csv with images in images/."""
    shots = photos(root / "tf" / "images", 15, seed=3)
    ids = {c: k + 1 for k, c in enumerate(CLASSES)}
    records, rows = [], ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for path, w, h, boxes, names in shots:
        records.append(
            frame(
                encode_example(
                    {
                        "image/height": [h],
                        "image/width": [w],
                        "image/filename": path.name.encode(),
                        "image/source_id": path.name.encode(),
                        "image/encoded": path.read_bytes(),
                        "image/format": b"jpeg",
                        "image/object/bbox/xmin": [float(b[0]) / w for b in boxes],
                        "image/object/bbox/xmax": [float(b[2]) / w for b in boxes],
                        "image/object/bbox/ymin": [float(b[1]) / h for b in boxes],
                        "image/object/bbox/ymax": [float(b[3]) / h for b in boxes],
                        "image/object/class/text": [c.encode() for c in names],
                        "image/object/class/label": [ids[c] for c in names],
                    }
                )
            )
        )
        rows += [
            f"{path.name},{w},{h},{c},{int(b[0])},{int(b[1])},{int(b[2])},{int(b[3])}"
            for b, c in zip(boxes, names)
        ]
    (root / "tf" / "train.record").write_bytes(b"".join(records))
    (root / "tf" / "label_map.pbtxt").write_text(
        "".join(f"item {{\n  id: {i}\n  name: '{c}'\n}}\n" for c, i in ids.items())
    )
    (root / "tf" / "data").mkdir()
    (root / "tf" / "data" / "train_labels.csv").write_text("\n".join(rows) + "\n")
    return len(shots)


def cvat_folder(root: Path) -> int:
    """A CVAT task exported as "CVAT for images 1.1" with its images."""
    shots = photos(root / "cvat_task" / "images", 10, seed=4)
    labels = "".join(f"<label><name>{c}</name><attributes/></label>" for c in CLASSES)
    images = []
    for i, (path, w, h, boxes, names) in enumerate(shots):
        shapes = "".join(
            f'<box label="{c}" occluded="0" source="manual" xtl="{b[0]:.2f}" ytl="{b[1]:.2f}" '
            f'xbr="{b[2]:.2f}" ybr="{b[3]:.2f}" z_order="0"/>'
            for b, c in zip(boxes, names)
        )
        images.append(
            f'<image id="{i}" name="{path.name}" width="{w}" height="{h}">{shapes}</image>'
        )
    (root / "cvat_task" / "annotations.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        f"<mode>annotation</mode><labels>{labels}</labels></task></meta>{''.join(images)}"
        "</annotations>\n"
    )
    return len(shots)


def label_studio_folder(root: Path) -> int:
    """A Label Studio project's JSON export, images served as local files from photos/."""
    shots = photos(root / "label_studio" / "photos", 10, seed=5)
    tasks = []
    for i, (path, w, h, boxes, names) in enumerate(shots):
        result = [
            {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
             "original_width": w, "original_height": h, "image_rotation": 0,
             "value": {"x": b[0] * 100 / w, "y": b[1] * 100 / h, "width": (b[2] - b[0]) * 100 / w,
                       "height": (b[3] - b[1]) * 100 / h, "rotation": 0, "rectanglelabels": [c]}}
            for b, c in zip(boxes.tolist(), names)
        ]  # fmt: skip
        tasks.append({"id": i + 1, "data": {"image": f"/data/local-files/?d=photos/{path.name}"},
                      "annotations": [{"id": i + 1, "result": result, "was_cancelled": False}],
                      "predictions": []})  # fmt: skip
    (root / "label_studio" / "export.json").write_text(json.dumps(tasks))
    return len(shots)


@pytest.mark.slow
def test_readme_walkthrough_runs_as_written(tmp_path, monkeypatch):
    counts = {
        "my_labelme": labelme_folder(tmp_path),
        "labelimg/annotations": labelimg_folder(tmp_path),
        "tf/train.record": tf_folder(tmp_path),
        "cvat_task": cvat_folder(tmp_path),
        "label_studio/export.json": label_studio_folder(tmp_path),
    }
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    commands = walkthrough()
    assert len(commands) >= 10
    for line in commands:
        args = shlex.split(line.replace("--time 10", "--epochs 1 --imgsz 128"))
        assert args[0] == "detforge"
        r = runner.invoke(app, args[1:], catch_exceptions=False)
        assert r.exit_code == 0, f"{line}\n{r.output}"
    for src, n in counts.items():  # every image of every layout was read
        assert len(read(tmp_path / src)) == n, src
    assert len(read(tmp_path / "tf_coco")) == counts["tf/train.record"]
    assert len(read(tmp_path / "ls_yolo")) == counts["label_studio/export.json"]
    for run in ("labelme", "labelimg", "tf", "cvat"):
        assert (tmp_path / "runs" / "train" / run / "weights" / "best.pt").is_file()
    assert (tmp_path / "runs" / "train" / "tf" / "weights" / "best.onnx").is_file()
    split = json.loads((tmp_path / "labelimg_shards" / "train" / "index.json").read_text())
    assert split["classes"] == CLASSES
