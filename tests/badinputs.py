"""The bad-input corpus: each case makes its own files and states detforge's documented answer.

``test_bad_inputs.py`` runs every case through the real CLI; ``python tests/badinputs.py``
prints the table in ``docs/bad-inputs.md``. A case's source files live under ``src/`` of its
folder and must be byte-identical afterwards; ``gone`` lists outputs that must not exist.
"""

from __future__ import annotations

import base64
import io
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

EXIT_OK, EXIT_FINDINGS, EXIT_ERROR = 0, 1, 2


@dataclass
class Case:
    name: str
    what: str  # the bad input, for the docs
    build: Callable[[Path], None]  # writes the case's files under its folder
    args: list[str]  # after `detforge`, run in the case folder
    code: int  # the exit code
    says: str | tuple  # regexes the output must match (the line naming the file)
    answer: str  # detforge's answer, for the docs
    gone: list[str] = field(default_factory=list)  # outputs that must not exist afterwards
    slow: bool = False  # builds a model


def jpeg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8")
    else:
        path.write_bytes(data)
    return path


def labelme(path: Path, image: str | None, shapes=None, **extra) -> Path:
    shapes = (
        [{"label": "cat", "points": [[2, 2], [30, 20]], "shape_type": "rectangle"}]
        if shapes is None
        else shapes
    )
    obj = {"version": "5.5.0", "flags": {}, "shapes": shapes, "imagePath": image}
    obj.update({"imageData": None, "imageWidth": 64, "imageHeight": 48}, **extra)
    return put(path, json.dumps(obj))


def good_labelme(src: Path, n: int = 4) -> None:
    for i in range(n):
        put(src / f"g{i}.jpg", jpeg(seed=i))
        labelme(src / f"g{i}.json", f"g{i}.jpg")


def coco(path: Path, images, anns, cats=None) -> Path:
    cats = [{"id": 1, "name": "cat"}] if cats is None else cats
    return put(path, json.dumps({"images": images, "annotations": anns, "categories": cats}))


def coco_set(src: Path, **change) -> None:
    put(src / "images" / "a.jpg", jpeg())
    put(src / "images" / "b.jpg", jpeg(seed=1))
    images = [
        {"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
        {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48},
    ]
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 20, 10]}]
    images, anns = change.get("images", images), change.get("anns", anns)
    coco(src / "annotations.json", images, anns, change.get("cats"))


def record(payload: bytes) -> bytes:
    from detforge.data.records import frame

    return frame(payload)


def example(**feats) -> bytes:
    from detforge.data.records import encode_example

    base = {
        "image/encoded": [jpeg()],
        "image/format": "jpeg",
        "image/filename": "a.jpg",
        "image/height": [48],
        "image/width": [64],
        "image/object/bbox/xmin": [0.1],
        "image/object/bbox/ymin": [0.1],
        "image/object/bbox/xmax": [0.5],
        "image/object/bbox/ymax": [0.5],
        "image/object/class/text": ["cat"],
        "image/object/class/label": [1],
    }
    base.update(feats)
    return encode_example(base)


def voc(path: Path, image: str, boxes: list, size=(64, 48)) -> Path:
    objs = "".join(
        f"<object><name>cat</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
        f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for b in boxes
    )
    return put(
        path,
        f"<annotation><filename>{image}</filename><size><width>{size[0]}</width>"
        f"<height>{size[1]}</height><depth>3</depth></size>{objs}</annotation>",
    )


def checkpoint(path: Path, name: str = "ssdlite", **change) -> None:
    """A random-init detforge checkpoint, optionally with fields changed or removed."""
    import torch

    from detforge.models import build, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(path, build(name, ["cat", "dog"], imgsz=96))
    if change:
        ckpt = torch.load(path, weights_only=True)
        for k, v in change.items():
            if v is None:
                ckpt.pop(k, None)
            else:
                ckpt[k] = v
        torch.save(ckpt, path)


def onnx_file(path: Path, meta: dict) -> None:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.UINT8, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    put(path, model.SerializeToString())
    onnx.checker.check_model(model)


# ---- the cases ---------------------------------------------------------------------------------


def _truncated(d: Path) -> None:
    good_labelme(d / "src")
    put(d / "src" / "bad.jpg", jpeg()[:400])
    labelme(d / "src" / "bad.json", "bad.jpg")


def _not_image(d: Path) -> None:
    good_labelme(d / "src")
    put(d / "src" / "text.jpg", "this is not a picture\n")
    labelme(d / "src" / "text.json", "text.jpg")


def _empty_image(d: Path) -> None:
    good_labelme(d / "src")
    put(d / "src" / "zero.jpg", b"")
    labelme(d / "src" / "zero.json", "zero.jpg")


def _bomb(d: Path) -> None:
    good_labelme(d / "src")
    buf = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buf, "PNG")  # 100 megapixels in a few kB
    put(d / "src" / "bomb.png", buf.getvalue())
    labelme(d / "src" / "bomb.json", "bomb.png")


def _outside_relative(d: Path) -> None:
    good_labelme(d / "src" / "ds")
    put(d / "secret" / "x.jpg", jpeg(seed=9))
    labelme(d / "src" / "ds" / "esc.json", "../../secret/x.jpg")


def _outside_absolute(d: Path) -> None:
    coco_set(d / "src", images=[{"id": 1, "file_name": "/etc/passwd", "width": 9, "height": 9}])


def _outside_windows(d: Path) -> None:
    good_labelme(d / "src" / "ds")
    put(d / "secret" / "x.jpg", jpeg(seed=9))
    labelme(d / "src" / "ds" / "esc.json", "..\\..\\secret\\x.jpg")


def _bom_embedded(d: Path) -> None:
    obj = {
        "version": "5.5.0",
        "flags": {},
        "shapes": [{"label": "cat", "points": [[2, 2], [30, 20]], "shape_type": "rectangle"}],
        "imagePath": "gone.jpg",
        "imageData": base64.b64encode(jpeg()).decode(),
        "imageWidth": 64,
        "imageHeight": 48,
    }
    put(d / "src" / "a.json", b"\xef\xbb\xbf" + json.dumps(obj).encode())


def _label_map(text: str):
    def build(d: Path) -> None:
        put(d / "src" / "train.record", record(example()))
        put(d / "src" / "label_map.pbtxt", text)

    return build


def _records(data: bytes):
    return lambda d: put(d / "src" / "x.record", data)


def _huge_length(d: Path) -> None:
    from detforge.data.records import masked_crc

    head = struct.pack("<Q", 2**60)
    put(d / "src" / "x.record", head + struct.pack("<I", masked_crc(head)) + b"tiny")


def _csv(text: str, image: bool = True):
    def build(d: Path) -> None:
        if image:
            put(d / "src" / "a.jpg", jpeg())
        put(d / "src" / "labels.csv", text)

    return build


CSV_HEAD = "filename,width,height,class,xmin,ymin,xmax,ymax\n"


def _xml_bomb(d: Path) -> None:
    ents = ['<!ENTITY a0 "lol">'] + [f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 9)]
    put(d / "src" / "a.jpg", jpeg())
    put(
        d / "src" / "a.xml",
        f"<?xml version='1.0'?><!DOCTYPE a [{''.join(ents)}]><annotation>&a8;</annotation>",
    )


def _many_boxes(d: Path) -> None:
    put(d / "src" / "a.jpg", jpeg(640, 480))
    boxes = [[x, y, x + 30, y + 20] for x in range(0, 600, 6) for y in range(0, 460, 4)]
    voc(d / "src" / "a.xml", "a.jpg", boxes + boxes[:3], size=(640, 480))


def _yolo(line: str):
    def build(d: Path) -> None:
        put(d / "src" / "images" / "a.jpg", jpeg())
        put(d / "src" / "labels" / "a.txt", line)
        put(d / "src" / "data.yaml", "path: .\ntrain: images\nval: images\nnames: [cat]\n")

    return build


def _shards_into_themselves(d: Path) -> None:
    good_labelme(d / "data")
    from detforge.data import read
    from detforge.data.shards import pack

    pack(read(d / "data"), d / "src", shard_size=2, workers=1, progress=False)


def _users_tfrecord(d: Path) -> None:
    good_labelme(d / "data")
    put(d / "src" / "data-00000-of-00001.tfrecord", b"the user's own file")


def _ckpt(**change):
    return lambda d: checkpoint(d / "src" / "m.pt", **change)


def _pickled_code(d: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            import os

            return os.system, (f"touch {d / 'pwned'}",)

    put(d / "src" / "m.pt", pickle.dumps({"format": "detforge-checkpoint", "x": Evil()}))


def _detector_and_folders(d: Path) -> None:
    checkpoint(d / "src" / "m.pt")
    for c in ("cat", "dog"):
        for i in range(2):
            put(d / "src" / "folders" / c / f"{i}.jpg", jpeg(seed=i))


def _classifier_and_boxes(d: Path) -> None:
    checkpoint(d / "src" / "m.pt", name="resnet18")
    good_labelme(d / "src" / "boxes")


OUT_ERR = r"error: .*output"
CASES: list[Case] = [
    # ---- images
    Case(
        "truncated-jpeg-convert",
        "a truncated JPEG among good ones (convert)",
        _truncated,
        ["data", "convert", "src", "--out", "out", "--to", "voc"],
        EXIT_OK,
        r"warning: skipping .*bad\.jpg: corrupt or truncated",
        "skipped, named; the rest is written",
    ),
    Case(
        "truncated-jpeg-strict",
        "the same with --strict",
        _truncated,
        ["data", "convert", "src", "--out", "out", "--to", "voc", "--strict"],
        EXIT_ERROR,
        r"error: .*bad\.jpg: corrupt or truncated.*1 of 5 images",
        "refused, named; no output",
        gone=["out"],
    ),
    Case(
        "truncated-jpeg-pack",
        "a truncated JPEG (pack)",
        _truncated,
        ["data", "pack", "src", "--out", "out", "--shard-size", "1"],
        EXIT_OK,
        (r"warning: skipping .*bad\.jpg", r"4 records.*1 images that do not decode left out"),
        "skipped, named, counted in index.json",
    ),
    Case(
        "truncated-jpeg-check",
        "a truncated JPEG (check)",
        _truncated,
        ["data", "check", "src"],
        EXIT_FINDINGS,
        r"unreadable_image",
        "reported as an error",
    ),
    Case(
        "text-as-jpeg",
        "a text file named .jpg",
        _not_image,
        ["data", "check", "src"],
        EXIT_FINDINGS,
        r"unreadable_image.*text\.jpg",
        "reported; never copied or packed",
    ),
    Case(
        "text-as-jpeg-pack",
        "a text file named .jpg (pack)",
        _not_image,
        ["data", "pack", "src", "--out", "out"],
        EXIT_OK,
        r"skipping .*text\.jpg: not an image",
        "skipped, named",
    ),
    Case(
        "zero-byte-image",
        "a 0-byte image",
        _empty_image,
        ["data", "check", "src"],
        EXIT_FINDINGS,
        r"unreadable_image.*zero\.jpg",
        "reported",
    ),
    Case(
        "decompression-bomb",
        "a 100-megapixel PNG of a few kB",
        _bomb,
        ["data", "convert", "src", "--out", "out", "--to", "coco"],
        EXIT_OK,
        r"skipping .*bomb\.png: .*megapixels, over the limit",
        "skipped, named, --max-pixels to allow",
    ),
    # ---- paths
    Case(
        "outside-relative",
        "labelme imagePath ../../secret/x.jpg",
        _outside_relative,
        ["data", "convert", "src/ds", "--out", "out", "--to", "coco"],
        EXIT_ERROR,
        r"error: .*esc\.json: image path '../../secret/x.jpg' points outside the dataset",
        "refused, naming the JSON and the path",
        gone=["out"],
    ),
    Case(
        "outside-relative-allowed",
        "the same with --allow-outside-paths",
        _outside_relative,
        ["data", "convert", "src/ds", "--out", "out", "--to", "coco", "--allow-outside-paths"],
        EXIT_OK,
        r"written coco",
        "followed, as asked",
    ),
    Case(
        "outside-relative-check",
        "the same (check)",
        _outside_relative,
        ["data", "check", "src/ds"],
        EXIT_FINDINGS,
        r"outside_path",
        "reported as an error",
    ),
    Case(
        "outside-windows",
        "labelme imagePath ..\\..\\secret\\x.jpg",
        _outside_windows,
        ["data", "stats", "src/ds"],
        EXIT_ERROR,
        r"esc\.json: image path .* points outside",
        "refused",
    ),
    Case(
        "outside-absolute",
        "COCO file_name /etc/passwd",
        _outside_absolute,
        ["data", "convert", "src", "--out", "out", "--to", "yolo"],
        EXIT_ERROR,
        r"annotations\.json: image path '/etc/passwd' points outside",
        "refused; nothing copied",
        gone=["out"],
    ),
    # ---- annotations
    Case(
        "labelme-shapes-object",
        "labelme 'shapes' is an object",
        lambda d: (
            put(d / "src" / "a.jpg", jpeg()),
            labelme(d / "src" / "a.json", "a.jpg", {"a": 1}),
        ),
        ["data", "stats", "src/a.json"],
        EXIT_ERROR,
        r"a\.json: 'shapes' must be a list",
        "error",
    ),
    Case(
        "labelme-width-text",
        "labelme imageWidth 'wide'",
        lambda d: (
            put(d / "src" / "a.jpg", jpeg()),
            labelme(d / "src" / "a.json", "a.jpg", imageWidth="wide"),
        ),
        ["data", "stats", "src/a.json"],
        EXIT_ERROR,
        r"a\.json: imageWidth is not a number",
        "error",
    ),
    Case(
        "labelme-nan-points",
        "labelme points with NaN",
        lambda d: (
            put(d / "src" / "a.jpg", jpeg()),
            labelme(
                d / "src" / "a.json",
                "a.jpg",
                [
                    {
                        "label": "cat",
                        "points": [[float("nan"), 1], [5, 5]],
                        "shape_type": "rectangle",
                    }
                ],
            ),
        ),
        ["data", "stats", "src/a.json"],
        EXIT_ERROR,
        r"a\.json: shape 0 .*NaN",
        "error",
    ),
    Case(
        "labelme-no-shapes",
        "a labelme JSON without 'shapes'",
        lambda d: (
            put(d / "src" / "a.jpg", jpeg()),
            put(d / "src" / "a.json", json.dumps({"version": "5", "imagePath": "a.jpg"})),
        ),
        ["data", "stats", "src"],
        EXIT_OK,
        r"1 images \(1 negatives\)",
        "read as a negative",
    ),
    Case(
        "labelme-bom-embedded",
        "UTF-8 BOM, image only embedded",
        _bom_embedded,
        ["data", "check", "src"],
        EXIT_OK,
        r"no errors",
        "read (as labelme does)",
    ),
    Case(
        "coco-string-bbox",
        "COCO bbox of strings",
        lambda d: coco_set(
            d / "src",
            anns=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": ["a", "b", "c", "d"]}],
        ),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"annotations\.json: annotation 0 \(id 1\): bbox must be 4 numbers",
        "error",
    ),
    Case(
        "coco-category-no-id",
        "COCO category without id",
        lambda d: coco_set(d / "src", cats=[{"name": "cat"}]),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"categories\[0\] has no 'id'",
        "error",
    ),
    Case(
        "coco-image-no-id",
        "COCO image without id",
        lambda d: coco_set(d / "src", images=[{"file_name": "a.jpg"}]),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"images\[0\] has no 'id'",
        "error",
    ),
    Case(
        "coco-duplicate-image-id",
        "two COCO images with one id",
        lambda d: coco_set(
            d / "src", images=[{"id": 1, "file_name": "a.jpg"}, {"id": 1, "file_name": "b.jpg"}]
        ),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"images\[1\] repeats id 1",
        "error",
    ),
    Case(
        "coco-orphan-annotation",
        "a COCO annotation naming an unknown image id",
        lambda d: coco_set(
            d / "src", anns=[{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}]
        ),
        ["data", "stats", "src"],
        EXIT_OK,
        r"warning: orphan_annotation: .*image_id 7",
        "warning; check: error",
    ),
    Case(
        "labelmap-word-id",
        "label map with id: one",
        _label_map("item {\n  id: one\n  name: 'cat'\n}\n"),
        ["data", "stats", "src/train.record"],
        EXIT_ERROR,
        r"label_map\.pbtxt:2: not a label map",
        "error with line",
    ),
    Case(
        "labelmap-duplicate-id",
        "label map with one id twice",
        _label_map("item { id: 1 name: 'cat' }\nitem { id: 1 name: 'dog' }\n"),
        ["data", "stats", "src/train.record"],
        EXIT_ERROR,
        r"id 1 is used twice",
        "error",
    ),
    Case(
        "record-huge-length",
        "TFRecord length 2^60 with a valid CRC",
        _huge_length,
        ["data", "stats", "src/x.record"],
        EXIT_ERROR,
        r"x\.record \(record 0\): truncated record",
        "error",
    ),
    Case(
        "record-garbage",
        "TFRecord with valid framing, garbage payload",
        _records(record(b"\x0f\xff\xff\xff garbage")),
        ["data", "stats", "src/x.record"],
        EXIT_ERROR,
        r"x\.record \(record 0\): record is not a tf\.train\.Example",
        "error",
    ),
    Case(
        "record-empty",
        "an empty .record file",
        _records(b""),
        ["data", "pack", "src/x.record", "--out", "out"],
        EXIT_ERROR,
        r"x\.record: no images found",
        "error; nothing written",
        gone=["out"],
    ),
    Case(
        "folder-empty",
        "a folder with no images",
        lambda d: (d / "src").mkdir(parents=True),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"cannot tell the annotation format of .*src",
        "error",
    ),
    Case(
        "csv-short-row",
        "a CSV row with missing fields",
        _csv(CSV_HEAD + "a.jpg,64\n"),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"labels\.csv:2: 2 fields, the header has 8",
        "error with line",
    ),
    Case(
        "csv-semicolons",
        "a CSV separated by semicolons",
        _csv(CSV_HEAD.replace(",", ";")),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"labels\.csv: columns are separated by ';'",
        "error naming the CSV",
    ),
    Case(
        "csv-no-rows",
        "a CSV with a header only",
        _csv(CSV_HEAD),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"no images found",
        "error",
    ),
    Case(
        "voc-xml-bomb",
        "an XML entity bomb",
        _xml_bomb,
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"a\.xml: not valid XML",
        "refused (defusedxml)",
    ),
    Case(
        "voc-11k-boxes",
        "a VOC file with 11,503 boxes, 3 repeated",
        _many_boxes,
        ["data", "check", "src", "--fast"],
        EXIT_OK,
        r"duplicate_box\s+(│\s+)?3",  # a table row in a terminal, tab-separated when piped
        "checked in about a second; 3 duplicate_box warnings",
    ),
    Case(
        "yolo-class-out-of-range",
        "YOLO class id outside names",
        _yolo("3 0.5 0.5 0.2 0.2\n"),
        ["data", "stats", "src/data.yaml"],
        EXIT_ERROR,
        r"a\.txt:1: class id 3 is not a whole number in names \(0\.\.0\)",
        "error with line",
    ),
    Case(
        "yolo-inf",
        "YOLO class id inf",
        _yolo("inf 0.5 0.5 0.2 0.2\n"),
        ["data", "stats", "src/data.yaml"],
        EXIT_ERROR,
        r"a\.txt:1: not numbers",
        "error with line",
    ),
    Case(
        "yolo-not-utf8",
        "a YOLO label file that is not UTF-8 (found by the fuzzer)",
        lambda d: _yolo("")(d) or put(d / "src" / "labels" / "a.txt", b"1 0.54\xe0\xcf 0.5\n"),
        ["data", "stats", "src/data.yaml"],
        EXIT_ERROR,
        r"a\.txt: not UTF-8 text \(byte 6\)",
        "error naming the file",
    ),
    Case(
        "yolo-huge-class-id",
        "a YOLO class id of 1e30 and no names (found by the fuzzer)",
        lambda d: (
            put(d / "src" / "images" / "a.jpg", jpeg()),
            put(d / "src" / "labels" / "a.txt", "1e30 0.5 0.5 0.2 0.2\n"),
        ),
        ["data", "stats", "src"],
        EXIT_ERROR,
        r"a\.txt:1: class id 1e30 is not a whole number in 0\.\.99999",
        "error with line",
    ),
    Case(
        "nan-box-to-coco",
        "a VOC box of NaN converted to COCO",
        lambda d: (
            put(d / "src" / "a.jpg", jpeg()),
            voc(d / "src" / "a.xml", "a.jpg", [["nan", 1, 5, 5], [1, 1, 9, 9]]),
        ),
        ["data", "convert", "src", "--out", "out", "--to", "coco"],
        EXIT_OK,
        r"warning: 1 boxes that are NaN.*not written",
        "box left out, warned; valid JSON",
    ),
    # ---- outputs
    Case(
        "convert-into-itself",
        "convert DIR DIR --to labelme --overwrite",
        lambda d: good_labelme(d / "src"),
        ["data", "convert", "src", "--out", "src", "--to", "labelme", "--overwrite"],
        EXIT_ERROR,
        r"output src is the source",
        "refused whatever the flags",
    ),
    Case(
        "convert-inside-source",
        "convert DIR DIR/out",
        lambda d: good_labelme(d / "src"),
        ["data", "convert", "src", "--out", "src/out", "--to", "voc"],
        EXIT_ERROR,
        r"output src/out lies inside the source",
        "refused",
        gone=["src/out"],
    ),
    Case(
        "pack-into-itself",
        "pack SHARDS SHARDS --overwrite",
        _shards_into_themselves,
        ["data", "pack", "src", "--out", "src", "--overwrite"],
        EXIT_ERROR,
        r"output src is the source",
        "refused",
    ),
    Case(
        "pack-over-users-file",
        "pack into a folder holding the user's data-00000-of-00001.tfrecord",
        _users_tfrecord,
        ["data", "pack", "data", "--out", "src", "--overwrite"],
        EXIT_ERROR,
        r"src/data-00000-of-00001\.tfrecord exists and was not written by a detforge pack",
        "refused; the file is kept",
    ),
    # ---- model files
    Case(
        "checkpoint-empty",
        "a 0-byte .pt",
        lambda d: put(d / "src" / "m.pt", b""),
        ["predict", "src/m.pt", "--source", "src"],
        EXIT_ERROR,
        r"m\.pt: empty file \(0 bytes\)",
        "error",
        gone=["runs"],
    ),
    Case(
        "checkpoint-pickled-code",
        "a .pt whose pickle runs a command",
        _pickled_code,
        ["predict", "src/m.pt", "--source", "src"],
        EXIT_ERROR,
        r"m\.pt: not a readable checkpoint",
        "refused (weights_only); nothing runs",
        gone=["pwned", "runs"],
    ),
    Case(
        "checkpoint-no-spec",
        "a checkpoint without its model spec",
        _ckpt(model=None),
        ["predict", "src/m.pt", "--source", "src"],
        EXIT_ERROR,
        r"m\.pt: the checkpoint's model spec",
        "error",
        slow=True,
    ),
    Case(
        "checkpoint-unknown-model",
        "a checkpoint naming an unknown model",
        _ckpt(model={"name": "yolo99", "classes": ["cat"], "options": {}}),
        ["predict", "src/m.pt", "--source", "src"],
        EXIT_ERROR,
        r"m\.pt: unknown model 'yolo99'",
        "error naming the file",
        slow=True,
    ),
    Case(
        "checkpoint-missing-tensors",
        "a checkpoint with weights missing",
        _ckpt(state_dict={"x": 1}),
        ["predict", "src/m.pt", "--source", "src"],
        EXIT_ERROR,
        r"m\.pt: its weights do not fit model 'ssdlite'",
        "error",
        slow=True,
    ),
    Case(
        "onnx-partial-metadata",
        "an ONNX file with detforge metadata lacking imgsz",
        lambda d: onnx_file(d / "src" / "m.onnx", {"task": "detect", "classes": '["cat"]'}),
        ["predict", "src/m.onnx", "--source", "src"],
        EXIT_ERROR,
        r"m\.onnx: detforge metadata lacks 'imgsz'",
        "error",
    ),
    Case(
        "detector-on-class-folders",
        "a detector evaluated on class folders",
        _detector_and_folders,
        ["eval", "src/m.pt", "--data", "src/folders"],
        EXIT_ERROR,
        r"is a detect model but .*folders holds a class per image",
        "refused",
        gone=["runs"],
        slow=True,
    ),
    Case(
        "classifier-on-boxes",
        "a classifier evaluated on detection data",
        _classifier_and_boxes,
        ["eval", "src/m.pt", "--data", "src/boxes"],
        EXIT_ERROR,
        r"is a classify model but .*boxes holds boxes",
        "refused",
        gone=["runs"],
        slow=True,
    ),
]


def markdown() -> str:
    rows = ["| case | bad input | command | exit | answer |", "|---|---|---|---|---|"]
    for c in CASES:
        cmd = "detforge " + " ".join(c.args)
        rows.append(f"| {c.name} | {c.what} | `{cmd}` | {c.code} | {c.answer} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown(), end="")
