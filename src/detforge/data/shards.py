"""Sharded TFRecord datasets: pack a Dataset into shards + ``index.json``, and read them back.

Records use the TensorFlow Object Detection API keys, so TensorFlow reads our shards and we read
theirs. JPEG and PNG bytes are stored as they are; other formats, and images whose EXIF
orientation rotates them (TensorFlow's decoders ignore EXIF), are re-encoded once.
"""

from __future__ import annotations

import glob
import hashlib
import itertools
import json
import multiprocessing as mp
import os
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import google_crc32c
import numpy as np

from detforge.data.dataset import Dataset, Sample
from detforge.data.datayaml import write_data_yaml
from detforge.data.records import decode_example, frame_chunks, iter_records, label_map_text
from detforge.data.tfexample import parse_example, record_image, to_example
from detforge.data.verify import usable
from detforge.errors import DestinationError, DetforgeError, FormatError, ImageError
from detforge.fileio import (
    atomic_write_json,
    atomic_write_text,
    disk_errors,
    read_text,
    refuse_overlap,
)

INDEX = "index.json"
STATE = ".pack-state.json"
SHARD_RE = re.compile(r"^(?P<name>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})(?P<ext>\.tfrecord|\.record)?$")
DEFAULT_SHARD_SIZE = "100MB"


# ---- planning and packing -------------------------------------------------------------------


def parse_shard_size(value: str | int) -> tuple[str, int]:
    """``"100MB"``/``"1GB"`` -> ("bytes", n); a plain integer -> ("records", n)."""
    if isinstance(value, int):
        return "records", value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(kb|k|mb|m|gb|g|records|r)?\s*", str(value).lower())
    if not m or float(m.group(1)) <= 0:
        raise DetforgeError(
            f"invalid shard size {value!r}",
            "use a size such as 100MB or 1GB, or a record count such as 1000",
        )
    num, unit = float(m.group(1)), m.group(2) or "records"
    mult = {"kb": 1e3, "k": 1e3, "mb": 1e6, "m": 1e6, "gb": 1e9, "g": 1e9}
    if unit in mult:
        return "bytes", int(num * mult[unit])
    return "records", int(num)


def plan(ds: Dataset, shard_size="100MB") -> list[range]:
    """Sample indices per shard: consecutive runs in dataset order (no image is read)."""
    kind, limit = parse_shard_size(shard_size)
    if kind == "records":
        return [range(i, min(i + limit, len(ds))) for i in range(0, len(ds), limit)]
    shards, start, acc = [], 0, 0
    for i, s in enumerate(ds.samples):
        size = s.image.size_hint() + 256
        if i > start and acc + size > limit:
            shards.append(range(start, i))
            start, acc = i, 0
        acc += size
    if start < len(ds):
        shards.append(range(start, len(ds)))
    return shards


def fingerprint(ds: Dataset, shards: list[range], name: str) -> str:
    h = hashlib.sha256(json.dumps([name, ds.classes, [len(x) for x in shards]]).encode())
    for s in ds.samples:
        h.update(f"{s.path}|{s.image.size_hint()}|{s.width}|{s.height}|{s.category}".encode())
        for arr in (s.boxes, s.labels, s.difficult, s.truncated, s.iscrowd):
            h.update(arr.tobytes())
    return h.hexdigest()


_COUNTER = None
_SAMPLES: list[Sample] = []
_CLASSES: list[str] = []


def _init_worker(counter, samples, classes, ignore_sigint: bool = False):
    """Pool initializer: the samples reach each worker once, never pickled per task. Pool
    workers ignore Ctrl-C (sent to the whole group; the main process stops them). They keep
    SIGTERM's default: that is how the pool itself ends them."""
    global _COUNTER, _SAMPLES, _CLASSES
    _COUNTER, _SAMPLES, _CLASSES = counter, samples, classes
    if ignore_sigint:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)
        # not a handler set by the caller (a CLI one): a worker must die at once when the
        # pool terminates it, or one killed while holding the task queue's lock hangs the rest
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _prefetch(fn, items, depth: int = 8, threads: int = 4):
    """``fn(item)`` for each item, in order, with up to ``depth`` calls running ahead on threads:
    reading files is latency-bound, so a few requests in flight keep the disk busy."""
    items = iter(items)
    with ThreadPoolExecutor(threads) as pool:
        queue = deque(pool.submit(fn, x) for x in itertools.islice(items, depth))
        while queue:
            result = queue.popleft().result()
            for x in itertools.islice(items, 1):
                queue.append(pool.submit(fn, x))
            yield result


def _record_image_or_none(s: Sample):
    """:func:`record_image`, or None for an image that stopped decoding after the check."""
    try:
        return record_image(s)
    except ImageError as e:
        import warnings

        warnings.warn(f"skipping an image that no longer decodes: {e.message}", stacklevel=2)
        return None


def _write_shard(task) -> dict:
    """Write one shard to a temp name, then rename: a shard file either is complete or absent."""
    path, indices, first_id = task
    samples, classes = [_SAMPLES[i] for i in indices], _CLASSES
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    crc = 0
    per_class = np.zeros(len(classes), np.int64)
    result = {"file": path.name, "records": 0, "boxes": 0, "negatives": 0, "reencoded": 0}
    try:
        with disk_errors(path), tmp.open("wb") as f:
            for k, (s, img) in enumerate(zip(samples, _prefetch(_record_image_or_none, samples))):
                if _COUNTER is not None:
                    with _COUNTER.get_lock():
                        _COUNTER.value += 1
                if img is None:
                    continue
                data, fmt, re_encoded = img
                chunks = frame_chunks(to_example(s, classes, data, fmt, str(first_id + k)))
                f.writelines(chunks)
                for c in chunks:
                    crc = google_crc32c.extend(crc, c)
                result["records"] += 1
                result["boxes"] += len(s.boxes)
                result["negatives"] += int(s.is_negative)
                result["reencoded"] += int(re_encoded)
                np.add.at(per_class, s.labels, 1)
                if s.category is not None:
                    per_class[s.category] += 1
        # No fsync: a shard counts as done only when its size matches the recorded one, and
        # readers verify every record's CRC, so a shard torn by a power cut is rewritten.
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    result.update(bytes=path.stat().st_size, crc32c=f"{crc:08x}", per_class=per_class.tolist())
    return result


def _load_state(out: Path, fp: str) -> dict | None:
    for name in (STATE, INDEX):
        p = out / name
        if p.is_file():
            try:
                state = json.loads(p.read_text())
            except ValueError:
                continue
            if isinstance(state, dict) and state.get("fingerprint") == fp:
                return state
    return None


def _ours(out: Path, name: str) -> set[str]:
    """Files of an earlier pack into ``out``: the shards its state or index lists, plus the
    index and label map it wrote (a folder holding only those may be packed into again)."""
    found: set[str] = set()
    for meta in (STATE, INDEX):
        try:
            state = json.loads((out / meta).read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict):
            continue
        found |= {meta, "label_map.pbtxt"} if meta == INDEX else {meta}
        found |= set(state.get("done") or {}) | {s.get("file") for s in state.get("shards") or []}
        if meta == STATE:  # a kill between a shard's rename and the state's update: still ours
            mine = re.compile(rf"^{re.escape(name)}-\d{{5}}-of-\d{{5}}\.tfrecord$")
            found |= {p.name for p in out.iterdir() if mine.match(p.name)}
    return {f for f in found if isinstance(f, str) and (out / f).is_file()}


def _clean_temp(out: Path) -> None:
    """Temp files a killed pack leaves (a shard's or the state's): never the user's."""
    for p in out.glob(".*.tmp"):
        if p.name.startswith((f".{STATE}.", f".{INDEX}.", ".label_map.pbtxt.")) or SHARD_RE.match(
            p.name[1:-4]
        ):
            p.unlink(missing_ok=True)


def pack(
    ds: Dataset,
    out,
    *,
    shard_size="100MB",
    workers: int | None = None,
    name: str = "data",
    overwrite: bool = False,
    progress: bool = True,
    strict: bool = False,
) -> dict:
    """Pack ``ds`` into ``out/<name>-NNNNN-of-NNNNN.tfrecord`` shards plus ``index.json`` and
    ``label_map.pbtxt``. Re-running after a kill resumes: complete shards are kept, the rest are
    rewritten, and the result is byte-identical to an uninterrupted run. Images that do not
    decode are left out and counted in the index (``strict``: refused). ``out`` may not be or
    overlap the data's folders; ``overwrite`` replaces only files an earlier pack wrote.
    Returns the index."""
    from detforge.data import sources

    out = Path(out)
    refuse_overlap(out, sources(ds))
    if not len(ds):
        raise DetforgeError(f"nothing to pack into {out}: the dataset holds no images")
    ds, bad = usable(ds, strict=strict)
    shards = plan(ds, shard_size)
    fp = fingerprint(ds, shards, name)
    state = _load_state(out, fp) if out.is_dir() else None
    if state is not None and "shards" in state and (out / INDEX).is_file():
        return state  # already packed, same input
    ours = _ours(out, name) if out.is_dir() else set()
    theirs = [p for p in out.iterdir() if p.name not in ours] if out.is_dir() else []
    _clean_temp(out) if out.is_dir() else None
    theirs = [p for p in theirs if p.exists()]
    if state is None and theirs and not overwrite:
        raise DestinationError(
            f"{out} is not empty ({theirs[0].name}, ...) and holds no unfinished pack",
            "choose an empty folder, or pass --overwrite (it replaces only what a pack wrote)",
        )
    n = len(shards)
    files = [f"{name}-{i:05d}-of-{n:05d}.tfrecord" for i in range(n)]
    clash = [f for f in files if (out / f).exists() and f not in ours]
    if clash:
        raise DestinationError(
            f"{out / clash[0]} exists and was not written by a detforge pack",
            "move it away or choose another folder",
        )
    out.mkdir(parents=True, exist_ok=True)
    for f in ours - set(files) - {STATE, INDEX, "label_map.pbtxt"}:  # shards of another plan
        (out / f).unlink(missing_ok=True)
    done = dict(state["done"]) if state else {}
    done = {
        f: r
        for f, r in done.items()
        if f in files and (out / f).is_file() and (out / f).stat().st_size == r["bytes"]
    }
    atomic_write_json(out / STATE, {"fingerprint": fp, "done": done})
    tasks, first = [], 0
    for f, idx in zip(files, shards):
        if f not in done:
            tasks.append((str(out / f), idx, first))
        first += len(idx)
    total = len(ds)
    start = sum(r["records"] for r in done.values())
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    _run_tasks(tasks, (ds.samples, ds.classes), workers, done, out, fp, total, start, progress)
    index = _write_index(out, ds, files, done, fp, shard_size, bad)
    (out / STATE).unlink(missing_ok=True)
    _clean_temp(out)
    return index


def _run_tasks(tasks, data, workers, done, out, fp, total, start, show) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    cols = (TextColumn("packing"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, disable=not show, transient=False) as bar:
        job = bar.add_task("pack", total=total, completed=start)

        def finished(res):
            done[res["file"]] = res
            atomic_write_json(out / STATE, {"fingerprint": fp, "done": done})

        if workers == 1:
            counter = mp.Value("q", 0, lock=True)
            _init_worker(counter, *data)
            try:
                for t in tasks:
                    finished(_write_shard(t))
                    bar.update(job, completed=start + counter.value)
            finally:
                _init_worker(None, [], [])
            return
        # never fork this process: a library that left threads in it (OpenVINO's TBB pool,
        # onnxruntime, torch) can crash the fork itself; a fork server starts clean (Python
        # 3.14's default on Linux) and the samples travel once per worker
        ctx = mp.get_context("spawn" if os.name == "nt" else "forkserver")
        counter = ctx.Value("q", 0, lock=True)
        init = (counter, *data, True)
        with ctx.Pool(workers, initializer=_init_worker, initargs=init) as pool:
            pending = pool.imap_unordered(_write_shard, tasks)
            remaining = len(tasks)
            while remaining:
                try:
                    res = pending.next(timeout=0.2)
                except mp.TimeoutError:
                    bar.update(job, completed=start + counter.value)
                    continue
                finished(res)
                remaining -= 1
                bar.update(job, completed=start + counter.value)


def _write_index(out: Path, ds: Dataset, files, done, fp, shard_size, bad) -> dict:
    per_class = np.zeros(len(ds.classes), np.int64)
    shards = []
    for f in files:
        r = dict(done[f])
        per_class += np.array(r.pop("per_class"), np.int64)
        shards.append(r)
    index = {
        "format": "detforge-shards",
        "version": 1,
        "task": ds.task,
        "classes": ds.classes,
        "records": sum(r["records"] for r in shards),
        "boxes": sum(r["boxes"] for r in shards),
        "negatives": sum(r["negatives"] for r in shards),
        "reencoded": sum(r["reencoded"] for r in shards),
        "skipped": len(bad),  # images left out because they do not decode
        "skipped_images": [{"path": b.path, "reason": b.reason} for b in bad[:1000]],
        "per_class": dict(zip(ds.classes, per_class.tolist())),
        "shard_size": str(shard_size),
        "fingerprint": fp,
        "shards": shards,
    }
    atomic_write_text(out / "label_map.pbtxt", label_map_text(ds.classes))
    atomic_write_json(out / INDEX, index)
    return index


# ---- reading shards ---------------------------------------------------------------------------


def shard_files(path) -> tuple[list[Path], dict | None]:
    """The record files behind ``path`` (an index.json, a folder, a file, a sharded name such as
    ``train.record-00000-of-00010``, or a glob) and the index when there is one."""
    path = Path(path)
    if path.is_dir() and (path / INDEX).is_file():
        path = path / INDEX
    if path.name == INDEX:
        try:
            index = json.loads(read_text(path))
        except (ValueError, RecursionError) as e:
            raise FormatError(path, f"not valid JSON: {e}") from None
        try:
            files = [path.parent / Path(s["file"]).name for s in index["shards"]]
            classes = [str(c) for c in index["classes"]]
        except (TypeError, KeyError):
            raise FormatError(
                path, "not a detforge shard index (needs shards and classes)", "re-run pack"
            ) from None
        index = {**index, "classes": classes}
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise FormatError(path, f"shards listed but missing: {missing[:3]}", "re-run pack")
        return files, index
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_record_name(p.name))
        return files, None
    if path.is_file():
        return [path], None
    if any(c in str(path) for c in "*?["):
        files = sorted(Path(p) for p in glob.glob(str(path)))
    else:  # "train.record" naming shards "train.record-00000-of-00010"
        files = sorted(path.parent.glob(glob.escape(path.name) + "-*-of-*"))
    if files:
        return files, None
    raise FormatError(path, "no TFRecord files found")


def _is_record_name(name: str) -> bool:
    return (
        name.endswith((".tfrecord", ".record"))
        or bool(SHARD_RE.match(name))
        or ".tfrecord-" in name
        or ".record-" in name
    )


def assign(n_items: int, rank: int, world: int) -> list[int]:
    """Items ``rank, rank + world, ...``: how shards (or records) are split between readers."""
    return list(range(rank, n_items, world)) if world > 0 else []


def iter_parsed(files, *, part: int = 0, parts: int = 1, verify: bool = True, order=None):
    """Yield ``(file, record_index, Parsed)`` for reader ``part`` of ``parts``: whole shards when
    there are at least ``parts`` shards, else every ``parts``-th record of each shard (records of
    other readers are seeked over, not read)."""
    files = [Path(f) for f in files]
    order = list(range(len(files))) if order is None else list(order)
    if len(files) >= parts:
        for k in assign(len(order), part, parts):
            f = files[order[k]]
            for i, _, data in iter_records(f, verify):
                yield f, i, parse_example(decode_example(data, f, i), f, i)
        return
    for k in order:
        f = files[k]
        mine = lambda i, k=k: (i + k) % parts == part  # noqa: E731
        for i, _, data in iter_records(f, verify, select=mine):
            yield f, i, parse_example(decode_example(data, f, i), f, i)


def pack_splits(parts: dict, out: Path, **kw) -> dict:
    """Pack each split of ``parts`` (``{split: Dataset}``) into ``out/<split>`` (see
    :func:`pack` for ``kw``) and write ``out/data.yaml`` naming them; the index returned sums
    the splits and holds each under ``splits``."""
    mine = (*parts, "data.yaml")
    stray = [p.name for p in out.iterdir() if p.name not in mine] if out.is_dir() else []
    if stray and not kw.get("overwrite"):
        raise DetforgeError(
            f"{out} is not empty ({stray[0]}, ...)", "choose an empty folder, or pass --overwrite"
        )
    splits = {k: pack(ds, out / k, **kw) for k, ds in parts.items()}
    data_yaml = write_data_yaml(out, {k: k for k in splits}, next(iter(parts.values())).classes)
    total = {k: sum(i[k] for i in splits.values()) for k in ("records", "boxes", "skipped")}
    shards = [dict(sh, file=f"{k}/{sh['file']}") for k, i in splits.items() for sh in i["shards"]]
    return {**total, "shards": shards, "splits": splits, "data_yaml": str(data_yaml)}
