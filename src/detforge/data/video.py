"""Cameras and video files: parse a source once, open it once (OpenCV), read its properties
and frames. Used by ``data collect`` and by prediction on video and webcams."""

from __future__ import annotations

import os
import threading
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


NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
IMAGE_URL_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")


def is_network(source) -> bool:
    """A live network stream: rtsp://, rtmp://, udp://, ... or an http(s) URL that does not
    name a single image."""
    if not isinstance(source, str) or "://" not in source:
        return False
    scheme, rest = source.split("://", 1)
    if scheme.lower() not in NETWORK_SCHEMES:
        return False
    path = rest.split("?", 1)[0].lower()
    return not (scheme.lower().startswith("http") and path.endswith(IMAGE_URL_EXTS))


def redact(url: str) -> str:
    """``url`` with its password (and any ``password`` / ``token`` / ``key`` query value)
    replaced by ``***``: what may be printed or written to a run folder."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        u = urlsplit(url)
    except ValueError:
        return "<stream>"
    netloc = u.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = (user.split(":", 1)[0] + ":***" if ":" in user else user) + "@" + host
    query = urlencode(
        [(k, "***" if k.lower() in ("password", "pass", "pwd", "token", "key", "auth") else v)
         for k, v in parse_qsl(u.query, keep_blank_values=True)]
    )  # fmt: skip
    return urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def is_video(source) -> bool:
    """A camera index, a path with a video extension, or a network stream."""
    src = parse_source(source)
    if isinstance(src, str) and is_network(src):
        return True
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


class LiveSource:
    """A network stream (``rtsp://``, ``http(s)://`` MJPEG or video, ...) read by OpenCV's
    FFmpeg backend on a thread of its own that keeps only the newest frame: when inference
    falls behind, older frames are dropped (counted), never queued, so latency stays bounded.
    When the stream drops or stalls (no frame for ``stall_s``), it reconnects with backoff
    (0.5 s doubling to 8 s), ``reconnect`` times (None: forever). ``stats``: frames
    received, handed on (``processed``), dropped, reconnects, and ``gap_s``, the seconds
    without frames around the drops (last frame before to first after). ``name`` has any password
    masked (:func:`redact`)."""

    live = True

    def __init__(self, url: str, reconnect: int | None = None, stall_s: float = 10.0):
        self.url, self.name = url, redact(url)
        self.reconnect, self.stall_s = reconnect, stall_s
        self.stats = {"received": 0, "processed": 0, "dropped": 0, "reconnects": 0, "gap_s": 0.0}
        self.cap = self._open()
        if self.cap is None:
            raise CameraError(
                f"could not open the stream {self.name}",
                "check the URL, the camera's address and credentials, and that it is on",
            )
        self._info()
        self.frames = 0  # unknown: live
        self.time_base = None
        self._cond = threading.Condition()
        self._latest = None
        self._ended = False
        self._stop = threading.Event()
        self._thread = None

    def _open(self):
        import cv2

        ms = int(self.stall_s * 1000)
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def _info(self) -> None:
        import cv2

        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 30.0
        self.width = int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT))

    def info(self) -> dict:
        return {"fps": self.fps, "width": self.width, "height": self.height, "frames": 0}

    def _work(self) -> None:
        import time

        start, tries, wait = self._start, 0, 0.5
        last, dropped_out = start, False  # the newest frame's arrival; a drop since then
        while not self._stop.is_set():
            ok, frame = self.cap.read() if self.cap is not None else (False, None)
            if ok:
                tries, wait, now = 0, 0.5, time.monotonic()
                if dropped_out:  # the gap: from the last frame before the drop to this one
                    self.stats["gap_s"] = round(self.stats["gap_s"] + now - last, 3)
                last, dropped_out = now, False
                with self._cond:
                    if self._latest is not None:
                        self.stats["dropped"] += 1  # never handed on: inference was behind
                    self.stats["received"] += 1
                    k = self.stats["received"] - 1
                    self._latest = (k, now - start, frame)
                    self._cond.notify()
                continue
            if self.cap is not None:
                self.cap.release()
                self.cap = None
            dropped_out = True
            if self.reconnect is not None and tries >= self.reconnect:
                break
            tries += 1
            if self._stop.wait(wait):
                break
            wait = min(wait * 2, 8.0)
            self.cap = self._open()
            if self.cap is not None:
                self.stats["reconnects"] += 1
        with self._cond:
            self._ended = True
            self._cond.notify()

    def read(self) -> Iterator[tuple[int, float | None, np.ndarray]]:
        """The newest frame each time it is asked for: (index, seconds since the stream
        opened, RGB). On exit ``stats`` also holds the delay from a frame's arrival to its
        result being done (the next ask), p50 and p99 in ms."""
        import collections
        import time

        latency: collections.deque = collections.deque(maxlen=100_000)
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._work, daemon=True, name="detforge-live")
        self._thread.start()
        try:
            while True:
                with self._cond:
                    while self._latest is None and not self._ended:
                        self._cond.wait(0.5)
                    if self._latest is None:
                        return
                    k, t, frame = self._latest
                    self._latest = None
                    self.stats["processed"] += 1
                yield k, t, np.ascontiguousarray(frame[..., ::-1])
                # back here when the frame's result is done: its delay since it arrived
                latency.append(time.monotonic() - self._start - t)
        finally:
            if latency:
                ms = np.percentile(np.array(latency) * 1000, [50, 99])
                self.stats["latency_ms_p50"], self.stats["latency_ms_p99"] = (
                    round(float(ms[0]), 1), round(float(ms[1]), 1))  # fmt: skip
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2 * self.stall_s)
        if self.cap is not None:
            self.cap.release()
            self.cap = None
