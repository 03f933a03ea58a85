"""Classification datasets through the data tools: CSV and folders in, check, split (stratified
per class), stats (class imbalance), show and pack."""

from collections import Counter

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import detforge
from detforge.cli import app
from detforge.data import formats, read, write
from detforge.data.synth import classify_folders
from detforge.errors import FormatError, UnknownFormatError

from conftest import save_image


def _counts(ds) -> dict:
    return dict(Counter(ds.classes[s.category] for s in ds))


def test_csv_filename_label(tmp_path):
    for i, sub in enumerate(["cat", "cat", "dog"]):
        save_image(tmp_path / "photos" / sub / f"{i}.jpg", fmt="JPEG", seed=i, w=40 + i)
    (tmp_path / "labels.csv").write_text(
        "filename,label\n"
        "photos\\cat\\0.jpg,cat\n"  # a Windows path, as exported on Windows
        "photos/cat/1.jpg,cat\n"
        "photos/dog/2.jpg,dog\n"
        "photos/cat/1.jpg,cat\n"  # a repeated row is reported, not doubled
        "\n"
    )
    assert formats.detect(tmp_path) == "csv" and formats.detect(tmp_path / "labels.csv") == "csv"
    ds = read(tmp_path)
    assert ds.task == "classify" and ds.classes == ["cat", "dog"]
    assert _counts(ds) == {"cat": 2, "dog": 1}
    assert {s.path.name: s.width for s in ds} == {"0.jpg": 40, "1.jpg": 41, "2.jpg": 42}
    assert [i.kind for i in ds.issues] == ["duplicate_row"]
    # "class" works as the label column too
    (tmp_path / "labels.csv").write_text("filename,class\nphotos/dog/2.jpg,dog\n")
    assert read(tmp_path).classes == ["dog"]


@pytest.mark.parametrize(
    "body, match",
    [
        ("a.jpg,cat\na.jpg,dog\n", r"labels\.csv:3.*'cat' on line 2"),
        ("a.jpg,cat\nb.jpg,\n", r"labels\.csv:3.*without a label"),
        ("a.jpg,cat\n,dog\n", r"labels\.csv:3.*without a filename"),
    ],
)
def test_csv_classification_errors_name_the_line(tmp_path, body, match):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    (tmp_path / "labels.csv").write_text("filename,label\n" + body)
    with pytest.raises(FormatError, match=match):
        read(tmp_path)


def test_csv_missing_image_is_an_error_issue(tmp_path):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    (tmp_path / "labels.csv").write_text("filename,label\na.jpg,cat\ngone.jpg,dog\n")
    ds = read(tmp_path)
    assert len(ds) == 1
    assert [(i.kind, i.severity) for i in ds.issues] == [("missing_image", "error")]
    assert "gone.jpg" in ds.issues[0].message and "line 3" in ds.issues[0].message
    report = detforge.check(tmp_path)
    assert report.errors == 1 and not report.ok


def test_csv_folders_tfrecord_round_trip(tmp_path):
    src = classify_folders(tmp_path / "src", 15, size=(40, 40), sizes=True)
    as_csv = write(src, tmp_path / "csv", "csv")
    assert (as_csv / "labels.csv").is_file() and formats.detect(as_csv) == "csv"
    back = read(as_csv)
    assert back.task == "classify" and back.classes == src.classes
    by_size = lambda ds: sorted((s.width, s.height, ds.classes[s.category]) for s in ds)  # noqa: E731
    assert by_size(back) == by_size(src)
    again = read(write(back, tmp_path / "folders", "folders"))
    assert by_size(again) == by_size(src)
    with pytest.raises(UnknownFormatError, match="folders, csv, tfrecord"):
        write(again, tmp_path / "voc", "voc")  # it would hold images without their labels
    assert not (tmp_path / "voc").exists()
    index = detforge.pack(again, tmp_path / "shards", shard_size=4, progress=False)
    assert index["records"] == 15 and len(index["shards"]) == 4
    shards = read(tmp_path / "shards")
    assert shards.task == "classify" and by_size(shards) == by_size(src)


def test_split_is_stratified_per_class(tmp_path):
    data = tmp_path / "data"
    classify_folders(data, 30, size=(32, 32))
    for p in sorted((data / "triangle").iterdir())[3:]:  # make triangle rare: 3 of 23
        p.unlink()
    parts = detforge.split(data, tmp_path / "split", ratios=(0.6, 0.2, 0.2), seed=3)
    got = {k: _counts(v) for k, v in parts.items()}
    assert got["train"] == {"circle": 6, "square": 6, "triangle": 2}
    assert {k: sum(v.values()) for k, v in got.items()} == {"train": 14, "val": 5, "test": 4}
    for name in ("val", "test"):  # every class in every split where the counts allow it
        assert set(got[name]) >= {"circle", "square"}
    names = [{s.path.name for s in p} for p in parts.values()]
    assert not (names[0] & names[1]) and not (names[0] & names[2]) and not (names[1] & names[2])
    # written as class folders with a data.yaml that trains and reads back
    back = detforge.read(tmp_path / "split" / "data.yaml")
    assert back.task == "classify" and len(back) == 23
    assert (tmp_path / "split" / "train" / "triangle").is_dir()
    again = detforge.split(data, ratios=(0.6, 0.2, 0.2), seed=3)  # same seed, same split
    assert [{s.path.name for s in p} for p in again.values()] == names


def test_stats_and_cli_show_class_imbalance(tmp_path):
    data = tmp_path / "data"
    classify_folders(data, 30, size=(32, 32))
    for p in sorted((data / "square").iterdir())[2:]:
        p.unlink()
    s = detforge.stats(data)
    assert s["task"] == "classify" and s["images"] == 22 and s["boxes"] == 0
    assert {c: v["images"] for c, v in s["classes"].items()} == {
        "circle": 10,
        "square": 2,
        "triangle": 10,
    }
    assert s["imbalance"] == 5.0
    res = CliRunner().invoke(app, ["data", "stats", str(data)], catch_exceptions=False)
    assert "imbalance 5.0x" in res.stdout and "box sizes" not in res.stdout
    assert "square" in res.stdout and "9.1%" in res.stdout  # 2 of 22 images
    res = CliRunner().invoke(
        app, ["data", "split", str(data), "--out", str(tmp_path / "s")], catch_exceptions=False
    )
    assert "circle 7" in res.stdout and "boxes" not in res.stdout


def test_show_draws_the_class_of_each_image(tmp_path):
    data = tmp_path / "data"
    classify_folders(data, 6, size=(48, 32))
    png = detforge.show(data, tmp_path / "grid.png", n=6, cols=3)
    grid = np.asarray(Image.open(png))
    assert grid.shape == (2 * (256 + 16), 3 * 256, 3)  # each tile with a file-name strip
    # small images are scaled up to fill their cell: little background is left
    background = (np.abs(grid.astype(int) - 32).sum(-1) == 0).mean()
    assert background < 0.5
    png = detforge.show(data, tmp_path / "aug.png", n=4, augment=True, imgsz=64)
    assert Image.open(png).size == (4 * 256, 256 + 16)


def test_foreign_classification_records(tmp_path):
    """Records as other tools write them for classification: ``image/encoded`` with
    ``image/class/text``, or with ``image/class/label`` and a label map; no index.json."""
    from detforge.data.records import encode_example, frame, label_map_text

    def example(seed, **feats):
        jpeg = save_image(tmp_path / f"src{seed}.jpg", w=30, h=20, fmt="JPEG", seed=seed)
        return frame(encode_example({"image/encoded": [jpeg.read_bytes()], **feats}))

    text = tmp_path / "text"
    text.mkdir()
    (text / "train.record").write_bytes(
        example(0, **{"image/class/text": [b"dog"]}) + example(1, **{"image/class/text": [b"cat"]})
    )
    ds = read(text)
    assert ds.task == "classify" and ds.classes == ["cat", "dog"]
    assert [ds.classes[s.category] for s in ds] == ["dog", "cat"]
    assert (ds[0].width, ds[0].height) == (30, 20) and ds[0].load().shape == (20, 30, 3)

    ids = tmp_path / "ids"
    ids.mkdir()
    (ids / "label_map.pbtxt").write_text(label_map_text(["cat", "dog"]))  # ids 1, 2
    (ids / "train.record").write_bytes(
        example(2, **{"image/class/label": [2]}) + example(3, **{"image/class/label": [1]})
    )
    ds = read(ids)
    assert ds.task == "classify" and [ds.classes[s.category] for s in ds] == ["dog", "cat"]
    (ids / "label_map.pbtxt").unlink()
    with pytest.raises(FormatError, match=r"record 0.*label map"):
        read(ids)


def test_check_flags_one_image_in_two_class_folders(tmp_path):
    data = tmp_path / "data"
    classify_folders(data, 9, size=(32, 32))
    circle = sorted((data / "circle").iterdir())[0]
    (data / "square" / "copy.png").write_bytes(circle.read_bytes())
    (data / "circle" / "again.png").write_bytes(circle.read_bytes())
    report = detforge.check(data, progress=False)
    kinds = sorted((f.kind, f.severity) for f in report.findings)
    assert kinds == [("conflicting_labels", "error"), ("duplicate_image", "warning")]
    bad = next(f for f in report.findings if f.kind == "conflicting_labels")
    assert "'circle'" in bad.message and "'square'" in bad.message and not report.ok
