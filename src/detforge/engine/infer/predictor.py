"""Predictor: a model loaded once (``.pt`` checkpoint or ``.onnx``), batched, streamed.

Images are prepared on the host by :func:`~detforge.engine.infer.backends.prepare`, run by a
backend, and turned into results by the task's result type. Boxes come back in the original
image's pixels.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from detforge.data.resize import prepare
from detforge.engine.infer import inputs
from detforge.engine.infer.options import Thresholds
from detforge.engine.infer.tracking import TRACK_FLOOR, Tracker
from detforge.errors import DetforgeError
from detforge.models.base import FALLBACK_CONF


class Predictor:
    """Load once, predict many times: ``det.predict(inputs)``, ``det.stream(source)``.
    ``backend`` runs the model; ``result_type`` (Result or ClassResult) makes the results;
    ``weights`` is the file it was loaded from (None when built in memory)."""

    def __init__(self, backend, result_type, weights=None):
        self.backend = backend
        self.weights = weights
        self.result_type = result_type
        self.classes = backend.classes
        self.imgsz = backend.imgsz
        self.task = backend.task

    names = property(lambda self: self.classes, doc="``classes``, by its name until 0.1.0")

    @property
    def conf(self) -> float:
        """The confidence this model predicts with unless told otherwise: the threshold
        training measured for it (best F1 on validation), else ``FALLBACK_CONF`` (0.25)."""
        measured = getattr(self.backend, "default_conf", None)
        return FALLBACK_CONF if measured is None else float(measured)

    def __repr__(self) -> str:
        return f"Predictor({self.backend.kind}, {len(self.classes)} classes, imgsz {self.imgsz})"

    def warm_up(self) -> float:
        """Run the model once on a blank input (first calls build kernels and caches) and
        return the seconds it took, so that timings after it are the model's steady speed."""
        import time

        t0 = time.perf_counter()
        self.backend(np.zeros((1, 3, self.imgsz, self.imgsz), np.uint8))
        return time.perf_counter() - t0

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One RGB image -> the model's uint8 (3, S, S) input and the scale back."""
        return prepare(image, self.imgsz, self.backend.resize)

    def finish(self, frames: list, batch: np.ndarray, scales, limits: Thresholds) -> list:
        """Results for ``frames`` from their prepared ``batch`` (which may have been made in
        another process: a frame then needs only ``source`` and ``hw``). A ``limits.conf`` of
        None is the model's own, :attr:`conf`."""
        limits = limits.with_conf(self.conf)
        raw = self.backend(batch)
        return self.result_type.from_batch(frames, raw, scales, self.classes, limits)

    def run(self, frames: list, limits: Thresholds = Thresholds()) -> list:
        """Results for decoded ``frames`` (one batch)."""
        prepped = [self.prepare(f.image) for f in frames]
        batch = np.stack([p[0] for p in prepped])
        scales = [p[1] for p in prepped]
        return self.finish(frames, batch, scales, limits)

    def _batches(self, frames: Iterator, batch: int, on_error, limits: Thresholds):
        chunk: list = []
        for f in frames:
            if f.image is None:
                on_error(f)
                continue
            chunk.append(f)
            if len(chunk) == batch:
                yield from self.run(chunk, limits)
                chunk = []
        if chunk:
            yield from self.run(chunk, limits)

    def predict(
        self,
        images,
        *,
        conf: float | None = Thresholds.conf,
        iou: float = Thresholds.iou,
        max_det: int = Thresholds.max_det,
        batch: int = 8,
        bgr: bool = False,
        value_range=None,
    ) -> list:
        """One result per input image. ``images``: a path, folder or glob, a PIL image, a
        numpy HxWx3 array (uint8 RGB; ``bgr=True`` for OpenCV frames; float with
        ``value_range`` (0, 1), (-1, 1) or (0, 255)), a torch CHW tensor, or a list of these.
        ``conf``: the minimum score (default: the model's measured threshold, :attr:`conf`).
        ``iou`` is the class-wise NMS threshold applied after the model's own. A file that
        does not decode raises; :meth:`stream` reports and skips it instead."""
        items = inputs.expand(images)

        def strict(f):
            raise DetforgeError(f"{f.source}: {f.error}", "remove or re-export the image")

        frames = (
            inputs.load_item(x, k, bgr=bgr, value_range=value_range) for k, x in enumerate(items)
        )
        return list(self._batches(frames, batch, strict, Thresholds(conf, iou, max_det)))

    def stream(
        self,
        source,
        *,
        conf: float | None = Thresholds.conf,
        iou: float = Thresholds.iou,
        max_det: int = Thresholds.max_det,
        batch: int = 4,
        bgr: bool = False,
        value_range=None,
        on_error=None,
    ) -> Iterator:
        """Yield results for a video file, a webcam (int index), a folder, a glob, a list, or
        an opened :class:`~detforge.engine.infer.inputs.Source`, decoding ahead on a thread
        while the model runs (at most a few batches in memory). A network stream (rtsp://,
        http(s)://) runs one frame at a time on the newest frame, dropping what it cannot
        keep up with, and reconnects when the stream drops. Unreadable images in a folder
        are passed to ``on_error(frame)`` (default: a warning) and skipped."""

        src = source if isinstance(source, inputs.Source) else inputs.Source(source)
        limits = Thresholds(conf, iou, max_det)
        yield from self._stream(src, limits, batch, on_error or _warn, bgr, value_range)

    def _stream(self, src, limits: Thresholds, batch: int, on_error, bgr=False, value_range=None):
        if src.live:  # a network stream: one frame at a time, the newest (bounded latency)
            batch = 1
        ahead = 1 if src.live else 2 * batch
        frames = inputs.prefetch(src.frames(bgr=bgr, value_range=value_range), ahead)
        yield from self._batches(frames, batch, on_error, limits)

    def track(
        self,
        source,
        *,
        conf: float | None = Thresholds.conf,
        iou: float = Thresholds.iou,
        max_det: int = Thresholds.max_det,
        batch: int = 4,
        fps: float | None = None,
        tracker: dict | None = None,
        bgr: bool = False,
        value_range=None,
        on_error=None,
    ) -> Iterator:
        """Like :meth:`stream`, with a persistent ``track_ids`` per box across frames
        (ByteTrack, see :class:`~detforge.engine.infer.tracking.Tracker`; ``tracker`` passes
        its options). ``conf`` is the score a box needs to start or lead a track (default:
        the model's threshold, :attr:`conf`); boxes down to ``TRACK_FLOOR`` (0.1) reach the
        tracker too and only continue tracks (ByteTrack's second association), so an object
        whose score dips for a few frames keeps its id. ``fps`` defaults to the video's (30
        for images and cameras that do not say)."""

        if self.task != "detect":
            raise DetforgeError(f"tracking needs a detector; this is a {self.task} model")
        src = source if isinstance(source, inputs.Source) else inputs.Source(source)
        if fps is None:
            fps = (src.video.fps if src.video is not None else 0) or 30.0
        start = self.conf if conf is None else float(conf)
        t = Tracker(fps, **{"start": start, **(tracker or {})})
        limits = Thresholds(min(start, TRACK_FLOOR), iou, max_det)
        for r in self._stream(src, limits, batch, on_error or _warn, bgr, value_range):
            yield t.update(r)


def _warn(frame) -> None:
    warnings.warn(f"skipped {frame.source}: {frame.error}", stacklevel=5)
