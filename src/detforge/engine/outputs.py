"""Where predictions go: annotated images or an annotated mp4, JSON lines / CSV / COCO results,
labelme files beside the images (model-assisted labeling), a live window. ``predict_files``
is what ``detforge predict`` runs."""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from detforge.engine import sources
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text


class VideoSink:
    """Draws and encodes frames on a thread (bounded queue), so the model never waits for it.
    Written to a temporary name and renamed when complete."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int], draw: bool = True):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.stem}.tmp{self.path.suffix}")
        self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self.writer.isOpened():
            raise DetforgeError(f"{self.path}: cannot open a video writer (mp4v)")
        self.size, self.draw = size, draw
        self.q: queue.Queue = queue.Queue(maxsize=8)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, daemon=True, name="detforge-video")
        self.thread.start()

    def _work(self):
        try:
            while (r := self.q.get()) is not None:
                frame = r.draw() if self.draw else r.image
                if frame.shape[1::-1] != self.size:
                    frame = cv2.resize(frame, self.size)
                self.writer.write(np.ascontiguousarray(frame[..., ::-1]))
        except BaseException as e:  # noqa: BLE001 - re-raised in put()/close()
            self.error = e
            while self.q.get() is not None:  # drain so the producer never blocks
                pass

    def put(self, result) -> None:
        if self.error:
            raise self.error
        self.q.put(result)

    def close(self, keep: bool = True) -> None:
        self.q.put(None)
        self.thread.join()
        self.writer.release()
        if self.error:
            raise self.error
        if keep:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _labelme_beside(r, names: list[str], overwrite: bool) -> bool:
    """Write ``<image>.json`` (labelme rectangles) next to the source image; never replace
    an existing file unless ``overwrite`` (it may hold the user's corrections)."""
    from detforge.data.dataset import Sample
    from detforge.data.formats.labelme import to_json
    from detforge.data.image import FileImage

    src = Path(r.source)
    out = src.with_suffix(".json")
    if out.exists() and not overwrite:
        return False
    h, w = r.shape
    s = Sample(FileImage(src), w, h, r.boxes, r.labels)
    atomic_write_json(out, to_json(s, names, src.name))
    return True


class TableSink:
    """Collects rows for CSV and COCO results; JSON lines are streamed to disk."""

    def __init__(self, save_dir: Path, fmt: str):
        self.fmt, self.dir = fmt, save_dir
        self.rows: list = []
        self.jsonl = (
            open(save_dir / "predictions.jsonl", "w")  # noqa: SIM115 - closed in close()
            if fmt == "jsonl"
            else None
        )

    def add(self, r) -> None:
        if self.jsonl:
            self.jsonl.write(r.to_json() + "\n")
            return
        for k, (b, s, lab) in enumerate(zip(r.boxes, r.scores, r.labels)):
            self.rows.append((r.source, r.index, k, *(float(v) for v in b), float(s), int(lab)))

    def close(self, names: list[str]) -> Path:
        if self.jsonl:
            self.jsonl.close()
            return self.dir / "predictions.jsonl"
        if self.fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["source", "frame", "k", "x0", "y0", "x1", "y1", "score", "label", "name"])
            for row in self.rows:
                w.writerow(
                    [
                        *row[:3],
                        *(f"{v:.2f}" for v in row[3:7]),
                        f"{row[7]:.5f}",
                        row[8],
                        names[row[8]],
                    ]
                )
            return atomic_write_text(self.dir / "predictions.csv", buf.getvalue())
        ids: dict = {}
        coco = [
            {
                "image_id": ids.setdefault((src, idx), len(ids) + 1),
                "file_name": Path(src).name,
                "category_id": lab + 1,
                "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                "score": round(s, 5),
            }
            for src, idx, _, x0, y0, x1, y1, s, lab in self.rows
        ]
        return atomic_write_json(self.dir / "predictions_coco.json", coco)


def _window(name: str):
    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise DetforgeError(
            "--show needs a display and an OpenCV build with GUI support",
            "pip install opencv-python (not -headless) on a desktop, or drop --show",
        ) from e
    return name


def predict_files(
    det,
    source,
    save_dir: Path,
    *,
    conf: float = 0.25,
    iou: float = 0.5,
    batch: int = 4,
    fmt: str = "jsonl",
    save: bool = True,
    save_labelme: bool = False,
    overwrite_labelme: bool = False,
    show: bool = False,
    progress: bool = True,
) -> dict:
    """Run ``det`` over ``source`` and write what was asked into ``save_dir``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    if fmt not in ("jsonl", "csv", "coco"):
        raise DetforgeError(f"unknown --format {fmt!r}", "use jsonl, csv or coco")
    src = int(source) if str(source).isdigit() else str(source)
    video = isinstance(src, int) or sources.is_video(src)
    info = sources.video_info(src) if video else None
    if save_labelme and video:
        raise DetforgeError("--save-labelme needs image files", "extract frames first")
    if det.task == "classify" and (fmt != "jsonl" or save_labelme):
        raise DetforgeError(
            "a classifier's predictions go to JSON lines (top-5 classes per image)",
            "drop --format csv/coco and --save-labelme for classification models",
        )
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    table = TableSink(save_dir, fmt)
    sink = None
    if video and save:
        stem = f"camera{src}" if isinstance(src, int) else Path(src).stem
        sink = VideoSink(save_dir / f"{stem}.mp4", info["fps"], (info["width"], info["height"]))
    win = _window("detforge") if show else None
    skipped, labelme, n, dets, used, top1 = [], 0, 0, 0, set(), {}
    total = (info or {}).get("frames") or (None if video else len(sources.image_paths(src)))
    bar = Progress(
        TextColumn("predicting"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[fps]:.1f} frames/s"),
        TimeElapsedColumn(),
        disable=not progress,
        transient=False,
    )
    t0 = time.perf_counter()
    ok = False
    try:
        with bar:
            task = bar.add_task("predict", total=total, fps=0.0)
            for r in det.stream(src, conf=conf, iou=iou, batch=batch, on_error=skipped.append):
                n += 1
                dets += len(r)
                if det.task == "classify":
                    name = r.topk(1)[0][0]
                    top1[name] = top1.get(name, 0) + 1
                table.add(r)
                if sink:
                    sink.put(r)
                elif save:
                    name = Path(r.source).stem + ".jpg"
                    if name in used:  # same stem in two folders: keep both
                        name = f"{Path(r.source).stem}_{r.index}.jpg"
                    used.add(name)
                    _, jpg = cv2.imencode(".jpg", r.draw()[..., ::-1])
                    atomic_write_bytes(save_dir / name, jpg.tobytes())
                if save_labelme:
                    labelme += _labelme_beside(r, det.names, overwrite_labelme)
                if win:
                    cv2.imshow(win, r.draw()[..., ::-1])
                    if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                        break
                bar.update(task, advance=1, fps=n / (time.perf_counter() - t0))
        ok = True
    finally:
        if sink:
            sink.close(keep=ok or n > 0)
        if win:
            cv2.destroyAllWindows()
    out = table.close(det.names)
    seconds = time.perf_counter() - t0
    summary = {
        "source": str(source),
        "frames": n,
        "detections": dets if det.task != "classify" else None,
        "top1": dict(sorted(top1.items(), key=lambda kv: -kv[1])) if top1 else None,
        "seconds": round(seconds, 3),
        "fps": round(n / seconds, 2) if seconds else 0.0,
        "predictions": str(out),
        "video": str(sink.path) if sink else None,
        "labelme_written": labelme,
        "skipped": [{"source": f.source, "error": f.error} for f in skipped],
        "save_dir": str(save_dir),
    }
    atomic_write_text(save_dir / "summary.json", json.dumps(summary, indent=2))
    return summary
