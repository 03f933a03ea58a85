"""Formula-driven scenes for pretraining a detector on no real image (FDSL: Kataoka et al.,
"Pre-training without Natural Images", FractalDB; Baradad et al., "Learning to See by Looking
at Noise").

Each class is a formula's parameter set: the first half are iterated function systems (2-4
contractive affine maps, drawn by the chaos game), the second half closed Fourier contours
(``r(t) = 1 + sum_k a_k cos(k t + p_k)``). A class's canonical shape is computed once from
its parameters; each object is that shape scaled (6 px to 70% of the scene), stretched,
rotated, coloured (flat, gradient or noise texture), maybe blurred, and pasted over a
value-noise background with unlabeled clutter shapes, later objects occluding earlier ones.
An object's box is the extent of its own pixels before blur and occlusion (amodal), exact; an
object that later ones hide for more than three quarters is left unlabeled.

Scenes are made on the fly from ``(seed, index)``: the same pair always gives the same bytes,
nothing is stored. Torch-free.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IFS_POINTS = 6000  # chaos-game points of a canonical fractal (in the unit square)
CONTOUR_POINTS = 96


def _ifs_maps(rng: np.random.Generator) -> np.ndarray:
    """2-4 contractive affine maps ``(a, b, c, d, e, f)``: ``x' = [[a, b], [c, d]] x + [e, f]``."""
    while True:
        m = int(rng.integers(2, 5))
        maps = rng.uniform(-1, 1, (m, 6))
        ok = all(np.linalg.svd(mp[:4].reshape(2, 2), compute_uv=False)[0] < 0.9 for mp in maps)
        dets = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2])
        if ok and dets.sum() > 0.25:  # FractalDB's filling rule, loosely: not a thin line
            return maps


def _chaos_game(maps: np.ndarray, rng: np.random.Generator, n: int = IFS_POINTS) -> np.ndarray:
    """``n`` points of the fractal, normalized into the unit square."""
    dets = np.abs(maps[:, 0] * maps[:, 3] - maps[:, 1] * maps[:, 2]) + 1e-3
    walkers, steps = 200, max(n // 200, 1) + 12
    pts = rng.uniform(-1, 1, (walkers, 2))
    out = []
    for k in range(steps):
        idx = rng.choice(len(maps), walkers, p=dets / dets.sum())
        a, b, c, d, e, f = maps[idx].T
        pts = np.stack([a * pts[:, 0] + b * pts[:, 1] + e, c * pts[:, 0] + d * pts[:, 1] + f], 1)
        if k >= 12:  # the first steps have not reached the attractor yet
            out.append(pts)
    p = np.concatenate(out)[:n]
    lo, hi = p.min(0), p.max(0)
    return (p - lo) / np.maximum(hi - lo, 1e-9)


def _contour(rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, CONTOUR_POINTS, endpoint=False)
    r = np.ones_like(t)
    for k in range(1, int(rng.integers(3, 7))):
        r += rng.uniform(0, 0.6 / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    p = np.stack([r * np.cos(t), r * np.sin(t)], 1)
    lo, hi = p.min(0), p.max(0)
    return (p - lo) / np.maximum(hi - lo, 1e-9)


class FormulaClasses:
    """``n`` classes from ``seed``: ``shapes[k]`` is class k's canonical shape in the unit
    square (points of a fractal, or a contour polygon), ``kinds[k]`` ``ifs`` or ``contour``,
    ``names[k]`` e.g. ``ifs017``; ``clutter`` more shapes of neither list."""

    def __init__(self, n: int = 128, seed: int = 0, clutter: int = 16):
        rng = np.random.default_rng([seed, 7919])
        n_ifs = n // 2
        self.kinds = ["ifs"] * n_ifs + ["contour"] * (n - n_ifs)
        self.names = [f"{k}{i:03d}" for i, k in enumerate(self.kinds)]
        self.shapes = [
            _chaos_game(_ifs_maps(rng), rng) if k == "ifs" else _contour(rng) for k in self.kinds
        ]
        self.clutter = [
            (_chaos_game(_ifs_maps(rng), rng), "ifs") if i % 2 else (_contour(rng), "contour")
            for i in range(clutter)
        ]


def _noise_background(rng, w: int, h: int) -> Image.Image:
    """Value noise: random grids at three scales, upsampled and summed, in two colours."""
    acc = np.zeros((h, w), np.float32)
    for cells, weight in ((4, 1.0), (12, 0.5), (40, 0.25)):
        grid = rng.random((cells, cells)).astype(np.float32)
        up = Image.fromarray((grid * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        acc += weight * np.asarray(up, np.float32) / 255
    acc = (acc - acc.min()) / max(float(np.ptp(acc)), 1e-6)
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = c0 + acc[..., None] * (c1 - c0)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def _place(shape: np.ndarray, kind: str, rng, w: int, h: int, side: float):
    """The shape transformed into scene pixels: (mask image, integer box x0, y0, x1, y1) or
    None when it falls outside."""
    aspect = np.exp(rng.uniform(-0.4, 0.4))
    sx, sy = side * aspect**0.5, side / aspect**0.5
    t = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    p = ((shape - 0.5) * [sx, sy]) @ rot.T
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    p = p + [cx, cy]
    mask = Image.new("L", (w, h), 0)
    if kind == "contour":
        ImageDraw.Draw(mask).polygon([tuple(q) for q in p], fill=255)
    else:
        xy = np.floor(p).astype(np.int64)
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
        m = np.zeros((h, w), np.uint8)
        m[xy[keep, 1], xy[keep, 0]] = 255
        mask = Image.fromarray(m)
        if side > 40:  # sparse points at large scales: thicken so the fractal reads as a shape
            mask = mask.filter(ImageFilter.MaxFilter(3))
    box = mask.getbbox()
    if box is None:
        return None
    return mask, box


def _paint(img: Image.Image, mask: Image.Image, rng, blur: bool) -> None:
    w, h = img.size
    style = rng.integers(0, 3)
    c = rng.uniform(0, 255, 3)
    if style == 0:
        fill = Image.new("RGB", (w, h), tuple(int(v) for v in c))
    elif style == 1:  # a linear gradient to a second colour
        c2 = rng.uniform(0, 255, 3)
        ramp = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
        fill = Image.fromarray((c + ramp * (c2 - c)).repeat(h, 0).clip(0, 255).astype(np.uint8))
    else:  # noise texture around the colour
        noise = rng.normal(0, rng.uniform(10, 50), (h, w, 3))
        fill = Image.fromarray((c + noise).clip(0, 255).astype(np.uint8))
    if blur:
        mask = mask.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    img.paste(fill, (0, 0), mask)


class FormulaScenes:
    """Scenes of formula objects: ``scene(i)`` -> (RGB uint8 HxWx3, boxes (N, 4) float32 xyxy,
    labels (N,) int64), the same for the same ``(seed, i)``. ``size`` is the scene's side;
    objects per scene 1 to ``max_objects`` (a third of them small: 6-24 px)."""

    def __init__(self, classes: int = 128, seed: int = 0, size: int = 320, max_objects: int = 12):
        self.formulas = FormulaClasses(classes, seed)
        self.names = self.formulas.names
        self.seed, self.size, self.max_objects = seed, size, max_objects

    def scene(self, i: int):
        rng = np.random.default_rng([self.seed, int(i)])
        w = h = self.size
        img = _noise_background(rng, w, h)
        for _ in range(int(rng.integers(0, 4))):  # unlabeled clutter, faint and blurred
            shape, kind = self.formulas.clutter[int(rng.integers(len(self.formulas.clutter)))]
            placed = _place(shape, kind, rng, w, h, rng.uniform(0.1, 0.5) * w)
            if placed:
                _paint(img, placed[0].point(lambda v: v // 3), rng, blur=True)
        boxes, labels, areas = [], [], []
        owner = np.full((h, w), -1, np.int32)  # which object a pixel shows, for occlusion
        for _ in range(int(rng.integers(1, self.max_objects + 1))):
            k = int(rng.integers(len(self.names)))
            small = rng.random() < 1 / 3
            side = rng.uniform(6, 24) if small else rng.uniform(0.08, 0.7) * w
            placed = _place(self.formulas.shapes[k], self.formulas.kinds[k], rng, w, h, side)
            if placed is None:
                continue
            mask, box = placed
            _paint(img, mask, rng, blur=rng.random() < 0.3)
            on = np.asarray(mask) > 127
            owner[on] = len(boxes)
            boxes.append(box)
            labels.append(k)
            areas.append(int(on.sum()))
        seen = np.bincount(owner[owner >= 0], minlength=len(boxes))
        keep = [j for j in range(len(boxes)) if seen[j] >= 0.25 * max(areas[j], 1)]
        return (
            np.asarray(img),
            np.array([boxes[j] for j in keep], np.float32).reshape(-1, 4),
            np.array([labels[j] for j in keep], np.int64),
        )


def write_scenes(out, n: int = 64, format: str = "yolo", *, seed: int = 0, size: int = 320,
                 classes: int = 128, overwrite: bool = False):  # fmt: skip
    """Render scenes ``0..n-1`` to ``out`` in ``format`` (to look at them: ``data show``;
    pretraining makes its scenes on the fly instead) and return the Dataset read back."""
    import shutil
    from pathlib import Path

    from detforge.data import read, write
    from detforge.data.dataset import Dataset, Sample
    from detforge.data.image import FileImage
    from detforge.fileio import prepare_destination

    out = prepare_destination(out, overwrite)
    tmp = Path(out).parent / f".{Path(out).name}.formula-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scenes = FormulaScenes(classes, seed, size)
    try:
        samples = []
        for i in range(n):
            img, boxes, labels = scenes.scene(i)
            path = tmp / f"formula_{i:06d}.jpg"
            Image.fromarray(img).save(path, "JPEG", quality=92)
            samples.append(Sample(FileImage(path.resolve()), size, size, boxes, labels))
        write(Dataset(list(scenes.names), samples, tmp), out, format, overwrite=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read(out, format)
