"""TFRecord files without TensorFlow: record framing, ``tf.train.Example`` and label maps.

Framing (per record): uint64 length, masked CRC32C of the length, data, masked CRC32C of the
data, all little-endian (our code, as TensorFlow's ``record_writer``). ``tf.train.Example`` and
``label_map.pbtxt`` go through the protobuf runtime with classes generated from TensorFlow's
``.proto`` files (:mod:`detforge.data.tfproto`).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np
from google.protobuf import message as _pbmessage
from google.protobuf import text_format

from detforge.data.tfproto import example_pb2, string_int_label_map_pb2
from detforge.errors import FormatError

_MASK_DELTA = 0xA282EAD8
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    return _mask(google_crc32c.value(data))


def frame_chunks(chunks: list[bytes]) -> list[bytes]:
    """One TFRecord around ``chunks`` (the record's data in pieces, never concatenated)."""
    head = _U64.pack(sum(len(c) for c in chunks))
    crc = 0
    for c in chunks:
        crc = google_crc32c.extend(crc, c)
    return [head + _U32.pack(masked_crc(head)), *chunks, _U32.pack(_mask(crc))]


def frame(data: bytes) -> bytes:
    """One TFRecord: header, CRCs and ``data``."""
    return b"".join(frame_chunks([data]))


def _check_length(path, n: int, offset: int, size: int, record: int) -> None:
    """A length field larger than the bytes left in the file: corrupt, never read."""
    if offset + 12 + n + 4 > size:
        raise FormatError(
            path,
            f"truncated record: its length field says {n} bytes, "
            f"{max(0, size - offset - 12)} bytes follow (file cut short, or damaged)",
            "re-create the file; a killed writer leaves such files",
            record=record,
        )


def iter_records(path: Path, verify: bool = True, select=None) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(index, offset, data)`` for each record of a TFRecord file.

    Records where ``select(index)`` is false are skipped cheaply (a seek: no read, no data CRC)
    and not yielded. CRCs are checked when ``verify``; a length past the end of the file is an
    error either way (it is never used to allocate).
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as e:
        raise FormatError(path, f"cannot open: {e.strerror}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if f.read(2) == b"\x1f\x8b":
            raise FormatError(
                path,
                "GZIP-compressed TFRecord file",
                f"decompress it first: gunzip -c {path.name} > {path.stem}.record",
            )
        f.seek(0)
        i, offset = 0, 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise FormatError(
                    path,
                    "truncated record header (file cut short?)",
                    "re-create the file; a killed writer leaves such files",
                    record=i,
                )
            (n,) = _U64.unpack_from(head)
            if verify and _U32.unpack_from(head, 8)[0] != masked_crc(head[:8]):
                raise FormatError(
                    path,
                    "corrupt record: length CRC mismatch (not a TFRecord file, or damaged)",
                    "re-create the file",
                    record=i,
                )
            _check_length(path, n, offset, size, i)
            if select is not None and not select(i):
                f.seek(n + 4, 1)
            else:
                data = f.read(n)
                tail = f.read(4)
                if len(data) < n or len(tail) < 4:
                    raise FormatError(
                        path, "truncated record (file cut short?)", "re-create the file", record=i
                    )
                if verify and _U32.unpack(tail)[0] != masked_crc(data):
                    raise FormatError(
                        path,
                        "corrupt record: data CRC mismatch",
                        "the file is damaged; re-create it",
                        record=i,
                    )
                yield i, offset, data
            offset += 12 + n + 4
            i += 1


def read_record_at(path: Path, offset: int) -> bytes:
    try:
        with Path(path).open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            f.seek(offset)
            head = f.read(12)
            n = _U64.unpack_from(head)[0] if len(head) == 12 else 0
            if len(head) == 12:
                _check_length(path, n, offset, size, None)
            data = f.read(n)
            tail = f.read(4)
    except OSError as e:
        raise FormatError(path, f"cannot read record at byte {offset}: {e.strerror}") from None
    if len(head) < 12 or len(tail) < 4 or _U32.unpack(tail)[0] != masked_crc(data):
        raise FormatError(
            path, f"corrupt record at byte {offset} (file changed?)", "re-create the file"
        )
    return data


# ---- tf.train.Example and label maps: the protobuf runtime -----------------------------------


def _set_feature(feat, key: str, values) -> None:
    if isinstance(values, (bytes, str)):
        values = [values]
    if (
        isinstance(values, (list, tuple))
        and values
        and all(isinstance(v, (int, float, np.number)) for v in values)
    ):
        values = np.asarray(values)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        feat.float_list.SetInParent()
        feat.float_list.value.extend(values.astype(np.float32).ravel().tolist())
    elif isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        feat.int64_list.SetInParent()
        feat.int64_list.value.extend(values.astype(np.int64).ravel().tolist())
    else:
        feat.bytes_list.SetInParent()
        try:
            feat.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
        except TypeError as e:
            raise ValueError(f"feature {key!r}: {e}") from None


def encode_example(features: dict) -> bytes:
    """Serialize a ``tf.train.Example``. Values: bytes/str (or lists of them), numpy arrays or
    lists of numbers (float -> FloatList, int/bool -> Int64List). Deterministic: map keys are
    written sorted, so the same features always give the same bytes."""
    ex = example_pb2.Example()
    for k, v in features.items():
        _set_feature(ex.features.feature[k], k, v)
    return ex.SerializeToString(deterministic=True)


def example_chunks(features: dict) -> list[bytes]:
    """:func:`encode_example` as a list of byte strings (what :func:`frame_chunks` takes)."""
    return [encode_example(features)]


def decode_example(data: bytes, where=None, record: int | None = None) -> dict:
    """Parse a serialized ``tf.train.Example`` into ``{key: list[bytes] | ndarray}``; bytes
    that are not one raise :class:`FormatError` naming ``where`` and ``record``."""
    ex = example_pb2.Example()
    try:
        ex.ParseFromString(data)
    except (_pbmessage.DecodeError, ValueError, RecursionError) as e:
        raise FormatError(
            where,
            f"record is not a tf.train.Example ({e or 'undecodable protobuf'})",
            "the file holds other data, or is damaged; re-create it",
            record=record,
        ) from None
    out = {}
    for key, feat in ex.features.feature.items():
        kind = feat.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feat.bytes_list.value)
        elif kind == "float_list":
            out[key] = np.array(feat.float_list.value, np.float32)
        elif kind == "int64_list":
            out[key] = np.array(feat.int64_list.value, np.int64)
        else:
            out[key] = []
    return out


def read_example_at(path: Path, offset: int) -> dict:
    return decode_example(read_record_at(path, offset), path)


def read_label_map(path: Path) -> dict[int, str]:
    """Parse a TF OD API ``label_map.pbtxt`` -> ``{id: name}`` (``display_name`` when given),
    with protobuf's text format. Id 0 is the background (skipped); ids must be unique."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text: {e}", "save it as UTF-8") from None
    except OSError as e:
        raise FormatError(path, f"cannot read the label map: {e.strerror}") from None
    msg = string_int_label_map_pb2.StringIntLabelMap()
    try:
        text_format.Parse(text, msg, allow_unknown_field=True)
    except text_format.ParseError as e:
        line = e.GetLine() if hasattr(e, "GetLine") else None
        detail = str(e).split(" : ", 1)[-1]
        raise FormatError(
            path,
            f"not a label map: {detail}",
            "each entry is item {{ id: N name: 'x' }}",
            line=line,
        ) from None
    items: dict[int, str] = {}
    for k, item in enumerate(msg.item):
        name = item.display_name or item.name
        if not item.HasField("id") or not name:
            raise FormatError(path, f"item {k} has no id or no name", "give each item both")
        if item.id < 0 or (item.id == 0 and name != "background"):
            raise FormatError(
                path,
                f"item {k} ({name!r}) has id {item.id}",
                "ids start at 1; 0 is reserved for the background",
            )
        if item.id in items:
            raise FormatError(
                path,
                f"id {item.id} is used twice ({items[item.id]!r} and {name!r})",
                "give every class its own id",
            )
        if item.id:
            items[item.id] = name
    if not items:
        raise FormatError(path, "no 'item { id: N name: \"...\" }' entries")
    return items


def label_map_text(classes: list[str]) -> str:
    """``label_map.pbtxt`` text with ids 1..K (0 is the background in the TF OD API)."""

    def quote(name: str) -> str:
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'

    return "".join(
        f"item {{\n  id: {i}\n  name: {quote(c)}\n}}\n\n" for i, c in enumerate(classes, 1)
    )
