import numpy as np
import pytest

from detforge import boxes as B


def test_round_trip_every_format_and_normalization():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (50, 2))
    xyxy = np.concatenate([xy, xy + rng.uniform(1, 100, (50, 2))], 1).astype(np.float32)
    size = (640, 480)
    for fmt in B.FORMATS:
        for norm in (False, True):
            out = B.from_xyxy(xyxy, fmt, normalized=norm, size=size)
            back = B.to_xyxy(out, fmt, normalized=norm, size=size)
            np.testing.assert_allclose(back, xyxy, atol=1e-3)


def test_known_values():
    np.testing.assert_allclose(B.to_xyxy([[10, 20, 30, 40]], "xywh"), [[10, 20, 40, 60]])
    np.testing.assert_allclose(
        B.to_xyxy([[0.5, 0.5, 0.5, 0.25]], "cxcywh", normalized=True, size=(200, 100)),
        [[50, 37.5, 150, 62.5]],
    )
    assert B.to_xyxy([], "xywh").shape == (0, 4)


def test_errors_and_problems():
    with pytest.raises(ValueError):
        B.to_xyxy([[1, 2, 3]])
    with pytest.raises(ValueError):
        B.to_xyxy([[1, 2, 3, 4]], normalized=True)
    b = np.array(
        [[0, 0, 10, 10], [5, 5, 2, 8], [1, 1, 1, 5], [-5, 0, 10, 10], [np.nan, 0, 1, 1]], np.float32
    )
    p = B.problems(b, 20, 20)
    assert p["inverted"].tolist() == [False, True, False, False, False]
    assert p["zero_area"].tolist() == [False, False, True, False, False]
    assert p["out_of_bounds"].tolist() == [False, False, False, True, False]
    assert p["nan"].tolist() == [False, False, False, False, True]
    np.testing.assert_allclose(B.clip(b[3:4], 20, 20), [[0, 0, 10, 10]])
    assert B.iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(1 / 3)
