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


def _labelled_box(draw: ImageDraw.ImageDraw, box, text: str, color, width: int, font) -> None:
    """One xyxy box outlined in ``color`` with ``text`` on a filled tab above it (inside
    when there is no room above)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    draw.rectangle([x0, y0, x1, y1], outline=color, width=width)
    tb = draw.textbbox((x0, y0), text, font=font)
    ty = y0 - (tb[3] - tb[1]) - 2 if y0 > (tb[3] - tb[1]) + 2 else y0
    tb = draw.textbbox((x0, ty), text, font=font)
    draw.rectangle([tb[0] - 1, tb[1] - 1, tb[2] + 1, tb[3] + 1], fill=color)
    draw.text((x0, ty), text, fill=(0, 0, 0), font=font)


def draw_boxes(
    image: np.ndarray, boxes, labels, names, scores=None, width: int | None = None
) -> np.ndarray:
    """Return a copy of RGB ``image`` with xyxy ``boxes`` and their class names drawn."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(img)
    colors = palette(len(names))
    width = width or max(1, round(min(img.size) / 200))
    font = _font(max(10, round(min(img.size) / 30)))
    for k, (b, lab) in enumerate(zip(np.asarray(boxes).reshape(-1, 4), labels)):
        lab = int(lab)
        color = colors[lab % len(colors)]
        text = names[lab] if 0 <= lab < len(names) else str(lab)
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        _labelled_box(draw, b, text, color, width, font)
    return np.asarray(img)


def draw_tracks(image: np.ndarray, boxes, track_ids, labels, names, trails: dict) -> np.ndarray:
    """Return a copy of RGB ``image`` with each tracked box in its track's colour, labelled
    ``#id name``, and ``trails`` (``{id: [(x, y), ...]}``, oldest first) as fading lines."""
    img = Image.fromarray(np.asarray(image, np.uint8))
    draw = ImageDraw.Draw(img)
    colors = palette(64)
    width = max(1, round(min(img.size) / 200))
    font = _font(max(10, round(min(img.size) / 30)))
    for tid, points in trails.items():
        color = colors[int(tid) % len(colors)]
        for k in range(1, len(points)):
            fade = 0.3 + 0.7 * k / len(points)
            draw.line([points[k - 1], points[k]], fill=tuple(int(c * fade) for c in color),
                      width=width + 1)  # fmt: skip
    for b, tid, lab in zip(np.asarray(boxes).reshape(-1, 4), track_ids, labels):
        color = colors[int(tid) % len(colors)]
        text = f"#{int(tid)} {names[int(lab)] if 0 <= int(lab) < len(names) else lab}"
        _labelled_box(draw, b, text, color, width, font)
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
