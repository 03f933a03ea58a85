"""TFRecord files without TensorFlow: record framing, ``tf.train.Example`` and label maps.

Framing (per record): uint64 length, masked CRC32C of the length, data, masked CRC32C of the
data, all little-endian. ``tf.train.Example`` is encoded with the protobuf wire format by hand;
it is a three-level message (Example -> Features -> map<string, Feature>) and a feature is a
list of bytes, float32 or int64 values.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator
from pathlib import Path

import google_crc32c
import numpy as np

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


def iter_records(path: Path, verify: bool = True, select=None) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(index, offset, data)`` for each record of a TFRecord file.

    Records where ``select(index)`` is false are skipped cheaply (a seek: no read, no data CRC)
    and not yielded. CRCs are checked when ``verify``.
    """
    path = Path(path)
    with path.open("rb") as f:
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
                    "corrupt record: length CRC mismatch",
                    "the file is damaged; re-create it",
                    record=i,
                )
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
    with Path(path).open("rb") as f:
        f.seek(offset)
        head = f.read(12)
        (n,) = _U64.unpack_from(head)
        data = f.read(n)
        tail = f.read(4)
    if len(data) < n or _U32.unpack(tail)[0] != masked_crc(data):
        raise FormatError(path, f"corrupt record at byte {offset}", "re-create the file")
    return data


# ---- protobuf wire format -------------------------------------------------------------------


def _varint(v: int) -> bytes:
    if 0 <= v < 16384:
        return _VARINTS[v]
    return _varint_slow(v)


def _varint_slow(v: int) -> bytes:
    v &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


_VARINTS = [_varint_slow(v) for v in range(16384)]


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _msg(field: int, parts: list[bytes], n: int) -> tuple[list[bytes], int]:
    """A length-delimited field around ``parts`` (``n`` bytes in all). Parts stay a list so big
    payloads (encoded images) are never copied; returns the new parts and their length."""
    head = _varint(field << 3 | 2) + _varint(n)
    return [head, *parts], n + len(head)


def _small(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _feature(values) -> tuple[list[bytes], int]:
    if isinstance(values, (bytes, str)):
        values = [values]
    if (
        isinstance(values, (list, tuple))
        and values
        and all(isinstance(v, (int, float, np.number)) for v in values)
    ):  # plain numbers: never bytes(n), which would be n zero bytes
        values = np.asarray(values)
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        b = _small(2, _small(1, np.asarray(values, "<f4").tobytes()))
        return [b], len(b)
    if isinstance(values, np.ndarray) and values.dtype.kind in "iub":
        b = _small(3, _small(1, b"".join(_varint(int(v)) for v in values)))
        return [b], len(b)
    parts: list[bytes] = []
    n = 0
    for v in values:
        v = v.encode() if isinstance(v, str) else bytes(v)
        head = _varint(1 << 3 | 2) + _varint(len(v))
        parts += (head, v)
        n += len(head) + len(v)
    return _msg(1, parts, n)


def example_chunks(features: dict) -> list[bytes]:
    """A serialized ``tf.train.Example`` as a list of byte strings (see :func:`encode_example`)."""
    entries: list[bytes] = []
    total = 0
    for k in sorted(features):
        key = _small(1, k.encode())
        fparts, fn = _msg(2, *_feature(features[k]))
        parts, n = _msg(1, [key, *fparts], len(key) + fn)
        entries += parts
        total += n
    return _coalesce(_msg(1, entries, total)[0])


def _coalesce(chunks: list[bytes], big: int = 4096) -> list[bytes]:
    """Join runs of small chunks (headers, boxes) so a record is a few pieces: cheaper to CRC
    and write, while big payloads stay uncopied."""
    out: list[bytes] = []
    run: list[bytes] = []
    for c in chunks:
        if len(c) >= big:
            if run:
                out.append(b"".join(run))
                run = []
            out.append(c)
        else:
            run.append(c)
    if run:
        out.append(b"".join(run))
    return out


def encode_example(features: dict) -> bytes:
    """Serialize a ``tf.train.Example``. Values: bytes/str (or lists of them), numpy arrays or
    lists of numbers (float -> FloatList, int/bool -> Int64List). Keys are written in sorted
    order."""
    return b"".join(example_chunks(features))


def _fields(buf: bytes, start: int = 0, end: int | None = None):
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _read_varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == 2:
            n, pos = _read_varint(buf, pos)
            yield field, wt, pos, pos + n
            pos += n
        elif wt == 0:
            v, pos = _read_varint(buf, pos)
            yield field, wt, v, None
        elif wt == 5:
            yield field, wt, pos, pos + 4
            pos += 4
        elif wt == 1:
            yield field, wt, pos, pos + 8
            pos += 8
        else:
            raise ValueError(f"unsupported wire type {wt}")


def _decode_feature(buf: bytes, s: int, e: int):
    for kind, _, ks, ke in _fields(buf, s, e):
        if kind == 1:  # BytesList
            return [buf[a:b] for _, _, a, b in _fields(buf, ks, ke)]
        if kind == 2:  # FloatList, packed or not
            parts = []
            for _, _, a, b in _fields(buf, ks, ke):
                parts.append(np.frombuffer(buf[a:b], "<f4"))
            return np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if kind == 3:  # Int64List, packed or not
            vals = []
            for _, wt, a, b in _fields(buf, ks, ke):
                if wt == 0:
                    vals.append(a)
                else:
                    p = a
                    while p < b:
                        v, p = _read_varint(buf, p)
                        vals.append(v)
            arr = (
                np.array(vals, dtype=np.uint64).astype(np.int64) if vals else np.zeros(0, np.int64)
            )
            return arr
    return []


def decode_example(data: bytes) -> dict:
    """Parse a serialized ``tf.train.Example`` into ``{key: list[bytes] | ndarray}``."""
    out = {}
    for f1, _, s1, e1 in _fields(data):
        if f1 != 1:
            continue
        for f2, _, s2, e2 in _fields(data, s1, e1):
            if f2 != 1:
                continue
            key, val = None, []
            for f3, _, s3, e3 in _fields(data, s2, e2):
                if f3 == 1:
                    key = data[s3:e3].decode("utf-8")
                elif f3 == 2:
                    val = _decode_feature(data, s3, e3)
            if key is not None:
                out[key] = val
    return out


def read_example_at(path: Path, offset: int) -> dict:
    return decode_example(read_record_at(path, offset))


# ---- label_map.pbtxt -------------------------------------------------------------------------

_TOKEN = re.compile(
    r'\s*(?:#[^\n]*\n?|(\{|\}|:)|"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|([^\s{}:#]+))'
)


_UNESCAPE = re.compile(r"\\(.)")


def read_label_map(path: Path) -> dict[int, str]:
    """Parse a TF OD API ``label_map.pbtxt`` -> ``{id: name}`` (``display_name`` when given)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    items, cur, key, depth = {}, None, None, 0
    pos = 0
    for m in _TOKEN.finditer(text):
        pos = m.end()
        punct, dq, sq, word = m.groups()
        quoted = dq if dq is not None else sq
        tok = punct or (_UNESCAPE.sub(r"\1", quoted) if quoted is not None else word)
        if tok is None:
            continue
        if punct == "{":
            depth += 1
            if depth == 1:
                cur = {}
            key = None
        elif punct == "}":
            depth -= 1
            if depth == 0 and cur is not None:
                if "id" not in cur or not ("name" in cur or "display_name" in cur):
                    raise FormatError(path, f"item without id or name: {cur}")
                items[int(cur["id"])] = cur.get("display_name") or cur["name"]
                cur = None
        elif punct == ":":
            continue
        elif depth == 1 and key is None:
            key = tok
        elif depth == 1:
            cur[key] = tok
            key = None
    if text[pos:].strip():
        raise FormatError(path, f"cannot parse near {text[pos : pos + 30]!r}")
    if depth != 0:
        raise FormatError(path, "unbalanced braces")
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
