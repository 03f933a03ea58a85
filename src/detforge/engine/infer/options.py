"""The typed options of a prediction: :class:`Thresholds` (what a detection must pass to be
kept) and :class:`Outputs` (what ``predict`` writes). Each default lives here, once; the API,
the CLI, the service and Ray read it from these classes. Standard library only, so that
``import detforge`` stays light."""

from __future__ import annotations

import numbers
from dataclasses import dataclass, replace

from detforge.errors import DetforgeError


@dataclass(frozen=True)
class Thresholds:
    """What a detection must pass to be kept: a score of at least ``conf`` (None: the
    model's own threshold, measured on validation when it was trained), class-wise NMS at
    ``iou`` (1 or more: none beyond the model's own), at most ``max_det`` boxes an image.
    Classifiers ignore them. Hashable, so requests with equal thresholds batch together."""

    conf: float | None = None
    iou: float = 0.5
    max_det: int = 100

    def __post_init__(self):
        if self.conf is not None and not 0 <= self.conf <= 1:
            raise DetforgeError(f"conf {self.conf}: a score is in [0, 1]", "pass a conf in [0, 1]")
        if not self.iou > 0:
            raise DetforgeError(
                f"iou {self.iou}: an IoU threshold is above 0", "pass iou in (0, 1]"
            )
        m = self.max_det
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise DetforgeError(
                f"max_det {m!r}: a positive whole number of boxes", "pass max_det such as 100"
            )

    def with_conf(self, conf: float) -> Thresholds:
        """These thresholds with ``conf`` where none was given."""
        return self if self.conf is not None else replace(self, conf=float(conf))


@dataclass(frozen=True)
class Outputs:
    """What ``predict`` writes into its output folder besides ``summary.json``: the table
    (``fmt``: jsonl, csv or coco), annotated images or an annotated video (``save``), a
    labelme file beside each image (``save_labelme``; one already there is kept unless
    ``overwrite_labelme``), CVAT / Label Studio pre-annotations (``save_cvat``,
    ``save_labelstudio``; ``model`` names the model in them) and a live window (``show``)."""

    fmt: str = "jsonl"
    save: bool = True
    save_labelme: bool = False
    overwrite_labelme: bool = False
    save_cvat: bool = False
    save_labelstudio: bool = False
    show: bool = False
    model: str = "detforge"
