"""One sample <-> one TensorFlow Object Detection API ``tf.train.Example``.

JPEG and PNG bytes are stored as they are; other formats, and images whose EXIF orientation
rotates them (TensorFlow's decoders ignore EXIF), are re-encoded once.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detforge.data import image as imageio
from detforge.data.dataset import Sample
from detforge.data.records import example_chunks
from detforge.errors import FormatError


def sniff(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "other"


def _exif_orientation(data: bytes, kind: str) -> int:
    """EXIF orientation read straight from the TIFF block of a JPEG (APP1) or PNG (eXIf), without
    decoding anything; 1 when absent or unreadable."""
    marker = b"Exif\x00\x00" if kind == "jpeg" else b"eXIf"
    pos = data.find(marker, 0, 1 << 16)
    if pos < 0:
        return 1
    tiff = pos + (6 if kind == "jpeg" else 4)  # "Exif\0\0" or the PNG chunk type, then TIFF
    order = data[tiff : tiff + 2]
    if order not in (b"II", b"MM"):
        return 1
    e = "<" if order == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(e + "I", data, tiff + 4)
        (count,) = struct.unpack_from(e + "H", data, tiff + ifd)
        for k in range(min(count, 512)):
            tag, typ, _, value = struct.unpack_from(e + "HHI4s", data, tiff + ifd + 2 + 12 * k)
            if tag == 0x0112:
                v = struct.unpack_from(e + "H", value)[0] if typ == 3 else 1
                return v if 1 <= v <= 8 else 1
    except struct.error:
        return 1
    return 1


def record_image(s: Sample) -> tuple[bytes, str, bool]:
    """``(bytes, format, reencoded)`` for a sample's record: JPEG/PNG kept byte for byte."""
    data = s.read_bytes()
    kind = sniff(data)
    if kind in ("jpeg", "png") and _exif_orientation(data, kind) == 1:
        return data, kind, False
    pixels = imageio.decode(data, s.path)
    buf = io.BytesIO()
    if kind == "jpeg":
        Image.fromarray(pixels).save(buf, "JPEG", quality=95)
    else:
        kind = "png"
        Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue(), kind, True


def to_example(s: Sample, classes: list[str], data: bytes, fmt: str, source_id: str) -> list[bytes]:
    """A TF OD API ``tf.train.Example`` (normalized boxes, 1-based class ids), in chunks."""
    w, h = float(s.width), float(s.height)
    b = s.boxes.astype(np.float64)
    feats = {
        "image/encoded": [data],
        "image/format": fmt,
        "image/filename": s.name,
        "image/source_id": source_id,
        "image/height": np.array([s.height], np.int64),
        "image/width": np.array([s.width], np.int64),
        "image/object/bbox/xmin": (b[:, 0] / w).astype(np.float32),
        "image/object/bbox/ymin": (b[:, 1] / h).astype(np.float32),
        "image/object/bbox/xmax": (b[:, 2] / w).astype(np.float32),
        "image/object/bbox/ymax": (b[:, 3] / h).astype(np.float32),
        "image/object/class/text": [classes[int(i)] for i in s.labels],
        "image/object/class/label": s.labels.astype(np.int64) + 1,
        "image/object/difficult": s.difficult.astype(np.int64),
        "image/object/truncated": s.truncated.astype(np.int64),
        "image/object/is_crowd": s.iscrowd.astype(np.int64),
    }
    if s.category is not None:
        feats["image/class/label"] = np.array([s.category + 1], np.int64)  # label map id
        feats["image/class/text"] = classes[s.category]
    return example_chunks(feats)


@dataclass
class Parsed:
    """The fields of one record, boxes already in absolute-pixel xyxy."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    class_ids: np.ndarray  # 1-based ids as written (label map ids), -1 where absent
    class_text: list[str]
    difficult: np.ndarray
    truncated: np.ndarray
    iscrowd: np.ndarray
    category_id: int | None
    category_text: str | None
    image: bytes | None


def parse_example(ex: dict, where=None, record=None) -> Parsed:
    def ints(key, n=None):
        v = ex.get(key)
        arr = np.asarray(v if isinstance(v, np.ndarray) else [], np.int64)
        return arr if n is None or len(arr) == n else np.zeros(n, np.int64)

    def text(key):
        v = ex.get(key)
        return [t.decode("utf-8", "replace") for t in v] if isinstance(v, list) else []

    def floats(key):
        v = ex.get(key, np.zeros(0))
        if not isinstance(v, np.ndarray):
            raise FormatError(where, f"{key} holds bytes, not numbers", record=record)
        return v.astype(np.float64)

    enc = ex.get("image/encoded")
    enc = enc if isinstance(enc, list) and enc else [None]
    h, w = ints("image/height"), ints("image/width")
    if not len(h) or not len(w) or h[0] <= 0 or w[0] <= 0 or max(h[0], w[0]) > 2**31:
        if enc[0] is None:
            raise FormatError(where, "record has no image/height, image/width", record=record)
        ww, hh, _ = imageio.info(enc[0], where)
        w, h = np.array([ww]), np.array([hh])
    w, h = int(w[0]), int(h[0])
    coords = [floats(f"image/object/bbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
    n = len(coords[0])
    if any(len(c) != n for c in coords):
        raise FormatError(where, "bbox xmin/ymin/xmax/ymax have different lengths", record=record)
    boxes = (
        (np.stack(coords, 1) * [w, h, w, h]).astype(np.float32)
        if n
        else np.zeros((0, 4), np.float32)
    )
    ids = ints("image/object/class/label")
    texts = text("image/object/class/text")
    if len(ids) != n and len(texts) != n:
        raise FormatError(
            where,
            f"{n} boxes but {len(ids)} class labels and {len(texts)} class texts",
            "each box needs image/object/class/label or /text",
            record=record,
        )
    cid = ints("image/class/label")
    ctext = text("image/class/text")
    fname = (text("image/filename") or text("image/source_id") or [""])[0]
    return Parsed(
        fname,
        w,
        h,
        boxes,
        ids if len(ids) == n else np.full(n, -1, np.int64),
        texts,
        ints("image/object/difficult", n).astype(bool),
        ints("image/object/truncated", n).astype(bool),
        ints("image/object/is_crowd", n).astype(bool),
        int(cid[0]) if len(cid) else None,
        ctext[0] if ctext else None,
        enc[0],
    )
