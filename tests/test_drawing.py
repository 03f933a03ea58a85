"""What the user sees: box tags that never hide one another, and speeds that leave out the
model's loading and first-call setup."""

from __future__ import annotations

import numpy as np
import pytest

from detforge.data.viz import draw_boxes, place_tags


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_tags_go_above_inside_or_below_by_room():
    sizes = [(30, 10)] * 3
    boxes = [[50, 40, 100, 90], [5, 3, 60, 50], [150, 150, 190, 199]]
    spots = place_tags(boxes, sizes, (200, 200))
    assert spots[0] == (50, 30)  # room above: the tab sits on the top edge
    assert spots[1] == (5, 3)  # no room above: inside the top-left corner
    assert spots[2] == (150, 140)
    # a second box at the same place cannot take the same spot: it goes inside
    spots = place_tags([[50, 40, 100, 90], [52, 40, 100, 90]], sizes[:2], (200, 200))
    assert spots == [(50, 30), (52, 40)]


def test_a_tag_with_no_free_spot_is_left_out():
    # four identical small boxes: the spots above, inside and below fill up
    boxes = [[40, 40, 70, 60]] * 12
    spots = place_tags(boxes, [(30, 10)] * 12, (200, 200))
    kept = [s for s in spots if s is not None]
    assert len(kept) == 4 and len(set(kept)) == 4  # above, inside top, below, inside bottom
    assert spots[4:] == [None] * 8


def test_no_two_tags_overlap_on_a_crowded_image():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (60, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(12, 60, (60, 2))], 1).clip(0, 319)
    sizes = [(int(w), 12) for w in rng.integers(20, 70, 60)]
    spots = place_tags(boxes, sizes, (320, 320))
    rects = [(x, y, x + w, y + h) for s, (w, h) in zip(spots, sizes) if s for x, y in [s]]
    assert len(rects) >= 40  # most boxes keep their tag
    for i, a in enumerate(rects):
        assert min(a[0], a[1]) >= 0 and max(a[2], a[3]) <= 320
        for b in rects[i + 1 :]:
            assert not _overlap(a, b)
    for s, (_, h), b in zip(spots, sizes, boxes):  # every tag touches its own box
        if s:
            assert s[1] + h >= b[1] and s[1] <= b[3]


def test_the_best_scored_box_keeps_its_tag():
    img = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[20, 20, 60, 60]] * 10, np.float32)
    scores = np.linspace(0.1, 0.9, 10)
    out = draw_boxes(img, boxes, [0] * 10, ["x"], scores)
    assert out.shape == img.shape and out.any()
    spots = place_tags(boxes[np.argsort(-scores)], [(30, 12)] * 10, (100, 100))
    assert spots[0] == (20, 8)  # the 0.90 box chose first


class FirstCallSlow:
    """A backend whose first call takes a second (as kernel setup can), later ones not."""

    def __init__(self, backend):
        self.inner, self.calls = backend, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, batch):
        import time

        self.calls += 1
        if self.calls == 1:
            time.sleep(1.0)
        return self.inner(batch)


def test_predict_speed_leaves_out_loading_and_warm_up(tmp_path):
    """One image: the figure is the model's speed, not load + first-call setup."""
    import detforge
    from detforge.data.synth import render

    from conftest import jittered_checkpoint

    det = detforge.load(jittered_checkpoint(tmp_path / "m.pt"))
    det.backend = FirstCallSlow(det.backend)
    render(np.random.default_rng(0), 160, 120, 3)[0].save(tmp_path / "a.png")
    s = detforge.predict(det, tmp_path / "a.png", out=tmp_path / "out", progress=False)
    assert s["frames"] == 1 and det.backend.calls == 2
    assert s["warm_up_s"] >= 1.0 and s["seconds"] < 1.0
    assert s["fps"] == pytest.approx(1 / s["seconds"], rel=0.05)
