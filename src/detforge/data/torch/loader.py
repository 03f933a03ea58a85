"""Torch datasets over a canonical Dataset (loose files) or over shards, with one contract.

Both yield ``(image, target)``: ``image`` a uint8 tensor (3, H, W) RGB, ``target`` a dict with
``boxes`` float32 (N, 4) absolute xyxy, ``labels`` int64 (N,), ``iscrowd`` bool (N,) and
``image_id`` int. Negatives have N == 0. Models normalize; loaders never do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info
from torch.utils.data import Dataset as TorchDataset

from detforge.data import image as imageio
from detforge.data.dataset import Dataset
from detforge.data.records import read_label_map
from detforge.data.resize import shrink
from detforge.data.shards import iter_parsed, shard_files
from detforge.errors import FormatError, ImageError


def _item(pixels: np.ndarray, boxes, labels, iscrowd, image_id: int, category=None):
    target = {  # copies: samples share read-only arrays, and transforms may edit targets
        "boxes": torch.tensor(np.asarray(boxes, np.float32)).reshape(-1, 4),
        "labels": torch.tensor(np.asarray(labels, np.int64)),
        "iscrowd": torch.tensor(np.asarray(iscrowd, bool)),
        "image_id": image_id,
    }
    if category is not None:
        target["category"] = int(category)
    if not pixels.flags.writeable:  # PIL hands out read-only buffers; torch wants its own
        pixels = pixels.copy()
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1), target


class SampleDataset(TorchDataset):
    """Map-style dataset over a :class:`Dataset` (images decoded on access). With
    ``max_side``, each image is shrunk to what that input size needs, as the decoded cache
    holds it (:func:`~detforge.data.resize.shrink`)."""

    def __init__(self, ds: Dataset, transform=None, max_side: int | None = None):
        self.ds, self.transform = ds, transform
        self.classes = ds.classes
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        n = len(self.ds)
        for k in range(min(n, 16)):  # an image that stopped decoding: the next one stands in
            j = (i + k) % n
            s = self.ds.samples[j]
            try:
                pixels = s.load()
            except ImageError as e:
                _skip_warning(e)
                continue
            boxes = np.asarray(s.boxes, np.float32).reshape(-1, 4)
            if self.max_side:
                pixels, (gx, gy) = shrink(pixels, self.max_side)
                boxes = boxes * np.float32([gx, gy, gx, gy])
            item = _item(pixels, boxes, s.labels, s.iscrowd, j, s.category)
            return self.transform(*item) if self.transform else item
        raise ImageError(self.ds.samples[i].path, "this and the next images do not decode")


class SceneStream(TorchDataset):
    """Items rendered from a :class:`~detforge.data.formula.FormulaStream`'s scenes: item ``i``
    of epoch ``e`` is scene ``e * len + i`` (``set_epoch`` before iterating), so each epoch
    trains on new scenes and a resumed run on the same ones."""

    def __init__(self, stream, transform=None):
        self.stream, self.transform, self.classes = stream, transform, stream.classes
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.stream)

    def __getitem__(self, i: int):
        pixels, boxes, labels = self.stream.scenes.scene(self.epoch * len(self.stream) + i)
        item = _item(pixels, boxes, labels, np.zeros(len(labels), bool), i)
        return self.transform(*item) if self.transform else item


def _skip_warning(e: ImageError) -> None:
    """An image that decoded in the up-front check but not now (changed during the run)."""
    warnings.warn(f"skipping an image that no longer decodes: {e.message}", stacklevel=3)


def ignore_signals(_worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: Ctrl-C and SIGTERM reach the whole process group; workers
    ignore them so the main process can save last.pt and shut them down itself."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ShardDataset(IterableDataset):
    """Stream records from shards with bounded memory.

    Shards are split across DDP ranks and DataLoader workers (whole shards when there are enough,
    else every k-th record). ``shuffle_buffer`` > 0 shuffles shard order per epoch and keeps a
    buffer of that many encoded records to draw from; call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self,
        source,
        *,
        shuffle_buffer: int = 0,
        seed: int = 0,
        transform=None,
        label_map=None,
        verify: bool = True,
    ):
        self.files, index = shard_files(source)
        if index is not None:
            self.classes = list(index["classes"])
            self.length = int(index["records"])
        else:
            folder = self.files[0].parent
            lm = Path(label_map) if label_map else next(iter(sorted(folder.glob("*.pbtxt"))), None)
            by_id = read_label_map(lm) if lm else {}
            self.classes = [by_id[i] for i in sorted(by_id)]
            self.length = None
            if not self.classes:
                raise FormatError(
                    folder,
                    "no index.json or label_map.pbtxt beside the records",
                    "pass label_map=..., or pack the data with detforge data pack",
                )
        self._id_to_index = self._ids(label_map)
        self.shuffle_buffer, self.seed, self.transform, self.verify = (
            shuffle_buffer,
            seed,
            transform,
            verify,
        )
        self.epoch = 0

    def _ids(self, label_map) -> dict[int, int]:
        lm = Path(label_map) if label_map else self.files[0].parent / "label_map.pbtxt"
        if lm.is_file():
            by_id = read_label_map(lm)
            return {i: self.classes.index(n) for i, n in by_id.items() if n in self.classes}
        return {i + 1: i for i in range(len(self.classes))}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("record count unknown without an index.json; pack the data first")
        return self.length

    def _records(self):
        rank, world = _rank_world()
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        order = list(range(len(self.files)))
        if self.shuffle_buffer:
            np.random.default_rng([self.seed, self.epoch]).shuffle(order)
        yield from iter_parsed(
            self.files, part=rank * nw + wid, parts=world * nw, verify=self.verify, order=order
        )

    def _to_item(self, f, i, p):
        labels = np.array([self._id_to_index.get(int(c), -1) for c in p.class_ids], np.int64)
        if (labels < 0).any():  # ids from another label map: the class names decide
            labels = np.array(
                [self.classes.index(t) if t in self.classes else -1 for t in p.class_text], np.int64
            )
        if (labels < 0).any() or len(labels) != len(p.boxes):
            known = ", ".join(self.classes)
            raise FormatError(
                f,
                f"a box's class (id {list(p.class_ids)}, text {list(p.class_text)}) is not one "
                f"of the dataset's classes ({known})",
                "pass the label_map.pbtxt the records were written with, or re-pack the data",
                record=i,
            )
        category = self._id_to_index.get(p.category_id) if p.category_id is not None else None
        if p.category_id is not None and category is None:
            raise FormatError(
                f,
                f"image class id {p.category_id} is not in the label map "
                f"({', '.join(self.classes)})",
                "pass the label_map.pbtxt the records were written with",
                record=i,
            )
        try:
            pixels = imageio.decode(p.image, f"{f} (record {i})")
        except ImageError as e:
            _skip_warning(e)
            return None
        item = _item(pixels, p.boxes, labels, p.iscrowd, i, category)
        return self.transform(*item) if self.transform else item

    def __iter__(self):
        return (item for item in self._items() if item is not None)

    def _items(self):
        records = self._records()
        if not self.shuffle_buffer:
            for rec in records:
                yield self._to_item(*rec)
            return
        info = get_worker_info()
        rng = np.random.default_rng([self.seed, self.epoch, info.id if info else 0])
        buf = []
        for rec in records:
            if len(buf) < self.shuffle_buffer:
                buf.append(rec)
                continue
            k = int(rng.integers(len(buf)))
            out, buf[k] = buf[k], rec
            yield self._to_item(*out)
        rng.shuffle(buf)
        for rec in buf:
            yield self._to_item(*rec)


class BalancedSampler(Sampler):
    """Each epoch draws ``len(keys)`` indices with replacement, image ``i`` with probability
    proportional to ``1 / count(keys[i])``: every stratum (a classifier's class; a detector's
    rarest class per image, or negatives) comes up about equally often. The draw is seeded from
    ``generator``, so a resumed run replays it; under DDP each rank takes its slice of one draw.
    """

    def __init__(self, keys: list, generator: torch.Generator, rank: int = 0, world: int = 1):
        count: dict = {}
        for k in keys:
            count[k] = count.get(k, 0) + 1
        self.weights = torch.tensor([1.0 / count[k] for k in keys], dtype=torch.float64)
        self.generator, self.rank, self.world = generator, rank, world
        self.per_rank = len(keys) // world

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        n = self.per_rank * self.world
        idx = torch.multinomial(self.weights, n, replacement=True, generator=self.generator)
        return iter(idx[self.rank :: self.world].tolist())

    def set_epoch(self, epoch: int) -> None:  # the generator moves on by itself
        pass


def collate(batch):
    """Detection batches are lists: images differ in size and box counts."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def make_loader(
    source,
    *,
    batch_size: int = 8,
    workers: int = 2,
    shuffle: bool = False,
    seed: int = 0,
    transform=None,
    shuffle_buffer: int = 256,
) -> DataLoader:
    """A DataLoader over a :class:`Dataset` or a shard source (folder, index.json, records)."""
    if isinstance(source, Dataset):
        ds = SampleDataset(source, transform)
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(
            ds,
            batch_size,
            shuffle=shuffle,
            num_workers=workers,
            collate_fn=collate,
            generator=gen,
            persistent_workers=False,
            worker_init_fn=ignore_signals,
        )
    ds = ShardDataset(
        source, shuffle_buffer=shuffle_buffer if shuffle else 0, seed=seed, transform=transform
    )
    return DataLoader(
        ds, batch_size, num_workers=workers, collate_fn=collate, worker_init_fn=ignore_signals
    )
