"""CVAT for video 1.1: ``<track>`` elements of box keyframes, read into one sample a frame.

Between two keyframes of a track CVAT interpolates linearly; a box with ``outside="1"`` ends the
track until its next keyframe that is inside. The frames are those of the task
(``start_frame`` to ``stop_frame``, every ``step`` of ``frame_filter``), read from the frame
images CVAT exports with the annotations (``images/frame_000010.jpg``). Each box keeps its
track's id as the attribute ``track_id``, with the attributes of its keyframe.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from detforge.data import image as imageio
from detforge.data.dataset import Issue
from detforge.data.formats._common import OUTSIDE
from detforge.data.formats.cvat_shapes import Objects, shape_box
from detforge.errors import FormatError

FRAME_NAME = "frame_{:06d}"


def _task_frames(root, keyed: set[int]) -> list[int]:
    task = root.find("./meta/task")
    start = int(task.findtext("start_frame") or 0) if task is not None else 0
    stop = task.findtext("stop_frame") if task is not None else None
    step_txt = (task.findtext("frame_filter") or "") if task is not None else ""
    m = re.search(r"step\s*=\s*(\d+)", step_txt)
    step = int(m.group(1)) if m else 1
    stop = int(stop) if stop not in (None, "") else max(keyed, default=start)
    return list(range(start, stop + 1, step))


def _keyframes(track, xml: Path):
    """(frame, box or None when outside, element) per ``<box>`` of a track, in frame order."""
    out = []
    for el in track.iterfind("box"):
        try:
            frame = int(el.get("frame"))
        except (TypeError, ValueError):
            raise FormatError(xml, f"track {track.get('id')}: box without a frame number",
                              "export it from CVAT again") from None  # fmt: skip
        outside = el.get("outside", "0") in ("1", "true")
        box = None if outside else shape_box(el, xml, f"track {track.get('id')}, frame {frame}")
        out.append((frame, box, el))
    return sorted(out, key=lambda k: k[0])


def boxes_at(keys, frames: list[int]) -> dict[int, tuple[np.ndarray, object]]:
    """{frame: (box, keyframe element)} of one track on ``frames``: a keyframe's box on its
    frame, linear interpolation between two keyframes that are both inside, nothing after an
    outside keyframe until the next inside one, nothing after the last keyframe (CVAT keeps
    a track's last box shown to the task's end only when it is not outside; so do we)."""
    out = {}
    for k, (frame, box, el) in enumerate(keys):
        if box is None:
            continue
        nxt = keys[k + 1] if k + 1 < len(keys) else None
        end = nxt[0] if nxt else max(frames, default=frame) + 1
        for f in frames:
            if frame <= f < end:
                if nxt is not None and nxt[1] is not None:
                    t = (f - frame) / (nxt[0] - frame)
                    out[f] = (box + t * (nxt[1] - box), el)
                else:
                    out[f] = (box, el)
    return out


def _frame_image(xml: Path, frame: int, images, within, issues):
    folders = ([images] if images else []) + [xml.parent / "images", xml.parent]
    stem = FRAME_NAME.format(frame)
    cands = [f / (stem + e) for f in folders for e in (".jpg", ".png", ".jpeg", ".PNG", ".JPG")]
    return within.pick(cands, xml, stem, issues)


def read_tracks(root, xml: Path, index, images, within) -> tuple[list, list]:
    tracks = list(root.iterfind("track"))
    keys = {t: _keyframes(t, xml) for t in tracks}
    keyed = {f for k in keys.values() for f, _, _ in k}
    frames = _task_frames(root, keyed)
    per_frame: dict[int, Objects] = {f: Objects() for f in frames}
    skipped = 0
    for t in tracks:
        if not keys[t]:
            skipped += 1  # a track of polylines, points or skeletons: no box
            continue
        label = (t.get("label") or "").strip()
        if not label:
            skipped += 1
            continue
        track_id = (t.get("id") or "").strip()
        extra = {"track_id": track_id} if track_id else {}
        for f, (box, el) in boxes_at(keys[t], frames).items():
            per_frame[f].add(el, box, index, label, **extra)
    issues: list[Issue] = []
    if skipped:
        issues.append(
            Issue(
                str(xml),
                "skipped_shape",
                f"{skipped} tracks without a label or a box skipped",
                "info",
            )
        )
    samples, missing = [], []
    for f in frames:
        ref = _frame_image(xml, f, images, within, issues)
        if ref is None:
            missing.append(f)
            continue
        if ref == OUTSIDE:
            continue
        try:
            w, h, _ = imageio.file_info(ref)
        except Exception as e:  # noqa: BLE001 - one unreadable frame is reported, not fatal
            issues.append(Issue(str(ref), "unreadable_image", f"{e}: frame left out", "error"))
            continue
        samples.append(per_frame[f].sample(imageio.FileImage(Path(ref).absolute()), w, h))
    if missing:
        issues.append(
            Issue(
                str(xml),
                "missing_image",
                f"{len(missing)} frames have no image ({FRAME_NAME.format(missing[0])}"
                ".jpg first): export the task from CVAT with images (Save images), "
                "or extract the frames into images/ as frame_NNNNNN.jpg",
                "error",
            )
        )
    return samples, issues
