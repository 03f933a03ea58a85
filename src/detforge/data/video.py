"""Cameras and video files: parse a source once, open it once (OpenCV), read its properties
and frames. Used by ``data collect`` and by prediction on video and webcams."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from detforge.errors import CameraError

VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


def parse_source(source) -> int | str:
    """A camera index (``0``, ``"1"``) as int; anything else as a path string."""
    if isinstance(source, bool):
        raise CameraError(f"not a source: {source!r}", "pass a camera index or a path")
    if isinstance(source, int):
        return source
    s = os.fspath(source) if isinstance(source, os.PathLike) else str(source)
    return int(s) if s.isdigit() else s


def is_video(source) -> bool:
    """A camera index, or a path with a video extension."""
    src = parse_source(source)
    return isinstance(src, int) or Path(src).suffix.lower() in VIDEO_EXTS


def open_capture(source):
    """An opened ``cv2.VideoCapture`` for a camera index or a video path, else CameraError."""
    import cv2

    src = parse_source(source)
    if isinstance(src, str) and not Path(src).exists():
        raise CameraError(f"{src}: video not found", "check the path")
    cap = cv2.VideoCapture(src)
    if not cap.isOpened():
        cap.release()
        if isinstance(src, int):
            raise CameraError(
                f"could not open camera {src}",
                "check that a camera is connected and not used by another program, or try "
                "another index (--camera 1)",
            )
        raise CameraError(f"could not open video {src}", "check the path and codec")
    return cap


class VideoSource:
    """One opened camera or video: ``name``, ``fps``, ``width``, ``height``, ``frames`` (0
    when unknown), and :meth:`read` to iterate ``(index, time or None, RGB uint8 frame)``.
    The capture is opened once, here, and released when reading ends."""

    def __init__(self, source):
        import cv2

        self.source = parse_source(source)
        self.name = f"camera{self.source}" if isinstance(self.source, int) else self.source
        self.cap = open_capture(self.source)
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.time_base = fps if fps > 0 else None
        self.fps = fps if fps > 0 else 30.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.frames = max(int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)

    def info(self) -> dict:
        return {"fps": self.fps, "width": self.width, "height": self.height, "frames": self.frames}

    def read(self) -> Iterator[tuple[int, float | None, np.ndarray]]:
        k = 0
        try:
            while True:
                ok, frame = self.cap.read()
                if not ok:
                    if k == 0:
                        raise CameraError(
                            f"{self.name}: opened but no frame could be read",
                            "check the camera or re-encode the video (e.g. ffmpeg -i in out.mp4)",
                        )
                    return
                t = k / self.time_base if self.time_base else None
                yield k, t, np.ascontiguousarray(frame[..., ::-1])
                k += 1
        finally:
            self.close()

    def close(self) -> None:
        self.cap.release()
