"""The labeling loop: which unlabeled images are worth a person's time next.

Each image is scored by how unsure the model is about it (``uncertainty``, 0 to 2):

* **disagreement under a flip**: the model runs on the image and on its mirror image; the
  boxes at the model's threshold are matched (same class, IoU >= 0.5, mirrored back) and
  ``1 - F1`` of that match counts (0 when both agree, 1 when they share nothing; 0 when
  neither finds anything);
* **borderline boxes**: each box scored within 0.2 of the threshold counts
  ``1 - |score - threshold| / 0.2``; their sum ``b`` adds ``b / (1 + b)``.

Diversity: each image also gets a small appearance vector (its 8x8 colour thumbnail, centred
and scaled to unit length). Among the ``10 n`` most uncertain images, ``n`` are taken greedily:
each pick maximizes ``uncertainty x min(1, distance to the nearest image picked / 0.5)`` (0.5:
thumbnails whose cosine similarity is 0.875; frames of one scene sit well under it), so a
second frame of the same scene is worth little until the other scenes run out. Ties break by
a seeded order; an image is never picked twice.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from detforge.data.dataset import Sample
from detforge.data.formats._common import unique_names
from detforge.data.formats.labelme import to_json
from detforge.data.image import FileImage
from detforge.engine.infer.preannotations import Preannotations
from detforge.fileio import atomic_write_json, place_image, prepare_destination, refuse_overlap

BAND = 0.2  # how close to the threshold a score counts as borderline
POOL = 10  # candidates considered per image asked for
SAME_SCENE = 0.5  # thumbnail distance from which a pick counts in full
LOW_CONF = 0.05  # boxes below this are not looked at


def _pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def flip_disagreement(r, r_flip, conf: float) -> float:
    """``1 - F1`` between the boxes of ``r`` and those of ``r_flip`` (predicted on the mirror
    image, mirrored back here) at ``conf``: class-aware greedy matching at IoU 0.5."""
    a = r.scores >= conf
    b = r_flip.scores >= conf
    boxes_a, labels_a = r.boxes[a], r.labels[a]
    boxes_b, labels_b = r_flip.boxes[b].copy(), r_flip.labels[b]
    if not len(boxes_a) and not len(boxes_b):
        return 0.0
    if not len(boxes_a) or not len(boxes_b):
        return 1.0
    w = r_flip.shape[1]
    boxes_b[:, [0, 2]] = w - boxes_b[:, [2, 0]]
    iou = _pair_iou(boxes_a, boxes_b) * (labels_a[:, None] == labels_b[None, :])
    taken = np.zeros(len(boxes_b), bool)
    hits = 0
    for i in np.argsort(-r.scores[a], kind="stable"):
        cand = np.where(taken, -1.0, iou[i])
        j = int(cand.argmax())
        if cand[j] >= 0.5:
            taken[j] = True
            hits += 1
    return 1.0 - 2 * hits / (len(boxes_a) + len(boxes_b))


def borderline(scores: np.ndarray, conf: float) -> float:
    b = float(np.clip(1 - np.abs(np.asarray(scores) - conf) / BAND, 0, None).sum())
    return b / (1 + b)


def appearance(image: np.ndarray) -> np.ndarray:
    """A unit-length vector of the image's 8x8 colour thumbnail, mean removed."""
    small = np.asarray(Image.fromarray(image).resize((8, 8), Image.BILINEAR), np.float32)
    v = (small - small.mean()).reshape(-1)
    return v / max(float(np.linalg.norm(v)), 1e-6)


class Kept:
    """What a chosen image's pre-annotations need of its prediction (not the pixels)."""

    def __init__(self, r, conf: float):
        keep = r.scores >= conf
        self.source, self.shape = str(r.source), r.shape
        self.boxes, self.scores, self.labels = r.boxes[keep], r.scores[keep], r.labels[keep]


def score_images(det, source, batch: int = 8, on_error=None) -> list[dict]:
    """``{source, uncertainty, disagreement, borderline, boxes, vector, prediction}`` per
    readable image of ``source`` (a folder, glob or list); memory grows by a few hundred
    bytes an image, never by its pixels."""
    conf = det.conf
    out = []
    for r in det.stream(source, conf=LOW_CONF, batch=batch, on_error=on_error):
        img = r.image
        (r_flip,) = det.predict(np.ascontiguousarray(img[:, ::-1]), conf=LOW_CONF)
        d = flip_disagreement(r, r_flip, conf)
        near = borderline(r.scores, conf)
        out.append({"source": str(r.source), "uncertainty": d + near, "disagreement": d,
                    "borderline": near, "boxes": int((r.scores >= conf).sum()),
                    "vector": appearance(img), "prediction": Kept(r, conf)})  # fmt: skip
    return out


def pick(scored: list[dict], n: int, seed: int = 0) -> list[int]:
    """Indices of ``n`` images of ``scored`` (see the module docstring), best first."""
    if n <= 0 or not scored:
        return []
    rng = np.random.default_rng(seed)
    u = np.array([s["uncertainty"] for s in scored], np.float64)
    jitter = rng.permutation(len(u)) * 1e-9  # seeded tie-break
    pool = np.argsort(-(u + jitter), kind="stable")[: POOL * n]
    vecs = np.stack([scored[i]["vector"] for i in pool]).astype(np.float64)
    dist = np.sqrt(np.clip(2 - 2 * vecs @ vecs.T, 0, None))  # unit vectors
    nearest = np.full(len(pool), np.inf)
    chosen: list[int] = []
    value = u[pool] + jitter[pool] + 1e-6  # images the model is sure of still rank by spread
    for _ in range(min(n, len(pool))):
        gain = value * np.minimum(1.0, nearest / SAME_SCENE)
        gain[chosen] = -np.inf
        k = int(np.argmax(gain))
        chosen.append(k)
        nearest = np.minimum(nearest, dist[k])
    return [int(pool[k]) for k in chosen]


HOW = (
    "uncertainty = disagreement under a horizontal flip (1 - F1 of the boxes at the model's "
    "threshold) + borderline boxes b/(1+b) (b: boxes within 0.2 of the threshold); then, of "
    "the 10n most uncertain, n picked greedily by uncertainty x min(1, distance to the nearest "
    "image picked / 0.5) (unit-length 8x8 colour thumbnails)"
)


def select_batch(det, source, out, n: int = 100, *, seed: int = 0, link: bool = False,
                 labelme: bool = False, cvat: bool = False, labelstudio: bool = False,
                 model: str = "detforge", batch: int = 8) -> dict:  # fmt: skip
    """Score every image of ``source``, pick ``n`` (see the module docstring) and put them in
    ``out/images`` (copied, or hard-linked with ``link``) with their pre-annotations (labelme
    JSON beside each, ``out/cvat_annotations.xml``, ``out/labelstudio_tasks.json``) and
    ``out/selection.json`` (each pick's rank, source and scores, and how they were chosen).
    The source is never written to; ``out`` must be empty or new."""

    if isinstance(source, (str, Path)) and not any(c in str(source) for c in "*?["):
        refuse_overlap(out, [source])
    skipped: list = []
    scored = score_images(det, source, batch=batch, on_error=skipped.append)
    chosen = pick(scored, n, seed)
    out = prepare_destination(out)
    picks = [scored[i] for i in chosen]
    names = unique_names([Sample(FileImage(p["source"]), 1, 1) for p in picks])
    (out / "images").mkdir(exist_ok=True)  # names in the tools' files are relative to it
    pre = Preannotations(out, det.classes, out / "images", cvat=cvat, labelstudio=labelstudio,
                         model=model)  # fmt: skip
    rows = []
    for rank, (p, name) in enumerate(zip(picks, names), 1):
        dst = out / "images" / name
        place_image(Path(p["source"]), dst, "link" if link else "copy")
        kept = p["prediction"]
        kept.source = str(dst)
        h, w = kept.shape
        if labelme:
            sample = Sample(FileImage(dst), w, h, kept.boxes, kept.labels)
            atomic_write_json(dst.with_suffix(".json"), to_json(sample, det.classes, name))
        if pre.wanted:
            pre.add(kept)
        rows.append({"rank": rank, "source": p["source"], "image": f"images/{name}",
                     **{k: round(float(p[k]), 4) for k in ("uncertainty", "disagreement",
                                                           "borderline")},
                     "boxes": p["boxes"]})  # fmt: skip
    written = pre.close()
    summary = {"images": len(scored), "unreadable": [str(f.source) for f in skipped],
               "selected": len(rows), "n": n, "seed": seed, "threshold": det.conf, "how": HOW,
               "picks": rows, "preannotations": [str(p) for p in written],
               "out": str(out)}  # fmt: skip
    atomic_write_json(out / "selection.json", summary, indent=1)
    return summary
