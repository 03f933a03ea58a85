"""Formula-driven pretraining scenes: exact boxes, determinism by seed, classes from formula
parameters, and `data synth --pretrain` for looking at them."""

from __future__ import annotations

import numpy as np
from PIL import Image

from detforge.data.formula import FormulaClasses, FormulaScenes, _place


def test_an_objects_box_is_the_extent_of_its_pixels():
    formulas = FormulaClasses(8, seed=1)
    rng = np.random.default_rng(0)
    for k, (shape, kind) in enumerate(zip(formulas.shapes, formulas.kinds)):
        placed = _place(shape, kind, rng, 200, 160, side=rng.uniform(10, 120))
        if placed is None:
            continue
        crop, box = placed  # the mask of the box's crop only
        assert crop.size == (box[2] - box[0], box[3] - box[1])
        mask = np.zeros((160, 200), np.uint8)
        mask[box[1] : box[3], box[0] : box[2]] = np.asarray(crop)
        on = np.argwhere(mask > 0)
        (y0, x0), (y1, x1) = on.min(0), on.max(0)
        assert box == (x0, y0, x1 + 1, y1 + 1), k


def test_scenes_are_made_the_same_from_the_same_seed():
    a, b = FormulaScenes(16, seed=3, size=128), FormulaScenes(16, seed=3, size=128)
    for i in (0, 5):
        ia, ba, la = a.scene(i)
        ib, bb, lb = b.scene(i)
        assert np.array_equal(ia, ib) and np.array_equal(ba, bb) and np.array_equal(la, lb)
    assert not np.array_equal(a.scene(0)[0], a.scene(1)[0])
    other = FormulaScenes(16, seed=4, size=128)
    assert not np.array_equal(other.formulas.shapes[0], a.formulas.shapes[0])
    img, boxes, labels = a.scene(7)
    assert img.shape == (128, 128, 3) and img.dtype == np.uint8
    assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 128).all()
    assert labels.max() < 16


def test_classes_come_from_formula_parameters():
    f = FormulaClasses(10, seed=0)
    assert f.names[:2] == ["ifs000", "ifs001"] and f.names[-1] == "contour009"
    assert f.kinds.count("ifs") == 5 and len(f.shapes) == 10
    for shape in f.shapes:  # every canonical shape fills the unit square
        assert np.allclose(shape.min(0), 0) and np.allclose(shape.max(0), 1)
    assert FormulaClasses(10, seed=0).shapes[3].tobytes() == f.shapes[3].tobytes()


def test_data_synth_pretrain_writes_scenes_to_look_at(tmp_path):
    from typer.testing import CliRunner

    import detforge
    from detforge.cli import app

    r = CliRunner().invoke(app, ["data", "synth", "--out", str(tmp_path / "fs"), "--pretrain",
                                 "--n", "6", "--classes", "12", "--size", "160"])  # fmt: skip
    assert r.exit_code == 0, r.output
    ds = detforge.read(tmp_path / "fs")
    assert len(ds) == 6 and ds.classes == FormulaScenes(12, seed=0, size=160).names
    scenes = FormulaScenes(12, seed=0, size=160)
    by_name = {s.name: s for s in ds.samples}
    for i in range(6):
        _, boxes, labels = scenes.scene(i)
        s = by_name[f"formula_{i:06d}.jpg"]
        np.testing.assert_allclose(s.boxes, boxes, atol=1e-2)
        assert s.labels.tolist() == labels.tolist()
    assert Image.open(s.path).size == (160, 160)
