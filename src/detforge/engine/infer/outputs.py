"""Where predictions go: annotated images or an annotated mp4, JSON lines / CSV / COCO results,
labelme files beside the images (model-assisted labeling), a live window: the sinks that
:func:`detforge.engine.jobs.predict`, the one predict driver, writes through."""

from __future__ import annotations

import csv
import io
import queue
import threading
from pathlib import Path

import cv2
import numpy as np

from detforge.data.dataset import Sample
from detforge.data.formats.coco import coco_results
from detforge.data.formats.labelme import to_json
from detforge.data.image import FileImage
from detforge.engine.infer.inputs import Source
from detforge.engine.infer.options import Outputs
from detforge.engine.infer.preannotations import Preannotations
from detforge.engine.infer.tracking import mot_lines
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text, disk_errors


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
            with disk_errors(self.dir / "predictions.jsonl"):
                self.jsonl.write(r.to_json() + "\n")
            return
        tracks = r.track_ids if getattr(r, "track_ids", None) is not None else [None] * len(r)
        for k, (b, s, lab, t) in enumerate(zip(r.boxes, r.scores, r.labels, tracks)):
            self.rows.append((r.source, r.index, k, *(float(v) for v in b), float(s), int(lab), t))

    def close(self, names: list[str]) -> Path:
        if self.jsonl:
            self.jsonl.close()
            return self.dir / "predictions.jsonl"
        if self.fmt == "csv":
            buf = io.StringIO()
            w = csv.writer(buf)
            tracked = any(row[9] is not None for row in self.rows)
            head = ["source", "frame", "k", "x0", "y0", "x1", "y1", "score", "label", "name"]
            w.writerow(head + ["track_id"] * tracked)
            for row in self.rows:
                w.writerow(
                    [
                        *row[:3],
                        *(f"{v:.2f}" for v in row[3:7]),
                        f"{row[7]:.5f}",
                        row[8],
                        names[row[8]],
                    ]
                    + [row[9]] * tracked
                )
            return atomic_write_text(self.dir / "predictions.csv", buf.getvalue())
        ids: dict = {}
        coco = []
        for src, idx, _, x0, y0, x1, y1, score, label, _ in self.rows:
            image_id = ids.setdefault((src, idx), len(ids) + 1)
            box = [(x0, y0, x1, y1)]
            coco += coco_results(image_id, box, [score], [label], file_name=Path(src).name)
        return atomic_write_json(self.dir / "predictions_coco.json", coco)


class MotSink:
    """Tracked boxes as a MOTChallenge text file (``tracks.txt``), streamed to disk under a
    temporary name and renamed when complete."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self.file = open(self.tmp, "w")  # noqa: SIM115 - closed in close()

    def add(self, r) -> None:

        with disk_errors(self.path):
            self.file.writelines(line + "\n" for line in mot_lines(r))

    def close(self, keep: bool = True) -> None:
        self.file.close()
        if keep:
            self.tmp.replace(self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _window(name: str):
    try:
        cv2.namedWindow(name, cv2.WINDOW_NORMAL)
    except cv2.error as e:
        raise DetforgeError(
            "--show needs a display and an OpenCV build with GUI support",
            "pip install opencv-python (not -headless) on a desktop, or drop --show",
        ) from e
    return name


class PredictionWriter:
    """Everything ``predict`` writes for each result: the table (jsonl/csv/coco), the
    annotated video or images, labelme files beside the images, the live window."""

    def __init__(self, det, src: Source, save_dir: Path, asked: Outputs, track: bool = False):
        formats = det.result_type.table_formats
        if asked.fmt not in formats:
            raise DetforgeError(
                f"--format {asked.fmt!r}: a {det.task} model's predictions go to "
                + ", ".join(formats),
                f"use --format {formats[0]}",
            )
        if track and not det.result_type.has_boxes:
            raise DetforgeError(f"--track needs a detector; this is a {det.task} model")
        for flag, on in (("--save-labelme", asked.save_labelme), ("--save-cvat", asked.save_cvat),
                         ("--save-labelstudio", asked.save_labelstudio)):  # fmt: skip
            if on and (src.video is not None or not det.result_type.has_boxes):
                what = "image files" if src.video is not None else "a detector"
                raise DetforgeError(f"{flag} needs {what}", f"drop {flag}")
        self.pre = Preannotations(
            save_dir, det.classes, src.spec, cvat=asked.save_cvat,
            labelstudio=asked.save_labelstudio, model=asked.model,
        )  # fmt: skip
        self.det, self.dir, self.asked = det, save_dir, asked
        self.table = TableSink(save_dir, asked.fmt)
        self.mot = MotSink(save_dir / "tracks.txt") if track else None
        self.sink = None
        if src.video is not None and asked.save:
            v = src.video
            stem = Path(str(v.name)).stem
            self.sink = VideoSink(save_dir / f"{stem}.mp4", v.fps, (v.width, v.height))
        self.window = _window("detforge") if asked.show else None
        self.used: set[str] = set()
        self.labelme_written = 0
        self.labelme_kept = 0  # existing files left as they were (they may hold corrections)

    def add(self, r) -> bool:
        """Write ``r`` everywhere asked; False when the user closed the window (q / Esc)."""
        self.table.add(r)
        if self.mot:
            self.mot.add(r)
        if self.sink:
            self.sink.put(r)
        elif self.asked.save:
            name = Path(r.source).stem + ".jpg"
            if name in self.used:  # same stem in two folders: keep both
                name = f"{Path(r.source).stem}_{r.index}.jpg"
            self.used.add(name)
            _, jpg = cv2.imencode(".jpg", r.draw()[..., ::-1])
            atomic_write_bytes(self.dir / name, jpg.tobytes())
        if self.pre.wanted:
            self.pre.add(r)
        if self.asked.save_labelme:
            wrote = _labelme_beside(r, self.det.classes, self.asked.overwrite_labelme)
            self.labelme_written += wrote
            self.labelme_kept += not wrote
        if self.window:
            cv2.imshow(self.window, r.draw()[..., ::-1])
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        return True

    def close(self, keep_video: bool) -> Path:
        if self.sink:
            self.sink.close(keep=keep_video)
        if self.mot:
            self.mot.close(keep=keep_video)
        if self.window:
            cv2.destroyAllWindows()
        self.preannotations = self.pre.close()
        return self.table.close(self.det.classes)
