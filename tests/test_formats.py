"""Every format round-trips: boxes within 1e-3 px, same classes, same negatives."""

import pytest

import detforge
from detforge.data import formats, read, write
from detforge.data.formats import folders
from detforge.data.synth import generate
from detforge.errors import DestinationError, UnknownFormatError

from conftest import assert_same

DETECTION = ["labelme", "voc", "coco", "yolo", "csv", "tfrecord"]


@pytest.mark.parametrize("fmt", DETECTION)
def test_round_trip(synth_ds, tmp_path, fmt):
    assert synth_ds.num_negatives > 0 and synth_ds.num_boxes > 20
    # fractional coordinates must survive too
    for s in synth_ds.samples[:5]:
        s.boxes = s.boxes + 0.3721
    dst = write(synth_ds, tmp_path / fmt, fmt)
    assert formats.detect(dst) == fmt
    back = read(dst)
    assert back.format == fmt
    assert back.classes == synth_ds.classes
    assert_same(synth_ds, back)
    # and once more through another format, to catch edge-only conversions
    again = read(write(back, tmp_path / f"{fmt}-voc", "voc"))
    assert_same(synth_ds, again)


@pytest.mark.parametrize("fmt", ["labelme", "voc", "coco", "csv"])
def test_no_images_points_at_originals(synth_ds, tmp_path, fmt):
    dst = write(synth_ds, tmp_path / fmt, fmt, images="none")
    assert not any(p.suffix == ".jpg" for p in dst.rglob("*"))
    assert_same(synth_ds, read(dst))


def test_link_mode_hard_links(synth_ds, tmp_path):
    dst = write(synth_ds, tmp_path / "y", "yolo", images="link")
    img = next((dst / "images").iterdir())
    assert img.stat().st_nlink >= 2
    assert_same(synth_ds, read(dst))


def test_refuses_non_empty_destination(synth_ds, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "mine.txt").write_text("precious")
    with pytest.raises(DestinationError, match="--overwrite"):
        write(synth_ds, dst, "voc")
    write(synth_ds, dst, "voc", overwrite=True)
    assert (dst / "mine.txt").read_text() == "precious"


def test_classification_folders_round_trip(tmp_path):
    ds = generate(tmp_path / "g", 12, task="classify", size=(64, 64))
    dst = write(ds, tmp_path / "cls", "folders")
    assert formats.detect(dst) == "folders"
    back = read(dst)
    assert back.task == "classify" and back.classes == ds.classes
    assert sorted(back[i].category for i in range(len(back))) == sorted(s.category for s in ds)
    # via shards too
    packed = read(write(back, tmp_path / "rec", "tfrecord"))
    assert packed.task == "classify"
    assert sorted(s.category for s in packed) == sorted(s.category for s in ds)


def test_folders_errors(tmp_path):
    (tmp_path / "a").mkdir()
    ds = folders.read(tmp_path)
    assert [i.kind for i in ds.issues] == ["empty_class"]


def test_unknown_format_suggests(tmp_path):
    with pytest.raises(UnknownFormatError, match="yolo"):
        formats.get("yolov")
    with pytest.raises(UnknownFormatError, match="does not exist"):
        formats.detect(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnknownFormatError, match="--format"):
        formats.detect(tmp_path / "empty")


def test_convert_api_and_data_yaml(synth_ds, tmp_path):
    src = write(synth_ds, tmp_path / "coco", "coco")
    dst = detforge.convert(src, tmp_path / "y", "yolo")
    assert_same(synth_ds, read(dst / "data.yaml"))
    assert_same(synth_ds, read(dst))


def test_reading_is_lazy(synth_ds, tmp_path, monkeypatch):
    """Building a Dataset reads annotations and image headers only, never pixels."""
    from detforge.data import image as imageio

    dst = write(synth_ds, tmp_path / "v", "yolo")

    def boom(*a, **k):
        raise AssertionError("pixels decoded while reading a dataset")

    monkeypatch.setattr(imageio, "decode", boom)
    ds = read(dst)
    assert len(ds) == len(synth_ds)
