"""Predictor: load a model once (``.pt`` checkpoint or ``.onnx``), batch, stream.

Both backends see the same input: each image resized on the host to the model's square input
(``stretch`` for models trained stretched, ``letterbox`` with mean-colour padding for the
aspect-keeping R-CNN family), uint8. Normalization happens inside the model (or the ONNX
graph). Boxes come back in the original image's pixels.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from detforge.engine import sources
from detforge.errors import DetforgeError

PAD = (124, 116, 104)  # ImageNet mean: zero after the model's normalization


class Result:
    """Detections on one image: ``boxes`` float32 (N, 4) xyxy pixels of the original image,
    ``scores`` (N,), ``labels`` int64 (N,) 0-based, ``names`` the model's classes."""

    __slots__ = ("boxes", "scores", "labels", "names", "image", "source", "index", "time")

    def __init__(self, boxes, scores, labels, names, image=None, source="", index=0, time=None):
        self.boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        self.scores = np.asarray(scores, np.float32).reshape(-1)
        self.labels = np.asarray(labels, np.int64).reshape(-1)
        self.names = names
        self.image, self.source, self.index, self.time = image, source, index, time

    def __len__(self) -> int:
        return len(self.boxes)

    def __repr__(self) -> str:
        return f"Result({self.source!r}, {len(self)} detections)"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape[:2]) if self.image is not None else (0, 0)

    def to_dict(self) -> dict:
        d = {
            "source": self.source,
            "detections": [
                {
                    "box": [round(float(v), 2) for v in b],
                    "score": round(float(s), 5),
                    "label": int(lab),
                    "name": self.names[int(lab)],
                }
                for b, s, lab in zip(self.boxes, self.scores, self.labels)
            ],
        }
        if self.time is not None or self.index:
            d["frame"] = self.index
        if self.time is not None:
            d["time"] = round(self.time, 4)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def box_masks(self, per_box: bool = False) -> np.ndarray:
        """Boolean HxW mask of the pixels inside any box (``per_box``: (N, H, W), one each)."""
        h, w = self.shape
        out = np.zeros((len(self), h, w) if per_box else (h, w), bool)
        for k, (x0, y0, x1, y1) in enumerate(np.rint(self.boxes).astype(int)):
            x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            (out[k] if per_box else out)[y0:y1, x0:x1] = True
        return out

    def crops(self) -> list[np.ndarray]:
        """The image region of each box (RGB uint8 copies)."""
        h, w = self.shape
        out = []
        for x0, y0, x1, y1 in np.rint(self.boxes).astype(int):
            x0, y0 = min(max(x0, 0), w - 1), min(max(y0, 0), h - 1)
            out.append(self.image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].copy())
        return out

    def draw(self) -> np.ndarray:
        """The image with boxes, names and scores drawn (RGB uint8)."""
        from detforge.viz import draw_boxes

        return draw_boxes(self.image, self.boxes, self.labels, self.names, self.scores)


class ClassResult:
    """Class probabilities for one image: ``probs`` (K,), ``top`` class indices best first,
    ``names``; ``topk(k)`` gives ``[(name, probability), ...]``."""

    __slots__ = ("probs", "top", "names", "image", "source", "index", "time")

    def __init__(self, probs, names, image=None, source="", index=0, time=None):
        self.probs = np.asarray(probs, np.float32)
        self.top = np.argsort(-self.probs, kind="stable")
        self.names = names
        self.image, self.source, self.index, self.time = image, source, index, time

    def __len__(self) -> int:
        return 1

    def __repr__(self) -> str:
        name, p = self.topk(1)[0]
        return f"ClassResult({self.source!r}, {name} {p:.3f})"

    def topk(self, k: int = 5) -> list[tuple[str, float]]:
        return [(self.names[i], float(self.probs[i])) for i in self.top[:k]]

    def to_dict(self, k: int = 5) -> dict:
        d = {
            "source": self.source,
            "top": [{"name": n, "prob": round(p, 5)} for n, p in self.topk(k)],
        }
        if self.time is not None or self.index:
            d["frame"] = self.index
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def draw(self) -> np.ndarray:
        from PIL import Image, ImageDraw

        img = Image.fromarray(self.image)
        d = ImageDraw.Draw(img)
        for k, (n, p) in enumerate(self.topk(3)):
            d.text((6, 6 + 14 * k), f"{n} {p:.2f}", fill=(255, 255, 0) if k == 0 else (255,) * 3)
        return np.asarray(img)


def prepare(image: np.ndarray, size: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """RGB HxWx3 -> uint8 (3, size, size) and the (sx, sy) that map its boxes back."""
    h, w = image.shape[:2]
    if mode == "stretch":
        out = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        scale = np.array([size / w, size / h], np.float32)
    else:
        r = size / max(h, w)
        nw, nh = max(1, round(w * r)), max(1, round(h * r))
        out = np.empty((size, size, 3), np.uint8)
        out[:] = PAD
        out[:nh, :nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        scale = np.array([nw / w, nh / h], np.float32)
    return np.ascontiguousarray(out.transpose(2, 0, 1)), scale


class TorchBackend:
    """A checkpoint's model in eval mode, called through the same module as its ONNX export."""

    kind = "torch"

    def __init__(self, path, device="cpu"):
        from detforge.engine.distributed import pick_device
        from detforge.engine.export import ExportModule
        from detforge.models import load_checkpoint

        self.device = pick_device(device)
        model, _ = load_checkpoint(path)
        self.model = model.to(self.device).eval()
        self.module = ExportModule(self.model).eval()
        self.classes = list(model.classes)
        self.imgsz = int(model.options["imgsz"])
        self.resize = model.resize_mode
        self.task = model.task
        self.max_batch = None

    @torch.no_grad()
    def __call__(self, batch: np.ndarray):
        x = torch.from_numpy(batch).to(self.device)
        out = [t.cpu().numpy() for t in self.module(x)]
        return out[0] if self.task == "classify" else split_batch(len(batch), *out)


def split_batch(n: int, boxes, scores, labels, index) -> list[tuple[np.ndarray, ...]]:
    return [(boxes[index == i], scores[index == i], labels[index == i]) for i in range(n)]


def _nms(boxes, scores, labels, iou: float):
    from torchvision.ops import batched_nms

    if len(boxes) == 0 or iou >= 1:
        return np.arange(len(boxes))
    keep = batched_nms(
        torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), iou
    )
    return keep.numpy()


class Predictor:
    """Load once, predict many times: ``det.predict(inputs)``, ``det.stream(source)``."""

    def __init__(self, backend):
        self.backend = backend
        self.names = backend.classes
        self.imgsz = backend.imgsz
        self.task = backend.task

    def __repr__(self) -> str:
        return f"Predictor({self.backend.kind}, {len(self.names)} classes, imgsz {self.imgsz})"

    def _run(self, frames: list, conf: float, iou: float, max_det: int) -> list[Result]:
        prepped = [prepare(f.image, self.imgsz, self.backend.resize) for f in frames]
        raw = self.backend(np.stack([p[0] for p in prepped]))
        if self.task == "classify":
            return [
                ClassResult(p, self.names, f.image, f.source, f.index, f.time)
                for f, p in zip(frames, raw)
            ]
        results = []
        for f, (_, scale), (b, s, lab) in zip(frames, prepped, raw):
            keep = s >= conf
            b, s, lab = b[keep], s[keep], lab[keep]
            h, w = f.image.shape[:2]
            b = b.copy()  # clip to the image's part of the input (letterbox: not the padding)
            b[:, 0::2] = b[:, 0::2].clip(0, w * scale[0])
            b[:, 1::2] = b[:, 1::2].clip(0, h * scale[1])
            keep = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])  # nothing left inside the image
            b, s, lab = b[keep], s[keep], lab[keep]
            keep = _nms(b, s, lab, iou)[:max_det]
            b, s, lab = b[keep], s[keep], lab[keep].astype(np.int64)
            b = (b / np.tile(scale, 2)).clip(0, [w, h, w, h])
            results.append(Result(b, s, lab, self.names, f.image, f.source, f.index, f.time))
        return results

    def _batches(self, frames: Iterator, batch: int, conf, iou, max_det, on_error):
        chunk: list = []
        for f in frames:
            if f.image is None:
                on_error(f)
                continue
            chunk.append(f)
            if len(chunk) == batch:
                yield from self._run(chunk, conf, iou, max_det)
                chunk = []
        if chunk:
            yield from self._run(chunk, conf, iou, max_det)

    def predict(
        self,
        inputs,
        *,
        conf: float = 0.25,
        iou: float = 0.5,
        max_det: int = 100,
        batch: int = 8,
        bgr: bool = False,
        value_range=None,
    ) -> list[Result]:
        """One :class:`Result` per input image. ``inputs``: a path, folder or glob, a PIL
        image, a numpy HxWx3 array (uint8 RGB; ``bgr=True`` for OpenCV frames; float with
        ``value_range`` (0, 1), (-1, 1) or (0, 255)), a torch CHW tensor, or a list of these.
        ``iou`` is the class-wise NMS threshold applied after the model's own. A file that
        does not decode raises; :meth:`stream` reports and skips it instead."""
        items = sources.expand(inputs)

        def strict(f):
            raise DetforgeError(f"{f.source}: {f.error}", "remove or re-export the image")

        frames = (
            sources.load_item(x, k, bgr=bgr, value_range=value_range) for k, x in enumerate(items)
        )
        return list(self._batches(frames, batch, conf, iou, max_det, strict))

    def stream(
        self,
        source,
        *,
        conf: float = 0.25,
        iou: float = 0.5,
        max_det: int = 100,
        batch: int = 4,
        bgr: bool = False,
        value_range=None,
        on_error=None,
    ) -> Iterator[Result]:
        """Yield results for a video file, a webcam (int index), a folder, a glob or a list,
        decoding ahead on a thread while the model runs (at most a few batches in memory).
        Unreadable images in a folder are passed to ``on_error(frame)`` (default: a warning)
        and skipped."""
        import warnings

        def warn(f):
            warnings.warn(f"skipped {f.source}: {f.error}", stacklevel=3)

        frames = sources.prefetch(
            sources.frames(source, bgr=bgr, value_range=value_range), 2 * batch
        )
        yield from self._batches(frames, batch, conf, iou, max_det, on_error or warn)


def load(path, device: str = "cpu") -> Predictor:
    """Load a ``.pt`` checkpoint or an ``.onnx`` export once; returns a :class:`Predictor`."""
    path = Path(path)
    if not path.exists():
        raise DetforgeError(f"{path}: not found", "pass runs/train/NAME/weights/best.pt or .onnx")
    if path.suffix.lower() == ".onnx":
        from detforge.engine.export import OnnxBackend

        return Predictor(OnnxBackend(path, device))
    return Predictor(TorchBackend(path, device))
