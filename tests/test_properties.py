"""Property tests (hypothesis): box conversions invert each other, and every format reads back
what it wrote, for any boxes, class names and negatives."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from detforge.boxes import clip, from_xyxy, iou, to_xyxy
from detforge.data import read, write
from detforge.data.check import duplicate_boxes
from detforge.data.dataset import Dataset, Sample
from detforge.data.image import FileImage

from conftest import assert_same

coord = st.floats(0, 4000, allow_nan=False, width=32)
size = st.floats(0.5, 2000, allow_nan=False, width=32)


@st.composite
def xyxy(draw, n=st.integers(0, 12)):
    k = draw(n)
    x, y = (
        draw(st.lists(coord, min_size=k, max_size=k)),
        draw(st.lists(coord, min_size=k, max_size=k)),
    )
    w, h = (
        draw(st.lists(size, min_size=k, max_size=k)),
        draw(st.lists(size, min_size=k, max_size=k)),
    )
    b = np.array([x, y, w, h], np.float64).T.reshape(-1, 4)
    b[:, 2:] += b[:, :2]
    return b


@given(xyxy(), st.sampled_from(["xyxy", "xywh", "cxcywh"]))
def test_box_formats_round_trip(b, fmt):
    back = to_xyxy(from_xyxy(b, fmt), fmt)
    np.testing.assert_allclose(back, b.astype(np.float32), rtol=1e-5, atol=1e-3)


@given(xyxy(), st.integers(1, 5000), st.integers(1, 5000), st.sampled_from(["xyxy", "cxcywh"]))
def test_normalized_round_trip_and_clip(b, w, h, fmt):
    n = from_xyxy(b, fmt, normalized=True, size=(w, h))
    np.testing.assert_allclose(
        to_xyxy(n, fmt, normalized=True, size=(w, h)), b, rtol=1e-4, atol=5e-2
    )
    c = clip(b, w, h)
    assert (c[:, 0::2] >= 0).all() and (c[:, 0::2] <= w).all() and (c[:, 1::2] <= h).all()
    np.testing.assert_array_equal(clip(c, w, h), c)  # idempotent


@given(xyxy(st.integers(1, 10)))
def test_iou_with_itself_is_one_and_symmetric(b):
    b = b.astype(np.float32)
    m = iou(b, b)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-4)
    np.testing.assert_allclose(m, m.T, atol=1e-6)


@given(xyxy(st.integers(0, 30)), st.lists(st.integers(0, 2), min_size=30, max_size=30), st.data())
def test_duplicate_boxes_matches_the_quadratic_definition(b, labels, data):
    if len(b):  # plant near and exact repeats
        k = data.draw(st.lists(st.integers(0, len(b) - 1), max_size=4))
        b = np.vstack([b, b[k] + data.draw(st.sampled_from([0.0, 0.01]))])
    labels = np.array((labels * 2)[: len(b)], np.int64)
    m = np.triu(iou(b.astype(np.float32), b.astype(np.float32)) * (labels[:, None] == labels), 1)
    expected = [int(k) for k in np.flatnonzero((m >= 0.95).any(0))]
    assert duplicate_boxes(b.astype(np.float32), labels) == expected


NAME = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp", "Zs"), blacklist_characters="\\"),
    min_size=1,
    max_size=12,
)


@st.composite
def datasets(draw, folder: Path):
    classes = sorted(set(draw(st.lists(NAME, min_size=1, max_size=4))))
    samples = []
    for i in range(draw(st.integers(1, 4))):
        w, h = draw(st.integers(16, 96)), draw(st.integers(16, 96))
        path = folder / f"img{i}.png"
        Image.new("RGB", (w, h), (i * 40, 80, 120)).save(path)
        k = draw(st.integers(0, 4))  # 0 boxes: a negative
        x1 = np.array(draw(st.lists(st.integers(0, w - 4), min_size=k, max_size=k)), np.float32)
        y1 = np.array(draw(st.lists(st.integers(0, h - 4), min_size=k, max_size=k)), np.float32)
        bw = np.array(draw(st.lists(st.integers(2, 40), min_size=k, max_size=k)), np.float32)
        bh = np.array(draw(st.lists(st.integers(2, 40), min_size=k, max_size=k)), np.float32)
        boxes = np.stack([x1, y1, np.minimum(x1 + bw, w), np.minimum(y1 + bh, h)], 1).reshape(-1, 4)
        labels = draw(st.lists(st.integers(0, len(classes) - 1), min_size=k, max_size=k))
        samples.append(Sample(FileImage(path), w, h, boxes, labels))
    used = sorted({classes[j] for s in samples for j in s.labels})
    ds = Dataset(classes, samples, folder)
    return ds.with_classes(classes), used


@pytest.mark.parametrize("fmt", ["labelme", "voc", "coco", "yolo", "csv", "tfrecord"])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_format_reads_back_what_it_wrote(fmt, data):
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        ds, used = data.draw(datasets(src))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing may be dropped or refused
            out = write(ds, Path(tmp) / "out", fmt)
        back = read(out, fmt)
        if fmt in ("voc", "labelme", "csv"):  # these keep only the classes boxes use
            assert set(back.classes) >= set(used)
        else:
            assert back.classes == ds.classes
        assert_same(ds, back, tol=2e-3 * 96)
