"""TensorFlow Object Detection API TFRecords (+ ``label_map.pbtxt``), without TensorFlow.

Reading scans the records once and keeps only offsets: pixels stay in the files.
"""

from __future__ import annotations

from pathlib import Path

from detforge.data.dataset import ClassIndex, Dataset, Sample
from detforge.data.image import RecordImage
from detforge.data.records import decode_example, iter_records, read_label_map
from detforge.data.shards import DEFAULT_SHARD_SIZE, pack, parse_example, shard_files
from detforge.errors import DetforgeError, FormatError

NAME = "tfrecord"


def find_label_map(folder: Path) -> Path | None:
    if (folder / "label_map.pbtxt").is_file():
        return folder / "label_map.pbtxt"
    return next(iter(sorted(folder.glob("*.pbtxt"))), None)


def read(path, *, label_map=None, names=None, **_) -> Dataset:
    """Read TFRecord files: one file, a folder of shards, an ``index.json``, a glob or a sharded
    base name. Class names come from ``label_map`` (or a ``*.pbtxt`` beside the records), else
    from the index, else from ``image/object/class/text``."""
    path = Path(path)
    files, index = shard_files(path)
    folder = files[0].parent if files else path.parent
    lm_path = Path(label_map) if label_map else find_label_map(folder)
    by_id = read_label_map(lm_path) if lm_path else None
    if names:
        fixed = list(names)
    elif by_id:
        fixed = [by_id[i] for i in sorted(by_id)]
    elif index:
        fixed = list(index["classes"])
    else:
        fixed = None
    cls = ClassIndex(fixed)
    id_to_name = by_id or ({i + 1: c for i, c in enumerate(index["classes"])} if index else {})
    samples, task = [], index.get("task", "detect") if index else "detect"
    for f in files:
        for i, off, data in iter_records(f):
            p = parse_example(decode_example(data, f, i), f, i)
            labels = []
            for k in range(len(p.boxes)):
                labels.append(cls(_class_name(p.class_ids[k], p.class_text, k, id_to_name, f, i)))
            category = None
            if p.category_id is not None or p.category_text:
                category = cls(
                    _class_name(
                        p.category_id if p.category_id is not None else -1,
                        [p.category_text] if p.category_text else [],
                        0,
                        id_to_name,
                        f,
                        i,
                    )
                )
                task = "classify"
            ref = RecordImage(f.resolve(), off, len(data), p.filename or f"{f.stem}_{i}.jpg")
            samples.append(
                Sample(
                    ref,
                    p.width,
                    p.height,
                    p.boxes,
                    labels,
                    p.difficult,
                    p.truncated,
                    p.iscrowd,
                    category,
                )
            )
    classes, samples = cls.finish(samples)
    return Dataset(classes, samples, folder, task=task, format=NAME)


def _class_name(cid, texts, k, id_to_name, f, i) -> str:
    if cid is not None and cid >= 0 and cid in id_to_name:
        return id_to_name[int(cid)]
    if k < len(texts) and texts[k]:
        return texts[k]
    raise FormatError(
        f,
        f"class id {cid} is not in the label map and the record has no class text",
        "pass the label_map.pbtxt the records were written with",
        record=i,
    )


def write(
    ds: Dataset,
    dst,
    *,
    images: str = "copy",
    overwrite: bool = False,
    shard_size=DEFAULT_SHARD_SIZE,
    workers: int | None = None,
    strict: bool = False,
) -> Path:
    """Write sharded records, ``label_map.pbtxt`` and ``index.json`` (see :func:`pack`)."""
    if images == "none":
        raise DetforgeError("TFRecords embed the images; --no-images does not apply")
    pack(
        ds,
        dst,
        shard_size=shard_size,
        workers=workers,
        overwrite=overwrite,
        progress=False,
        strict=strict,
    )
    return Path(dst)
