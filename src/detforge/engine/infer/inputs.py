"""Inputs for prediction: images, folders, globs, arrays and tensors, video files and webcams.

Everything becomes an RGB uint8 HxWx3 array here, at the edge, with its checks: a float array
must lie in its declared ``value_range``; a wrong shape or dtype is an error, never a guess.
Streams decode ahead on a thread into a bounded queue, so memory stays flat on long videos.
"""

from __future__ import annotations

import glob as globlib
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from detforge.data.image import IMAGE_EXTS, decode, find_images, to_rgb
from detforge.data.video import LiveSource, VideoSource, is_network, is_video
from detforge.errors import DetforgeError, ImageError

RANGES = {(0, 1): (0.0, 255.0), (-1, 1): (1.0, 127.5), (0, 255): (0.0, 1.0)}  # (x + a) * b


@dataclass
class Frame:
    """One decoded input: ``image`` RGB uint8 HxWx3, where it came from, and for video frames
    their index and time (s)."""

    image: np.ndarray | None
    source: str
    index: int = 0
    time: float | None = None
    error: str | None = None  # set (and image None) for an unreadable file in a folder
    hw: tuple[int, int] | None = None  # (height, width): the image's, or given without it

    def __post_init__(self):
        if self.hw is None and self.image is not None:
            self.hw = tuple(self.image.shape[:2])


def to_rgb8(x, *, bgr: bool = False, value_range=None, what: str = "input") -> np.ndarray:
    """One image (numpy HxWx3 / HxW, torch CHW, PIL) -> RGB uint8 HxWx3, checked."""
    if isinstance(x, Image.Image):
        return to_rgb(x)
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        if x.dim() == 3 and x.shape[0] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.permute(1, 2, 0)
        x = x.numpy()
    if not isinstance(x, np.ndarray):
        raise DetforgeError(
            f"{what}: cannot read a {type(x).__name__}",
            "pass paths, folders, globs, PIL images, numpy HxWx3 arrays or torch CHW tensors",
        )
    if x.ndim == 2:
        x = np.repeat(x[..., None], 3, axis=2)
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise DetforgeError(
            f"{what}: expected an image HxWx3 (or CHW tensor), got shape {x.shape}",
            "pass one image per item; a batch goes in as a list or a (B, H, W, 3) array",
        )
    if x.shape[2] == 1:
        x = np.repeat(x, 3, axis=2)
    elif x.shape[2] == 4:
        x = x[..., :3]
    x = _to_uint8(x, value_range, what)
    if bgr:
        x = x[..., ::-1]
    return np.ascontiguousarray(x)


def _to_uint8(x: np.ndarray, value_range, what: str) -> np.ndarray:
    if x.dtype == np.uint8:
        if value_range not in (None, (0, 255)):
            raise DetforgeError(
                f"{what}: uint8 image declared with value_range={value_range}",
                "uint8 images are 0-255; drop value_range",
            )
        return x
    if not np.issubdtype(x.dtype, np.floating):
        raise DetforgeError(
            f"{what}: unsupported dtype {x.dtype}", "pass uint8 (0-255) or float with value_range"
        )
    rng = tuple(value_range) if value_range is not None else (0, 1)
    if rng not in RANGES:
        raise DetforgeError(
            f"{what}: value_range {value_range} is not one of (0, 1), (-1, 1), (0, 255)"
        )
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    if not np.isfinite(x).all() or lo < rng[0] - 1e-3 or hi > rng[1] + 1e-3:
        guess = next((r for r in RANGES if lo >= r[0] - 1e-3 and hi <= r[1] + 1e-3), None)
        hint = f"pass value_range={guess}" if guess else "scale the image to 0-1 first"
        raise DetforgeError(
            f"{what}: float values span [{lo:.3g}, {hi:.3g}], outside value_range {rng}", hint
        )
    a, b = RANGES[rng]
    return np.clip(np.rint((x.astype(np.float32) + a) * b), 0, 255).astype(np.uint8)


def image_paths(spec) -> list[str]:
    """A path, folder or glob -> the image files it names (sorted), or a clear error."""
    s = str(spec)
    if any(c in s for c in "*?["):
        files = sorted(
            f for f in globlib.glob(s, recursive=True) if Path(f).suffix.lower() in IMAGE_EXTS
        )
        if not files:
            raise DetforgeError(f"{s}: the pattern matches no image", "check the glob")
        return files
    p = Path(s)
    if p.is_dir():
        files = find_images(p)
        if not files:
            raise DetforgeError(f"{p}: no images in this folder", f"images end in {IMAGE_EXTS}")
        return files
    if not p.exists():
        raise ImageError(p, "not found", "check the path")
    if is_video(p):
        raise DetforgeError(
            f"{p}: is a video", "use det.stream(path) (or `detforge predict --source`) for video"
        )
    return [str(p)]


def read_image(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        return decode(f.read(), path)


def expand(inputs) -> list:
    """Split ``inputs`` into items: a path string for each file, or an array per image."""
    if isinstance(inputs, (str, os.PathLike)):
        return image_paths(inputs)
    if isinstance(inputs, np.ndarray) and inputs.ndim == 4:
        return list(inputs)
    if type(inputs).__module__.startswith("torch") and inputs.dim() == 4:
        return list(inputs)
    if not isinstance(inputs, (list, tuple)):
        return [inputs]
    items = []
    for x in inputs:
        items += image_paths(x) if isinstance(x, (str, os.PathLike)) else [x]
    return items


def load_item(item, k: int, *, bgr: bool = False, value_range=None) -> Frame:
    """Decode one item of :func:`expand`; a path that fails to decode gives ``Frame.error``."""
    if isinstance(item, str):
        try:
            return Frame(read_image(item), item, k)
        except ImageError as e:
            reason = e.message.removeprefix(f"{item}: ")  # Frame.source names the file already
            return Frame(None, item, k, error=reason)
    return Frame(to_rgb8(item, bgr=bgr, value_range=value_range, what=f"input {k}"), f"#{k}", k)


class Source:
    """An input source parsed and opened once: a camera index or video file (``video`` is the
    opened :class:`~detforge.data.video.VideoSource`), a network stream
    (:class:`~detforge.data.video.LiveSource`: ``reconnect`` times after a drop, None for
    ever), or images (a path, folder, glob, list, arrays). ``total`` is the frame or image
    count (None when unknown)."""

    @property
    def live(self) -> bool:
        return getattr(self.video, "live", False)

    def __init__(self, spec, reconnect: int | None = None):
        self.spec = spec
        self.video: VideoSource | LiveSource | None = None
        self.items: list | None = None
        if isinstance(spec, str) and is_network(spec):
            self.video = LiveSource(spec, reconnect)  # newest frame only, reconnects
            self.name = self.video.name
            self.total = None
        elif isinstance(spec, (int, str, os.PathLike)) and is_video(spec):
            self.video = VideoSource(spec)
            self.name = self.video.name
            self.total = self.video.frames or None
        else:
            self.items = expand(spec)
            self.name = str(spec) if isinstance(spec, (str, os.PathLike)) else "inputs"
            self.total = len(self.items)

    def frames(self, *, bgr: bool = False, value_range=None) -> Iterator[Frame]:
        """Every frame or image, decoded (a file that does not decode: ``Frame.error``)."""
        if self.video is not None:
            for k, t, image in self.video.read():
                yield Frame(image, self.video.name, k, t)
            return
        for k, item in enumerate(self.items):
            yield load_item(item, k, bgr=bgr, value_range=value_range)


_END = object()


def prefetch(it: Iterator, size: int) -> Iterator:
    """Run ``it`` on a thread, at most ``size`` items ahead (bounded memory); errors re-raise
    in the consumer; closing the consumer stops the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, size))
    stop = threading.Event()

    def work():
        try:
            for x in it:
                while not stop.is_set():
                    try:
                        q.put(x, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(_END)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    t = threading.Thread(target=work, daemon=True, name="detforge-prefetch")
    t.start()
    try:
        while True:
            x = q.get()
            if x is _END:
                return
            if isinstance(x, BaseException):
                raise x
            yield x
    finally:
        stop.set()
        t.join(timeout=1.0)  # it stops at its next put; a blocked read is left to die (daemon)
