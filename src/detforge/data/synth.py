"""A deterministic synthetic shapes dataset for tests, benchmarks and the demo.

Three classes (circle, square, triangle) on textured backgrounds, from small to large, some
overlapping, about one image in eight a negative. The same seed gives the same bytes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from detforge.boxes import iou
from detforge.data.dataset import Dataset, Sample
from detforge.data.formats import folders
from detforge.data.image import FileImage
from detforge.fileio import atomic_write_text, prepare_destination

CLASSES = ["circle", "square", "triangle"]


def _background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    grad = rng.uniform(-0.25, 0.25, (2, 3))
    img = base + xx[..., None] * grad[0] + yy[..., None] * grad[1]
    period = rng.uniform(6, 40)
    angle = rng.uniform(0, np.pi)
    stripes = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    img += stripes[..., None] * rng.uniform(5, 25)
    img += rng.normal(0, rng.uniform(3, 12), (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


SCALES = ((0.05, 0.12), (0.12, 0.3), (0.3, 0.6))  # small, medium, large: side / image side
CLASSIFY_SCALES = ((0.35, 0.8),)  # one shape that fills much of the image, as in photo sets


def _place(rng, w, h, boxes, scales=SCALES) -> list[int] | None:
    for _ in range(20):
        side = int(min(w, h) * rng.choice([rng.uniform(lo, hi) for lo, hi in scales]))
        side = max(side, 8)
        bw = int(side * rng.uniform(0.8, 1.25)) if rng.random() < 0.5 else side
        x0, y0 = int(rng.integers(0, max(1, w - bw))), int(rng.integers(0, max(1, h - side)))
        box = [x0, y0, x0 + bw, y0 + side]
        if not boxes or iou(np.array([box], np.float32), np.array(boxes, np.float32)).max() < 0.35:
            return box
    return None


def render(
    rng: np.random.Generator,
    w: int,
    h: int,
    n_objects: int,
    single_class: int | None = None,
    scales=SCALES,
):
    """One image with ``n_objects`` shapes -> (PIL image, boxes (N, 4) xyxy, labels (N,))."""
    img = _background(rng, w, h)
    draw = ImageDraw.Draw(img)
    boxes, labels = [], []
    for _ in range(n_objects):
        box = _place(rng, w, h, boxes, scales)
        if box is not None:
            cls = int(rng.integers(0, len(CLASSES))) if single_class is None else single_class
            if cls == 0:  # circles are round: square box
                s = min(box[2] - box[0], box[3] - box[1])
                box = [box[0], box[1], box[0] + s, box[1] + s]
            boxes.append(box)
            labels.append(cls)
    order = sorted(
        range(len(boxes)), key=lambda k: -(boxes[k][2] - boxes[k][0]) * (boxes[k][3] - boxes[k][1])
    )
    boxes, labels = [boxes[k] for k in order], [labels[k] for k in order]
    for box, cls in zip(boxes, labels):  # largest first: small shapes stay visible
        _shape(draw, box, cls, tuple(int(c) for c in rng.integers(0, 256, 3)))
    return img, np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64)


def _shape(draw: ImageDraw.ImageDraw, box, cls: int, color) -> None:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    if cls == 0:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=color, outline=(0, 0, 0))
    elif cls == 1:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=color, outline=(255, 255, 255))
    else:
        draw.polygon(
            [((x0 + x1 - 1) // 2, y0), (x0, y1 - 1), (x1 - 1, y1 - 1)],
            fill=color,
            outline=(0, 0, 0),
        )


def video(path, frames: int = 150, size=(320, 240), fps: float = 25.0, seed: int = 0):
    """An mp4 of shapes moving over a textured background (for the demo, tests and the video
    benchmark). Returns ``(path, boxes per frame, labels)``."""
    import cv2

    rng = np.random.default_rng(seed)
    w, h = size
    bg = _background(rng, w, h)
    n = 3
    side = rng.uniform(0.15, 0.3, n) * min(w, h)
    pos = rng.uniform(0, 1, (n, 2)) * [w - side.max(), h - side.max()]
    vel = rng.uniform(-3, 3, (n, 2))
    colors = [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(n)]
    labels = np.arange(n) % len(CLASSES)
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    all_boxes = []
    for _ in range(frames):
        img = bg.copy()
        draw = ImageDraw.Draw(img)
        boxes = np.concatenate([pos, pos + side[:, None]], 1)
        for box, cls, color in zip(boxes, labels, colors):
            _shape(draw, box, int(cls), color)
        all_boxes.append(boxes.astype(np.float32))
        out.write(np.asarray(img)[..., ::-1].copy())
        pos += vel
        for k in range(n):  # bounce off the borders
            for d, lim in enumerate((w, h)):
                if pos[k, d] < 0 or pos[k, d] + side[k] > lim:
                    vel[k, d] *= -1
                    pos[k, d] = np.clip(pos[k, d], 0, lim - side[k])
    out.release()
    tmp.replace(path)
    return path, all_boxes, labels


def _smooth_background(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """A colour gradient with light noise: what a tracking clip's shapes move over (the
    striped backgrounds of the image sets make detection, not tracking, the hard part)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = rng.uniform(60, 190, 3) + xx[..., None] * rng.uniform(-0.2, 0.2, 3) / w * 255
    img = img + yy[..., None] * rng.uniform(-0.2, 0.2, 3) / h * 255 + rng.normal(0, 4, (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def moving_shapes(
    frames: int, size=(320, 240), seed: int = 0, objects: int = 6, scene: int | None = None
):
    """Frames of ``objects`` shapes with known identities, for tracking: they move at steady
    speeds and bounce off the borders, pass in front of each other (a later one hides an
    earlier one), and some appear after the start or leave before the end. Yields, per
    frame, the PIL image and its objects as ``(id from 1, xyxy box, class, visibility)``
    where visibility is the box's unhidden fraction. ``scene`` seeds the background (default
    ``seed``): clips of one scene are one fixed camera's footage of other objects."""
    rng = np.random.default_rng(seed)
    w, h = size
    bg = _smooth_background(np.random.default_rng([7, seed if scene is None else scene]), w, h)
    side = rng.uniform(0.14, 0.26, objects) * min(w, h)
    aspect = np.where(rng.random(objects) < 0.5, 1.0, rng.uniform(0.75, 1.3, objects))
    wh = np.stack([side * aspect, side], 1)
    labels = rng.integers(0, len(CLASSES), objects)
    wh[labels == 0] = wh[labels == 0].min(1, keepdims=True)  # circles are round
    pos = rng.uniform(0, 1, (objects, 2)) * ([w, h] - wh)
    speed, angle = rng.uniform(1.0, 3.5, objects), rng.uniform(0, 2 * np.pi, objects)
    vel = np.stack([np.cos(angle), np.sin(angle)], 1) * speed[:, None]
    colors = [tuple(int(c) for c in rng.integers(30, 256, 3)) for _ in range(objects)]
    late = rng.integers(0, max(1, frames // 2), objects)
    start = np.where(np.arange(objects) < (objects + 1) // 2, 0, late)
    end = np.where(
        rng.random(objects) < 0.3, rng.integers(frames // 2, frames + 1, objects), frames
    )
    for t in range(frames):
        img = bg.copy()
        draw = ImageDraw.Draw(img)
        live = [k for k in range(objects) if start[k] <= t < end[k]]
        boxes = {k: np.concatenate([pos[k], pos[k] + wh[k]]) for k in live}
        for k in live:
            _shape(draw, boxes[k], int(labels[k]), colors[k])
        covered = np.zeros((h, w), bool)
        shown = []
        for k in reversed(live):  # the last drawn is on top
            x0, y0, x1, y1 = np.rint(boxes[k]).astype(int)
            region = covered[y0:y1, x0:x1]
            visible = 1.0 - (float(region.mean()) if region.size else 0.0)
            region[:] = True
            shown.append((k + 1, boxes[k].astype(np.float32), int(labels[k]), visible))
        yield img, sorted(shown, key=lambda o: o[0])
        pos += vel
        vel[(pos < 0) | (pos + wh > [w, h])] *= -1
        pos[:] = np.clip(pos, 0, [w, h] - wh)


def track_video(
    out,
    frames: int = 150,
    size=(320, 240),
    fps: float = 25.0,
    seed: int = 0,
    objects: int = 6,
    scene: int | None = None,
) -> tuple[Path, Path]:
    """:func:`moving_shapes` as ``out/video.mp4`` and its MOTChallenge ground truth
    ``out/gt.txt`` (frame from 1, id, x, y, w, h, conf, class from 1, visibility; conf is 0,
    MOTChallenge's "ignore", for an object less than 10% visible); returns both paths."""
    import cv2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    video, gt, tmp = out / "video.mp4", out / "gt.txt", out / ".video.tmp.mp4"
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, tuple(size))
    lines = []
    for t, (img, shown) in enumerate(moving_shapes(frames, size, seed, objects, scene)):
        for tid, (x0, y0, x1, y1), cls, vis in shown:
            keep = int(vis >= 0.1)  # 0 marks a hidden object: "ignore", as MOTChallenge does
            lines.append(f"{t + 1},{tid},{x0:.2f},{y0:.2f},{x1 - x0:.2f},{y1 - y0:.2f},{keep},"
                         f"{cls + 1},{vis:.3f}")  # fmt: skip
        writer.write(np.asarray(img)[..., ::-1].copy())
    writer.release()
    tmp.replace(video)
    atomic_write_text(gt, "\n".join(lines) + "\n")
    return video, gt


def track_frames(
    folder,
    videos: int = 4,
    frames: int = 200,
    every: int = 5,
    seed: int = 100,
    size=(320, 240),
    objects: int = 6,
    scene: int | None = None,
) -> Dataset:
    """A detection dataset of every ``every``-th frame of ``videos`` clips (seeds ``seed``,
    ``seed + 1``, ...: other objects and motions than a clip a test tracks on; with ``scene``,
    the same background as that clip, as a fixed camera's other footage): JPEGs in
    ``folder``, boxes of the objects at least a quarter visible."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for v in range(videos):
        clip = moving_shapes(frames, size, seed + v, objects, scene)
        for t, (img, shown) in enumerate(clip):
            if t % every:
                continue
            path = folder / f"v{v}_{t:04d}.jpg"
            img.save(path, "JPEG", quality=90)
            kept = [o for o in shown if o[3] >= 0.25]
            boxes = np.array([o[1] for o in kept], np.float32).reshape(-1, 4)
            labels = np.array([o[2] for o in kept], np.int64)
            samples.append(Sample(FileImage(path.resolve()), size[0], size[1], boxes, labels))
    return Dataset(list(CLASSES), samples, folder, task="detect", format="synth")


def generate(
    folder,
    n: int = 100,
    *,
    seed: int = 0,
    size=(320, 320),
    task: str = "detect",
    negatives: float = 0.125,
    max_objects: int = 4,
    scales=None,
) -> Dataset:
    """Render ``n`` JPEG images into ``folder`` and return their Dataset.

    ``size`` is the largest (width, height); images vary between 60% and 100% of it. Object
    sides are drawn from one of the ``scales`` ranges (fractions of the image side; default
    ``SCALES``, for classification ``CLASSIFY_SCALES``).
    """
    scales = scales or (CLASSIFY_SCALES if task == "classify" else SCALES)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        w = int(size[0] * rng.uniform(0.6, 1.0))
        h = int(size[1] * rng.uniform(0.6, 1.0))
        if task == "classify":
            cls = i % len(CLASSES)
            img, boxes, labels = render(rng, w, h, 1, single_class=cls, scales=scales)
        else:
            k = 0 if rng.random() < negatives else int(rng.integers(1, max_objects + 1))
            img, boxes, labels = render(rng, w, h, k, scales=scales)
        path = folder / f"synth_{i:06d}.jpg"
        img.save(path, "JPEG", quality=90)
        s = Sample(
            FileImage(path.resolve()),
            w,
            h,
            boxes,
            labels,
            category=int(labels[0]) if task == "classify" else None,
        )
        samples.append(s.select(slice(0, 0)) if task == "classify" else s)
    return Dataset(list(CLASSES), samples, folder, task=task, format="synth")


def synth(
    out,
    n: int = 100,
    format: str = "yolo",
    *,
    seed: int = 0,
    size=(320, 320),
    overwrite: bool = False,
    **opts,
) -> Dataset:
    """Write a synthetic dataset to ``out`` in ``format`` and return it as read back."""
    from detforge.data import read, write

    out = prepare_destination(out, overwrite)
    tmp = out.parent / f".{out.name}.synth-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        task = "classify" if format == "folders" else "detect"
        ds = generate(tmp, n, seed=seed, size=size, task=task, **opts)
        write(ds, out, format, images="link", overwrite=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read(out, format)


def classify_folders(dst, n: int = 90, size=(64, 64), seed: int = 0, sizes: bool = False):
    """A class-per-folder dataset: one shape per image, its folder names its class. With
    ``sizes``, image sizes vary (a classifier must resize, never crash). Returns the Dataset."""

    rng = np.random.default_rng(seed)
    dst = Path(dst)
    for c in CLASSES:
        (dst / c).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        cls = i % len(CLASSES)
        w, h = size
        if sizes:
            w, h = int(w * rng.uniform(0.6, 1.6)), int(h * rng.uniform(0.6, 1.6))
        img, _, _ = render(rng, w, h, 1, single_class=cls, scales=CLASSIFY_SCALES)
        img.save(dst / CLASSES[cls] / f"{i:05d}.png")
    return folders.read(dst)


TEXTURES = ["stripes", "checks", "dots"]


def texture(rng: np.random.Generator, kind: str, size: int = 96) -> Image.Image:
    """A texture whose kind is its class: stripes (across or down), axis-aligned checks or a
    grid of dots, at a period of 6-16 px with a random phase, in two random colours, with
    Gaussian pixel noise of sigma 20. The classes share periods and colours: only the
    pattern tells them apart (a crop that rescales it changes what the model must learn)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.choice([0, np.pi / 2])  # stripes run across or down; the grids stay axis-aligned
    period = rng.uniform(6, 16)
    u = (xx * np.cos(a) + yy * np.sin(a)) / period + rng.uniform(0, 1)
    v = (-xx * np.sin(a) + yy * np.cos(a)) / period + rng.uniform(0, 1)
    if kind == "stripes":
        mask = u % 1 < 0.5
    elif kind == "checks":
        mask = (np.floor(u) + np.floor(v)) % 2 == 0
    else:  # a dot of radius 0.25-0.35 periods at every lattice point
        mask = (u % 1 - 0.5) ** 2 + (v % 1 - 0.5) ** 2 < rng.uniform(0.06, 0.12)
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    img = np.where(mask[..., None], c1, c0).astype(np.float32)
    img += rng.normal(0, 20, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def texture_folders(dst, per_class: int = 60, held_out: int = 20, size: int = 96, seed: int = 0):
    """``dst/train/<kind>``: ``per_class`` textures a kind; ``dst/test/<kind>``: ``held_out``
    more, for a score neither training nor epoch choice saw. Returns ``dst``."""
    rng = np.random.default_rng(seed)
    dst = Path(dst)
    for split, n in (("train", per_class), ("test", held_out)):
        for kind in TEXTURES:
            (dst / split / kind).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                texture(rng, kind, size).save(dst / split / kind / f"{i:04d}.png")
    return dst
