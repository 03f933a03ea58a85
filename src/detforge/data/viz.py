"""Drawing: boxes with labels on images, and sample grids."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

from detforge.fileio import atomic_write_bytes


def palette(n: int) -> list[tuple[int, int, int]]:
    """``n`` well-separated colors (golden-ratio hues)."""
    out = []
    for i in range(max(n, 1)):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)
        out.append((int(r * 255), int(g * 255), int(b * 255)))
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def place_tags(boxes, sizes, canvas) -> list[tuple[float, float] | None]:
    """Where each box's label tag goes: the top-left corner of a ``sizes[i]`` = (w, h) tag
    beside box ``i`` (xyxy), or None when every spot would cover a tag already placed or
    leave the ``canvas`` = (width, height). Boxes earlier in the list choose first; each
    tries above its top edge, inside it, below its bottom edge, inside that, at its left and
    then its right side. No two placed tags overlap."""
    width, height = canvas
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float] | None] = []
    for (x0, y0, x1, y1), (tw, th) in zip(np.asarray(boxes, float).reshape(-1, 4), sizes):
        spot = None
        for ty in (y0 - th, y0, y1, y1 - th):
            for tx in (x0, x1 - tw):
                tx = min(max(tx, 0.0), width - tw)
                if ty < 0 or ty + th > height:
                    continue
                r = (tx, ty, tx + tw, ty + th)
                if not any(r[0] < p[2] and p[0] < r[2] and r[1] < p[3] and p[1] < r[3]
                           for p in placed):  # fmt: skip
                    spot = (tx, ty)
                    break
            if spot:
                break
        if spot:
            placed.append((spot[0], spot[1], spot[0] + tw, spot[1] + th))
        out.append(spot)
    return out


def _draw_labelled(img: Image.Image, boxes, texts: list[str], colors: list, order=None) -> None:
    """Outline every xyxy box in its colour, then put each text on a filled tag beside its
    box where no other tag is (:func:`place_tags`; ``order``: who chooses first, e.g. by
    score). A tag that finds no free spot is left out; its box is still drawn."""
    draw = ImageDraw.Draw(img)
    width = max(1, round(min(img.size) / 200))
    font = _font(max(10, round(min(img.size) / 30)))
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    for b, color in zip(boxes, colors):
        draw.rectangle([float(v) for v in b], outline=color, width=width)
    order = list(range(len(boxes))) if order is None else list(order)
    pad = 1
    sizes = []
    for i in order:
        left, t, r, btm = draw.textbbox((0, 0), texts[i], font=font)
        sizes.append((r - left + 2 * pad, btm - t + 2 * pad))
    for i, (w, h), spot in zip(order, sizes, place_tags(boxes[order], sizes, img.size)):
        if spot is None:
            continue
        tx, ty = spot
        draw.rectangle([tx, ty, tx + w - 1, ty + h - 1], fill=colors[i])
        left, t, _, _ = draw.textbbox((0, 0), texts[i], font=font)
        draw.text((tx + pad - left, ty + pad - t), texts[i], fill=(0, 0, 0), font=font)


def draw_boxes(image: np.ndarray, boxes, labels, names, scores=None) -> np.ndarray:
    """Return a copy of RGB ``image`` with xyxy ``boxes`` and their class names (and
    ``scores``) drawn; higher-scored boxes place their tags first."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    palette_ = palette(len(names))
    labels = [int(v) for v in np.asarray(labels).reshape(-1)]
    texts = [names[k] if 0 <= k < len(names) else str(k) for k in labels]
    order = None
    if scores is not None:
        scores = np.asarray(scores, float).reshape(-1)
        texts = [f"{t} {s:.2f}" for t, s in zip(texts, scores)]
        order = np.argsort(-scores, kind="stable")
    _draw_labelled(img, boxes, texts, [palette_[k % len(palette_)] for k in labels], order)
    return np.asarray(img)


def draw_tracks(image: np.ndarray, boxes, track_ids, labels, names, trails: dict) -> np.ndarray:
    """Return a copy of RGB ``image`` with each tracked box in its track's colour, labelled
    ``#id name``, and ``trails`` (``{id: [(x, y), ...]}``, oldest first) as fading lines."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(img)
    colors = palette(64)
    width = max(1, round(min(img.size) / 200))
    for tid, points in trails.items():
        color = colors[int(tid) % len(colors)]
        for k in range(1, len(points)):
            fade = 0.3 + 0.7 * k / len(points)
            draw.line([points[k - 1], points[k]], fill=tuple(int(c * fade) for c in color),
                      width=width + 1)  # fmt: skip
    texts = [f"#{int(t)} {names[int(k)] if 0 <= int(k) < len(names) else k}"
             for t, k in zip(track_ids, labels)]  # fmt: skip
    _draw_labelled(img, boxes, texts, [colors[int(t) % len(colors)] for t in track_ids])
    return np.asarray(img)


def fit(image: np.ndarray, side: int) -> np.ndarray:
    """``image`` scaled up or down to fit ``side`` x ``side``, aspect ratio kept."""
    if max(image.shape[:2]) == side:
        return image
    return np.asarray(ImageOps.contain(Image.fromarray(image), (side, side)))


def grid(images: list[np.ndarray], cols: int = 4, cell: int = 256, captions=None) -> np.ndarray:
    """Tile images (each scaled to fit ``cell`` x ``cell``, aspect kept) into one RGB array;
    ``captions`` (one per image, e.g. file names) go on a strip under each tile."""
    rows = max(1, (len(images) + cols - 1) // cols)
    strip = 16 if captions else 0
    canvas = Image.new("RGB", (cols * cell, rows * (cell + strip)), (32, 32, 32))
    draw, font = ImageDraw.Draw(canvas), _font(11)
    for i, im in enumerate(images):
        pil = Image.fromarray(fit(im, cell - 4))
        x0, y0 = (i % cols) * cell, (i // cols) * (cell + strip)
        canvas.paste(pil, (x0 + (cell - pil.width) // 2, y0 + (cell - pil.height) // 2))
        if captions:
            text = _clip_text(draw, str(captions[i]), font, cell - 6)
            draw.text((x0 + 3, y0 + cell + 1), text, fill=(230, 230, 230), font=font)
    return np.asarray(canvas)


def _clip_text(draw, text: str, font, width: int) -> str:
    """``text`` cut at the front (file names differ at the end) to fit ``width`` pixels."""
    while len(text) > 4 and draw.textlength(text, font=font) > width:
        text = "..." + text[4:]
    return text


def save_png(array: np.ndarray, path) -> Path:
    import io

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return atomic_write_bytes(path, buf.getvalue())


def show_dataset(ds, out, n: int = 16, seed: int = 0, cols: int = 4, view=None) -> Path:
    """Save a grid of ``n`` random samples of ``ds`` with their boxes to ``out`` (PNG).
    ``view`` (a torch dataset over ``ds``, e.g. the augmented training view) draws its items
    instead of the raw samples."""
    rng = np.random.default_rng(seed)
    k = min(n, len(ds))
    idx = sorted(rng.choice(len(ds), size=k, replace=False).tolist()) if k else []
    tiles = []
    for i in idx:
        s = ds[i]
        if view is not None:
            image, t = view[i]
            hwc = image.permute(1, 2, 0).numpy()
            tiles.append(draw_boxes(hwc, t["boxes"].numpy(), t["labels"].numpy(), ds.classes))
            continue  # an augmented view may mix images (mosaic): its caption is the first
        img = draw_boxes(s.load(), s.boxes, s.labels, ds.classes)
        if s.category is not None:  # the class as a frame, drawn at the size it is shown
            img = fit(img, 252)
            full = [[0, 0, img.shape[1] - 1, img.shape[0] - 1]]
            img = draw_boxes(img, full, [s.category], ds.classes)
        tiles.append(img)
    return save_png(grid(tiles, cols, captions=[ds[i].name for i in idx]), out)
