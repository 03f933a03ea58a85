"""TFRecord framing, tf.train.Example encoding and label maps, without TensorFlow."""

from pathlib import Path

import numpy as np
import pytest

from detforge.data import read
from detforge.data.records import (
    decode_example,
    encode_example,
    frame,
    iter_records,
    label_map_text,
    masked_crc,
    read_label_map,
)
from detforge.errors import FormatError

FIXTURES = Path(__file__).parent / "fixtures"


def test_masked_crc_matches_tensorflow():
    assert masked_crc(b"") == 0xA282EAD8  # crc32c("") == 0, plus the mask delta
    # the bytes tf.io.TFRecordWriter (TensorFlow 2.21) wrote for the record b"hello"
    assert frame(b"hello").hex() == "0500000000000000eab2043e68656c6c6fbb1f1c19"


def test_example_round_trip_with_every_kind():
    feats = {
        "image/encoded": [b"\x00\xffbytes"],
        "image/filename": "tête.jpg",
        "image/object/class/text": ["a", "b"],
        "f": np.array([0.25, -1.5, 3e9], np.float32),
        "i": np.array([0, 1, -1, 2**40], np.int64),
        "empty": np.zeros(0, np.float32),
        "plain_ints": [3, -2],  # lists of Python numbers, as users write them
        "plain_floats": [0.5, 2],
    }
    out = decode_example(encode_example(feats))
    assert out["image/encoded"] == [b"\x00\xffbytes"]
    assert out["image/filename"] == ["tête.jpg".encode()]
    assert out["image/object/class/text"] == [b"a", b"b"]
    np.testing.assert_array_equal(out["f"], feats["f"])
    np.testing.assert_array_equal(out["i"], feats["i"])
    assert len(out["empty"]) == 0
    assert out["plain_ints"].tolist() == [3, -2]
    assert out["plain_floats"].tolist() == [0.5, 2.0]


def _varint(v: int) -> bytes:
    out = bytearray()
    while v > 0x7F:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    return bytes(out + bytes([v]))


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def test_unpacked_repeated_fields_decode():
    """proto2 writers may emit repeated scalars unpacked; both encodings are valid."""
    ints = b"".join(_varint(1 << 3 | 0) + _varint(v) for v in (3, 4))
    floats = b"".join(_varint(1 << 3 | 5) + np.float32(v).tobytes() for v in (0.5, 2.0))
    entries = _field(1, _field(1, b"i") + _field(2, _field(3, ints))) + _field(
        1, _field(1, b"f") + _field(2, _field(2, floats))
    )
    out = decode_example(_field(1, entries))
    assert out["i"].tolist() == [3, 4] and out["f"].tolist() == [0.5, 2.0]


def test_example_bytes_match_tensorflow_encoding():
    """Our Example bytes for a known feature set, as tf.train.Example.SerializeToString gives
    them (map entries sorted; packed int64 and float lists)."""
    data = encode_example({"b": [b"xy"], "a": np.array([1, 300], np.int64)})
    a = _field(1, _field(1, b"a") + _field(2, _field(3, _field(1, b"\x01\xac\x02"))))
    b = _field(1, _field(1, b"b") + _field(2, _field(1, _field(1, b"xy"))))
    assert data == _field(1, a + b)


def test_garbage_payload_is_a_format_error_naming_the_record(tmp_path):
    p = tmp_path / "g.record"
    p.write_bytes(
        frame(encode_example({"image/height": [4], "image/width": [4]}))
        + frame(b"\x0f\xff\xff garbage")
    )
    with pytest.raises(FormatError, match=r"g\.record \(record 1\).*not a tf.train.Example"):
        read(p, "tfrecord")


def test_huge_length_field_with_valid_crc_is_refused_without_allocating(tmp_path):
    import struct

    p = tmp_path / "big.record"
    head = struct.pack("<Q", 2**60)
    p.write_bytes(head + struct.pack("<I", masked_crc(head)) + b"tiny")
    with pytest.raises(
        FormatError, match=r"record 0.*truncated record: its length field says 1152921504606846976"
    ):
        list(iter_records(p))


def test_corrupt_and_truncated_records_name_file_and_record(tmp_path):
    p = tmp_path / "x.tfrecord"
    p.write_bytes(frame(b"one") + frame(b"two") + frame(b"three"))
    assert [d for _, _, d in iter_records(p)] == [b"one", b"two", b"three"]
    raw = bytearray(p.read_bytes())
    raw[len(frame(b"one")) + 12] ^= 0xFF  # flip a data byte of record 1
    p.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match=r"x\.tfrecord \(record 1\).*CRC"):
        list(iter_records(p))
    p.write_bytes(frame(b"one") + frame(b"two")[:-3])
    with pytest.raises(FormatError, match=r"record 1.*truncated"):
        list(iter_records(p))


def test_label_map_variants(tmp_path):
    p = tmp_path / "label_map.pbtxt"
    p.write_text("""# produced by hand
item {
  id: 1
  name: 'raccoon'
}
item { name: "/m/01g317" id: 2 display_name: "person" }
item {
    id: 3   # trailing comment
    name: "it's"
}
""")
    assert read_label_map(p) == {1: "raccoon", 2: "person", 3: "it's"}
    q = tmp_path / "w.pbtxt"
    q.write_text(label_map_text(["a", "b's", 'say "hi" \\o/']))
    assert read_label_map(q) == {1: "a", 2: "b's", 3: 'say "hi" \\o/'}
    (tmp_path / "bad.pbtxt").write_text("item { id: 1 }")
    with pytest.raises(FormatError, match="bad.pbtxt"):
        read_label_map(tmp_path / "bad.pbtxt")


@pytest.mark.parametrize(
    "text, message",
    [
        ("item {\n  id: one\n  name: 'a'\n}\n", r"bad\.pbtxt:2: not a label map"),
        ("item { id: 1 name: 'a' }\nitem { id: 1 name: 'b' }", "id 1 is used twice"),
        ("item { id: 0 name: 'a' }", "0 is reserved"),
        ("item { id: -3 name: 'a' }", "has id -3"),
        ("item { id: 1 name: 'a' ", r"bad\.pbtxt:1: not a label map"),
        ("", "no 'item"),
    ],
)
def test_bad_label_maps_name_file_and_line(tmp_path, text, message):
    p = tmp_path / "bad.pbtxt"
    p.write_text(text)
    with pytest.raises(FormatError, match=message):
        read_label_map(p)


def test_label_map_background_id_zero_is_skipped(tmp_path):
    p = tmp_path / "lm.pbtxt"
    p.write_text("item { id: 0 name: 'background' } item { id: 1, name: 'cat' }")
    assert read_label_map(p) == {1: "cat"}


@pytest.mark.skipif(not (FIXTURES / "tf_written.record").is_file(), reason="fixture missing")
def test_reads_records_written_by_tensorflow():
    """tf_written.record was made by TensorFlow 2.21 (tests/fixtures/make_tf_fixture.py) with
    the TF Object Detection API keys, a negative and a label map that has display names."""
    ds = read(FIXTURES / "tf_written.record")
    assert ds.format == "tfrecord"
    expected = __import__("json").loads((FIXTURES / "tf_written.json").read_text())
    assert ds.classes == expected["classes"]
    assert len(ds) == len(expected["samples"])
    for s, e in zip(ds, expected["samples"]):
        assert s.name == e["filename"] and (s.width, s.height) == (e["width"], e["height"])
        np.testing.assert_allclose(s.boxes, np.array(e["boxes"]).reshape(-1, 4), atol=1e-3)
        assert [ds.classes[i] for i in s.labels] == e["classes"]
        assert s.load().shape == (e["height"], e["width"], 3)


def test_gzip_records_get_a_clear_error(tmp_path):
    import gzip

    p = tmp_path / "x.record"
    p.write_bytes(gzip.compress(frame(b"one")))
    with pytest.raises(FormatError, match="gunzip"):
        list(iter_records(p))
