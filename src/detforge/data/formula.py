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

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from detforge.data.dataset import Dataset, Sample
from detforge.data.image import FileImage
from detforge.fileio import prepare_destination

DEFAULT_CLASSES = 256  # what the shipped det-n weights were pretrained on
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

    def __init__(self, n: int = DEFAULT_CLASSES, seed: int = 0, clutter: int = 16):
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
    """The shape transformed into scene pixels: (mask of the box's crop, integer box x0, y0,
    x1, y1 in the scene) or None when it falls outside. Drawn within the box only, so small
    objects cost little."""
    aspect = np.exp(rng.uniform(-0.4, 0.4))
    sx, sy = side * aspect**0.5, side / aspect**0.5
    t = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    p = ((shape - 0.5) * [sx, sy]) @ rot.T
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    p = p + [cx, cy]
    lo = np.maximum(np.floor(p.min(0)).astype(int) - 2, 0)
    hi = np.minimum(np.ceil(p.max(0)).astype(int) + 2, [w, h])
    if (hi <= lo).any():
        return None
    p = p - lo
    cw, ch = (hi - lo).tolist()
    if kind == "contour":
        mask = Image.new("L", (cw, ch), 0)
        ImageDraw.Draw(mask).polygon([tuple(q) for q in p], fill=255)
    else:
        xy = np.floor(p).astype(np.int64)
        keep = (xy[:, 0] >= 0) & (xy[:, 0] < cw) & (xy[:, 1] >= 0) & (xy[:, 1] < ch)
        m = np.zeros((ch, cw), np.uint8)
        m[xy[keep, 1], xy[keep, 0]] = 255
        mask = Image.fromarray(m)
        if side > 40:  # sparse points at large scales: thicken so the fractal reads as a shape
            mask = mask.filter(ImageFilter.MaxFilter(3))
    box = mask.getbbox()
    if box is None:
        return None
    x0, y0, x1, y1 = box
    return mask.crop(box), (x0 + int(lo[0]), y0 + int(lo[1]), x1 + int(lo[0]), y1 + int(lo[1]))


def _paint(img: Image.Image, mask: Image.Image, box, rng, blur: bool) -> None:
    """Fill the object's pixels (``mask``, the crop at ``box``) flat, with a gradient or a
    noise texture; ``blur`` softens its edges a little (its box stays the sharp one)."""
    pad = 3 if blur else 0
    if blur:
        padded = Image.new("L", (mask.width + 2 * pad, mask.height + 2 * pad), 0)
        padded.paste(mask, (pad, pad))
        mask = padded.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    w, h = mask.size
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
    img.paste(fill, (box[0] - pad, box[1] - pad), mask)


class FormulaScenes:
    """Scenes of formula objects: ``scene(i)`` -> (RGB uint8 HxWx3, boxes (N, 4) float32 xyxy,
    labels (N,) int64), the same for the same ``(seed, i)``. ``size`` is the scene's side;
    objects per scene 1 to ``max_objects`` (a third of them small: 6-24 px)."""

    def __init__(
        self, classes: int = DEFAULT_CLASSES, seed: int = 0, size: int = 320, max_objects: int = 12
    ):
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
                _paint(img, placed[0].point(lambda v: v // 3), placed[1], rng, blur=True)
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
            _paint(img, mask, box, rng, blur=rng.random() < 0.3)
            on = np.asarray(mask) > 127
            x0, y0, x1, y1 = box
            owner[y0:y1, x0:x1][on] = len(boxes)
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
                 classes: int | None = None, overwrite: bool = False):  # fmt: skip
    """Render scenes ``0..n-1`` to ``out`` in ``format`` (to look at them: ``data show``;
    pretraining makes its scenes on the fly instead) and return the Dataset read back."""
    import shutil

    from detforge.data import read, write

    out = prepare_destination(out, overwrite)
    tmp = Path(out).parent / f".{Path(out).name}.formula-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    scenes = FormulaScenes(classes or DEFAULT_CLASSES, seed, size)
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


# --- a training source: ``--data formula`` streams scenes instead of reading files --------

FORMULA = "formula"  # the data spec: ``formula`` or ``formula:classes=256,seed=0``
# scenes: new ones each epoch (an epoch only paces validation); val: fixed ones scored
FORMULA_DEFAULTS = {"classes": DEFAULT_CLASSES, "seed": 0, "scenes": 4096, "val": 128}
VAL_OFFSET = 1 << 40  # val scenes come from indices no epoch reaches


def is_formula(spec) -> bool:
    s = str(spec)
    return s == FORMULA or s.startswith(FORMULA + ":")


def parse_formula(spec) -> dict:
    """``formula:classes=256,seed=0`` -> ``{"classes": 256, "seed": 0}`` (defaults filled in);
    a bad option raises ValueError naming it."""
    out = dict(FORMULA_DEFAULTS)
    rest = str(spec)[len(FORMULA) + 1 :]
    for part in filter(None, rest.split(",")):
        key, _, value = part.partition("=")
        low = {"classes": 2, "seed": 0, "scenes": 1, "val": 1}.get(key)
        if low is None or not value.strip().isdigit() or int(value) < low:
            raise ValueError(
                f"bad option {part!r} in {spec!r}: use formula:classes=N,seed=S,scenes=N,val=N"
            )
        out[key] = int(value)
    return out


@lru_cache(maxsize=4)
def formula_scenes(classes: int, seed: int, size: int) -> FormulaScenes:
    """One FormulaScenes per process and setting (its classes take a moment to compute)."""
    return FormulaScenes(classes, seed, size)


@dataclass(frozen=True)
class SceneImage:
    """Scene ``index`` of ``FormulaScenes(classes, seed, size)`` as an image reference: read()
    renders it (PNG bytes); nothing is stored."""

    classes: int
    seed: int
    size: int
    index: int

    @property
    def path(self) -> Path:
        return Path(f"{FORMULA}-{self.classes}-{self.seed}") / f"scene_{self.index:013d}.png"

    @property
    def name(self) -> str:
        return self.path.name

    def pixels(self):
        return formula_scenes(self.classes, self.seed, self.size).scene(self.index)

    def read(self) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(self.pixels()[0]).save(buf, "PNG", compress_level=1)
        return buf.getvalue()

    def size_hint(self) -> int:
        return self.size * self.size * 3

    def exists(self) -> bool:
        return True


def formula_splits(spec, size: int):
    """(train, val) for ``--data formula``: train is a :class:`FormulaStream` of ``scenes``
    scenes rendered as they are trained on, different each epoch; val is a fixed set of
    ``val`` scenes (rendered once here for their boxes)."""

    opts = parse_formula(spec)
    scenes = formula_scenes(opts["classes"], opts["seed"], size)
    val = []
    for j in range(opts["val"]):
        ref = SceneImage(opts["classes"], opts["seed"], size, VAL_OFFSET + j)
        _, boxes, labels = ref.pixels()
        val.append(Sample(ref, size, size, boxes, labels))
    stream = FormulaStream(scenes, opts, opts["scenes"])
    return stream, Dataset(list(scenes.names), val, Path(FORMULA))


class FormulaStream:
    """The training side of ``--data formula``: what the training loop asks of a Dataset
    (classes, task, length, samples for BatchNorm statistics), with ``scenes`` to render from.
    Scene ``epoch * len + i`` is item ``i`` of an epoch (set by ``set_epoch``)."""

    task = "detect"

    def __init__(self, scenes: FormulaScenes, opts: dict, n: int):

        self.scenes, self.opts, self.classes = scenes, opts, list(scenes.names)
        self.root = Path(FORMULA)
        empty = np.zeros((0, 4), np.float32)
        self.samples = [
            Sample(
                SceneImage(opts["classes"], opts["seed"], scenes.size, i),
                scenes.size,
                scenes.size,
                empty,
                np.zeros(0, np.int64),
            )  # fmt: skip
            for i in range(n)
        ]

    def __len__(self) -> int:
        return len(self.samples)

    def subset(self, indices):

        return Dataset(self.classes, [self.samples[i] for i in indices], self.root)
