"""TensorFlow reads our shards (runs where tensorflow is installed; CI checks the reverse
direction with a fixture TensorFlow wrote, in test_records.py)."""

import numpy as np
import pytest

from detforge.data.shards import pack

tf = pytest.importorskip("tensorflow")


def test_tensorflow_parses_our_records(synth_ds, tmp_path):
    index = pack(synth_ds, tmp_path / "shards", shard_size=7, workers=2, progress=False)
    files = [str(tmp_path / "shards" / s["file"]) for s in index["shards"]]
    spec = {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/filename": tf.io.FixedLenFeature([], tf.string),
        "image/format": tf.io.FixedLenFeature([], tf.string),
        "image/height": tf.io.FixedLenFeature([], tf.int64),
        "image/width": tf.io.FixedLenFeature([], tf.int64),
        "image/object/bbox/xmin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymin": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/xmax": tf.io.VarLenFeature(tf.float32),
        "image/object/bbox/ymax": tf.io.VarLenFeature(tf.float32),
        "image/object/class/label": tf.io.VarLenFeature(tf.int64),
        "image/object/class/text": tf.io.VarLenFeature(tf.string),
    }
    by_name = {s.name: s for s in synth_ds}
    n = 0
    for raw in tf.data.TFRecordDataset(files):
        ex = tf.io.parse_single_example(raw, spec)
        s = by_name[ex["image/filename"].numpy().decode()]
        img = tf.io.decode_image(ex["image/encoded"]).numpy()
        assert img.shape == (s.height, s.width, 3)
        assert (int(ex["image/width"]), int(ex["image/height"])) == (s.width, s.height)
        box = np.stack(
            [
                tf.sparse.to_dense(ex[f"image/object/bbox/{k}"]).numpy()
                for k in ("xmin", "ymin", "xmax", "ymax")
            ],
            1,
        )
        np.testing.assert_allclose(
            box * [s.width, s.height, s.width, s.height], s.boxes.reshape(-1, 4), atol=1e-3
        )
        labels = tf.sparse.to_dense(ex["image/object/class/label"]).numpy()
        assert labels.tolist() == (s.labels + 1).tolist()
        n += 1
    assert n == len(synth_ds)
