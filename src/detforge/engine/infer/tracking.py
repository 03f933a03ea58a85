"""Multi-object tracking over a stream of detections: ByteTrack from ``supervision`` (MIT).

Each :class:`~detforge.engine.infer.results.Result` that passes through :class:`Tracker`
comes out with ``track_ids`` (one per kept box; boxes no track claimed are dropped, as
ByteTrack does) and ``trails`` (each visible id's recent box centres, for drawing). The
tracker holds only its tracks and those trails: memory stays flat on long videos.

supervision 0.26-0.30 ship ByteTrack (0.31 moved it to Roboflow's ``trackers`` package, which
requires the GUI ``opencv-python`` and would clash with the headless OpenCV detforge uses on
servers); the range is pinned in the ``track`` extra.
"""

from __future__ import annotations

import warnings
from collections import deque

import numpy as np

from detforge.engine.infer.results import Result, nms
from detforge.errors import DetforgeError, require
from detforge.models.base import FALLBACK_CONF


def import_supervision():
    """``supervision`` with its ByteTrack, or one line on how to install it."""
    message = "tracking needs supervision's ByteTrack (supervision >= 0.26, < 0.31)"
    install = "pip install 'detforge[track]' (or: pip install 'supervision>=0.26,<0.31')"
    supervision = require("supervision", message, install)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "deprecated since 0.28": we pin < 0.31
        if not hasattr(supervision, "ByteTrack"):  # present in 0.26-0.30
            raise DetforgeError(message, install)
    return supervision


# ByteTrack's second association matches boxes scored above 0.1 (and below ``start``) to the
# tracks the first one left unmatched; supervision's ByteTrack fixes that floor at 0.1.
TRACK_FLOOR = 0.1


class Tracker:
    """ByteTrack with detforge's defaults: a detection scored at least ``start`` (default: the
    fallback confidence; Predictor.track passes the model's own) leads a track, one 0.1 higher
    starts a new one, and lower ones down to ``TRACK_FLOOR`` continue tracks; a lost track is
    kept ``buffer`` frames (at 30 fps; scaled to the video's ``fps``) before its id is retired;
    ``match`` is the IoU a detection needs to continue a track. ``trail`` centres are kept per
    id for drawing. Boxes of different classes that overlap by ``same_object`` IoU or more are
    one object seen as two classes: only the higher-scored is kept, or the second would start
    a track of its own and steal the id."""

    def __init__(
        self,
        fps: float = 30.0,
        *,
        start: float = FALLBACK_CONF,
        buffer: int = 30,
        match: float = 0.8,
        trail: int = 30,
        same_object: float = 0.6,
    ):
        sv = import_supervision()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.byte_track = sv.ByteTrack(
                track_activation_threshold=start,
                lost_track_buffer=buffer,
                minimum_matching_threshold=match,
                frame_rate=max(1, round(fps or 30)),
                minimum_consecutive_frames=1,
            )
        self.detections = sv.Detections
        self.trail = trail
        self.same_object = same_object
        self.history: dict[int, deque] = {}
        self.last_seen: dict[int, int] = {}
        self.frame = 0
        self.forget_after = max(buffer, trail) * 2

    def update(self, r):
        """``r`` with ``track_ids`` and ``trails`` (a new Result; ``r`` is unchanged)."""

        one = nms(r.boxes, r.scores, np.zeros(len(r), np.int64), self.same_object)
        d = self.detections(
            xyxy=r.boxes[one].astype(np.float32).reshape(-1, 4),
            confidence=r.scores[one].astype(np.float32),
            class_id=r.labels[one].astype(int),
        )
        t = self.byte_track.update_with_detections(d)
        ids = np.asarray(t.tracker_id if t.tracker_id is not None else [], np.int64)
        self.frame += 1
        for tid, (x0, y0, x1, y1) in zip(ids.tolist(), t.xyxy.tolist()):
            self.history.setdefault(tid, deque(maxlen=self.trail)).append(
                ((x0 + x1) / 2, (y0 + y1) / 2)
            )
            self.last_seen[tid] = self.frame
        for tid in [k for k, f in self.last_seen.items() if self.frame - f > self.forget_after]:
            del self.last_seen[tid], self.history[tid]
        trails = {tid: list(self.history[tid]) for tid in ids.tolist()}
        scores = t.confidence if t.confidence is not None else np.zeros(len(ids), np.float32)
        labels = t.class_id if t.class_id is not None else np.zeros(len(ids), np.int64)
        return Result(t.xyxy, scores, labels, r.classes, r.image, r.source, r.index, r.time,
                      track_ids=ids, trails=trails)  # fmt: skip


def mot_lines(r) -> list[str]:
    """``r``'s tracked boxes as MOTChallenge rows: ``frame, id, x, y, w, h, score, -1, -1,
    -1`` (frames counted from 1)."""
    return [
        f"{r.index + 1},{int(t)},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{s:.5f},-1,-1,-1"
        for t, (x0, y0, x1, y1), s in zip(r.track_ids, r.boxes.tolist(), r.scores.tolist())
    ]
