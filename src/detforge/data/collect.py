"""Save frames from a webcam (or a video file) as uniquely named JPEGs for labeling."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from detforge.data.video import open_capture
from detforge.errors import CameraError
from detforge.fileio import atomic_write_bytes


def collect(
    out,
    camera=0,
    count: int = 50,
    interval: float = 0.5,
    prefix: str = "frame",
    progress: bool = True,
) -> list[Path]:
    """Save ``count`` frames from ``camera`` to ``out``, one every ``interval`` seconds, named
    ``<prefix>_<time>_<id>.jpg`` so repeated sessions never overwrite each other."""
    import cv2
    from rich.progress import track

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cap = open_capture(camera)
    saved: list[Path] = []
    try:
        for _ in track(range(count), description="collecting", disable=not progress):
            ok, frame = cap.read()
            if not ok:
                if not saved:
                    raise CameraError(f"camera {camera} opened but returned no frame")
                break
            ok, jpg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 95])
            name = f"{prefix}_{time.strftime('%Y%m%d-%H%M%S')}_{uuid.uuid4().hex[:8]}.jpg"
            saved.append(atomic_write_bytes(out / name, jpg.tobytes()))
            if interval and len(saved) < count:
                time.sleep(interval)
    finally:
        cap.release()
    return saved
