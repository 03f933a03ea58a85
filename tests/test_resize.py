"""One resize from training to serving: what the model trains on is what it serves on."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from detforge.data import read
from detforge.data.augmentation import AugmentConfig
from detforge.data.resize import held_size, prepare, resize
from detforge.data.torch.augment import training_view
from detforge.models import build

NO_AUGMENT = AugmentConfig(hflip=0, scale_jitter=(1.0, 1.0), color=0, hue=0, mosaic=0)
BOX = (41.0, 30.0, 163.0, 121.0)  # x0 y0 x1 y1 in a 200x150 frame, scaled with the image


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Smooth shapes plus fine texture: what aliasing and filter differences show up on."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), int)
    return np.clip(smooth + rng.integers(-30, 31, (height, width, 3)), 0, 255).astype(np.uint8)


def one_image_set(tmp_path, width: int, height: int):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    pixels = photo(width, height)
    Image.fromarray(pixels).save(tmp_path / "images" / "a.png")
    k = np.array([width / 200, height / 150] * 2)
    x0, y0, x1, y1 = np.array(BOX) * k
    cx, cy, w, h = (
        (x0 + x1) / 2 / width,
        (y0 + y1) / 2 / height,
        (x1 - x0) / width,
        (y1 - y0) / height,
    )
    (tmp_path / "labels" / "a.txt").write_text(f"0 {cx} {cy} {w} {h}\n")
    (tmp_path / "classes.txt").write_text("thing\n")
    return read(tmp_path, "yolo"), pixels


# (width, height): a square photo, the usual 4:3 photo, a panorama, and a thumbnail smaller
# than the input
@pytest.mark.parametrize("size", [(640, 640), (500, 375), (1280, 200), (200, 150)])
@pytest.mark.parametrize("cache", [False, True])
def test_training_view_is_what_serving_prepares(tmp_path, size, cache):
    """One image through the training view (no augmentation) and the model's input step, and
    through predict's ``prepare`` and the same step: the tensors the network sees agree
    within one grey level (both shrink with the one resize; the last step, enlarging the
    short side to the square, is bilinear in float inside the model during training and in
    uint8 on the host at inference), and exactly for a square image."""
    ds, pixels = one_image_set(tmp_path, *size)
    model = build("det-n", ["thing"], imgsz=320, pretrained="none").eval()
    image, target = training_view(ds, NO_AUGMENT, 320, cache=cache)[0]
    with torch.no_grad():
        seen_training, scaled = model._resized([image], [target])
        served, scale = prepare(pixels, 320, model.resize_mode)
        seen_serving, _ = model._resized([torch.from_numpy(served)])
    one_level = 1 / 255 / float(model.normalize.std.min())  # a grey level, normalized
    diff = (seen_training - seen_serving).abs().max().item()
    assert diff == 0.0 if size == (640, 640) else diff <= one_level + 1e-6
    assert (seen_training - seen_serving).abs().mean().item() < one_level / 2  # rounding
    box = np.array(BOX) * np.array([size[0] / 200, size[1] / 150] * 2)
    np.testing.assert_allclose(scaled[0]["boxes"][0].numpy(), box * np.tile(scale, 2), atol=1e-3)


def test_resize_is_antialiased_and_fast_path_exact():
    """Shrinking averages: a 1-px checkerboard shrunk 3x (and 2.4x) becomes grey (4 or 5 of a
    3x3 block's 9 pixels are white: 113 or 142), where plain bilinear sampling keeps black and
    white; and whole factors are exact box averages."""
    board = (np.indices((480, 640)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    for w, h in ((213, 160), (266, 200)):
        small = resize(board, w, h)
        assert small.shape == (h, w, 3)
        assert small.min() >= 100 and small.max() <= 155 and abs(small.mean() - 127.5) < 2
    aliased = cv2.resize(board, (266, 200), interpolation=cv2.INTER_LINEAR)
    assert aliased.max() - aliased.min() > 200  # what the test would see without the filter
    blocks = np.arange(16, dtype=np.uint8).reshape(4, 4).repeat(2, 0).repeat(2, 1)[..., None]
    np.testing.assert_array_equal(
        resize(blocks.repeat(3, 2), 4, 4)[..., 0], np.arange(16).reshape(4, 4)
    )


@pytest.mark.parametrize(
    "w, h, side, want",
    [((640, 480, 320, (320, 240))), (1280, 200, 320, (320, 50)), (200, 150, 320, (200, 150))],
)
def test_held_size_keeps_the_aspect_and_never_enlarges(w, h, side, want):
    assert held_size(w, h, side) == want
