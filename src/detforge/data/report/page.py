"""What both HTML pages are made of (a run's report and a dataset's report): Jinja2
templates, JPEG thumbnails written once beside the page, inline SVG charts, and the compact
gallery items the page's script draws boxes from.

A page is one file that opens offline by double-click: styles, script, charts and data are
inside it; only the thumbnails sit beside it in ``report_files/`` (referenced relatively), so
the page stays small while a 20k-image set stays browsable (the script shows one page of
items at a time, and the browser loads only those thumbnails).
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detforge.data.verify import image_stamp
from detforge.errors import ImageError
from detforge.fileio import atomic_write_bytes, atomic_write_text

TEMPLATES = Path(__file__).with_name("templates")
FILES = "report_files"  # the folder beside report.html holding its thumbnails
THUMBS = f"{FILES}/thumbs/"  # where the page's script finds a thumbnail named in its data
THUMB_SIDE = 320


@functools.cache
def _env():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(["html", "j2"], default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        return str(value)
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    return f"{float(value):.{digits}f}"


def write_page(path: Path, template: str, **context) -> Path:
    """Render ``template`` with ``context`` (plus the page's own CSS and script) into
    ``path``, atomically."""
    context.setdefault("style", (TEMPLATES / "page.css").read_text(encoding="utf-8"))
    context.setdefault("script", (TEMPLATES / "gallery.js").read_text(encoding="utf-8"))
    html = _env().get_template(template).render(**context)
    return atomic_write_text(path, html)


def svg(fig) -> str:
    """A matplotlib figure as inline SVG markup (no XML prolog, no fixed pixel size, so it
    scales with the page)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    text = text[text.index("<svg") :]
    return re.sub(r'(<svg[^>]*?) width="[^"]*" height="[^"]*"', r"\1", text, count=1)


def figure(width: float = 5.0, height: float = 3.0):
    """A Figure of its own (matplotlib's object API: no pyplot state, no backend switch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    fig.set_layout_engine("tight")
    return fig


def histogram(values, title: str, xlabel: str, bins: int = 30, log: bool = False) -> str:
    """An SVG histogram of ``values`` (empty: a chart saying so)."""
    fig = figure(4.2, 2.6)
    ax = fig.subplots()
    values = np.asarray(values, float)
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    if len(values):
        edges = (
            np.geomspace(values.min(), values.max() * 1.0001, bins + 1)
            if log and values.min() > 0
            else bins
        )
        ax.hist(values, bins=edges, color="#3b82f6")
        if log:
            ax.set_xscale("log")
    else:
        ax.text(0.5, 0.5, "nothing to show", ha="center", va="center", transform=ax.transAxes)
    ax.set(title=title, xlabel=xlabel, ylabel="count")
    ax.grid(alpha=0.3)
    return svg(fig)


def box_rows(boxes, labels, scale: tuple[float, float], scores=None) -> list[list]:
    """Boxes as the gallery draws them: ``[x1, y1, x2, y2, class]`` (+ score), in whole
    thumbnail pixels (the page holds one short list per image)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4) * np.float32([*scale, *scale])
    rows = []
    for i, (box, c) in enumerate(zip(b.round().astype(int).tolist(), np.asarray(labels).tolist())):
        row = [*box, int(c)]
        if scores is not None:
            row.append(round(float(scores[i]), 3))
        rows.append(row)
    return rows


class Thumbnails:
    """JPEG thumbnails (longest side ``side``) in ``root/report_files/thumbs``, named by the
    image and its file's size and time: a page written again reuses them, and a changed
    image gets a new one. Unreadable images get none (the page says so)."""

    def __init__(self, root: Path, side: int = THUMB_SIDE):
        self.root, self.side = Path(root), side
        self.folder = self.root / FILES / "thumbs"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()

    def _name(self, sample) -> str:
        stamp = image_stamp(sample.image) or (str(sample.path), "")
        key = f"{stamp[0]}|{stamp[1]}|{self.side}".encode("utf-8", "surrogatepass")
        return hashlib.sha1(key).hexdigest()[:20] + ".jpg"

    def scale(self, sample) -> float:
        return min(1.0, self.side / max(sample.width, sample.height, 1))

    def size(self, sample) -> tuple[int, int]:
        """The thumbnail's (width, height) as the page draws it (from the annotation's size)."""
        k = self.scale(sample)
        return max(1, round(sample.width * k)), max(1, round(sample.height * k))

    def make(self, sample) -> str | None:
        """The thumbnail's name (the page's script adds ``THUMBS`` and ``.jpg``), made if it
        is not there yet; None when the image cannot be read."""
        import cv2

        name = self._name(sample)
        path = self.folder / name
        if not path.exists():
            try:
                pixels = sample.load()
            except (ImageError, OSError):
                return None
            h, w = pixels.shape[:2]
            k = min(1.0, self.side / max(w, h, 1))
            if k < 1.0:
                size = (max(1, round(w * k)), max(1, round(h * k)))
                pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA)
            ok, data = cv2.imencode(".jpg", pixels[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 80])
            if not ok:
                return None
            atomic_write_bytes(path, data.tobytes())
        self.used.add(name)
        return name[: -len(".jpg")]

    def make_all(self, samples, progress: bool = False) -> list[str | None]:
        """Thumbnails of ``samples`` in order, made in threads (decoding releases the GIL)."""
        from rich.progress import track

        workers = max(1, min(8, os.cpu_count() or 1))
        with ThreadPoolExecutor(workers) as pool:
            done = pool.map(self.make, samples)
            return list(
                track(done, total=len(samples), description="thumbnails", disable=not progress)
            )

    def prune(self) -> None:
        """Remove thumbnails no item of this page uses (left by an earlier version)."""
        for p in self.folder.glob("*.jpg"):
            if p.name not in self.used:
                p.unlink(missing_ok=True)
