"""Loose-file and shard loaders give the same samples; shards split across workers and ranks."""

from collections import Counter

import numpy as np
import pytest
import torch

from detforge.data.shards import pack
from detforge.data.torch import loader
from detforge.data.torch.loader import SampleDataset, ShardDataset, collate, make_loader


def _key(img, target):
    return (
        int(img.sum()),
        tuple(img.shape),
        tuple(np.round(target["boxes"].numpy(), 3).ravel()),
        tuple(target["labels"].tolist()),
    )


def test_same_contract_from_files_and_shards(synth_ds, tmp_path):
    pack(synth_ds, tmp_path / "p", shard_size=5, workers=1, progress=False)
    files = [_key(*SampleDataset(synth_ds)[i]) for i in range(len(synth_ds))]
    shards = ShardDataset(tmp_path / "p")
    assert len(shards) == len(synth_ds) and shards.classes == synth_ds.classes
    got = [_key(*item) for item in shards]
    assert Counter(got) == Counter(files)
    img, target = next(iter(shards))
    assert img.dtype == torch.uint8 and img.shape[0] == 3
    assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
    neg = [t for _, t in shards if len(t["boxes"]) == 0]
    assert len(neg) == synth_ds.num_negatives and neg[0]["boxes"].shape == (0, 4)


@pytest.mark.parametrize("shard_size", [3, 100])  # many shards, and fewer shards than readers
def test_workers_and_ranks_each_record_once(synth_ds, tmp_path, monkeypatch, shard_size):
    pack(synth_ds, tmp_path / "p", shard_size=shard_size, workers=1, progress=False)
    expected = Counter(_key(*item) for item in ShardDataset(tmp_path / "p"))
    seen = Counter()
    for rank in range(2):
        monkeypatch.setattr(loader, "_rank_world", lambda r=rank: (r, 2))
        dl = make_loader(tmp_path / "p", batch_size=4, workers=2)
        for images, targets in dl:
            for img, t in zip(images, targets):
                seen[_key(img, t)] += 1
    assert seen == expected


def test_shuffle_buffer_changes_order_not_content(synth_ds, tmp_path):
    pack(synth_ds, tmp_path / "p", shard_size=4, workers=1, progress=False)
    plain = [_key(*x) for x in ShardDataset(tmp_path / "p")]
    ds = ShardDataset(tmp_path / "p", shuffle_buffer=8, seed=0)
    e0 = [_key(*x) for x in ds]
    ds.set_epoch(1)
    e1 = [_key(*x) for x in ds]
    assert Counter(e0) == Counter(plain) == Counter(e1)
    assert e0 != plain and e0 != e1


def test_map_style_loader_batches(synth_ds):
    dl = make_loader(synth_ds, batch_size=5, workers=0, shuffle=True, seed=3)
    images, targets = next(iter(dl))
    assert len(images) == len(targets) == 5
    ids = [t["image_id"] for t in targets]
    assert ids != [0, 1, 2, 3, 4] and len(set(ids)) == 5  # shuffled, no repeats
    for img, t in zip(images, targets):  # each item is its sample: pixels, boxes, labels
        s = synth_ds[t["image_id"]]
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3, s.height, s.width)
        np.testing.assert_array_equal(img.permute(1, 2, 0).numpy(), s.load())
        np.testing.assert_array_equal(t["boxes"].numpy(), s.boxes)
        np.testing.assert_array_equal(t["labels"].numpy(), s.labels)
    assert collate([(1, {"a": 1}), (2, {"a": 2})]) == ([1, 2], [{"a": 1}, {"a": 2}])
