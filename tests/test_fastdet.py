"""det-n/s/m: the assigner on edge cases, losses with negatives and crowds, the recipe, and a
model that learns on a small synthetic set."""

from __future__ import annotations

import os

import pytest
import torch

from detforge.data import read
from detforge.models import build, describe
from detforge.models.fastdet.loss import assign
from detforge.models.fastdet.network import anchor_points

from conftest import LEARN_SEED, NO_AUG, TRAIN_THREADS, hold_bars, rows, tiny


def _pred(a: int, k: int = 2):
    g = torch.Generator().manual_seed(0)
    return torch.rand(a, k, generator=g), torch.rand(a, 4, generator=g) * 64


def test_assign_empty_one_and_many_targets():
    points, strides = anchor_points(64)
    scores, boxes = _pred(len(points))
    none = assign(scores, boxes, points, strides, torch.zeros(0, 4), torch.zeros(0).long(), False)
    assert (none == -1).all()
    one = assign(
        scores,
        boxes,
        points,
        strides,
        torch.tensor([[8.0, 8.0, 40.0, 40.0]]),
        torch.tensor([1]),
        static=True,
    )
    pos = (one == 0).nonzero()[:, 0]
    assert 1 <= len(pos) <= 13  # top-k per box
    inside = (points[pos] > 8).all(1) & (points[pos] < 40).all(1)
    assert inside.all()  # positives lie inside the box
    # 200 boxes, some tiny, some identical: every anchor has one owner, tiny boxes get points
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(200, 2, generator=g) * 60
    wh = torch.rand(200, 2, generator=g) * 20 + 0.5
    many = torch.cat([xy, (xy + wh).clamp(max=64)], 1)
    many[100:110] = many[0]
    labels = torch.randint(0, 2, (200,), generator=g)
    for static in (True, False):
        owner = assign(scores, boxes, points, strides, many, labels, static)
        assert owner.shape == (len(points),) and int(owner.max()) < 200
        assert (owner >= 0).sum() > 50
    tiny_box = torch.tensor([[30.0, 30.0, 31.0, 31.5]])  # holds no cell centre
    got = assign(scores, boxes, points, strides, tiny_box, torch.tensor([0]), True)
    assert (got == 0).any()


def test_losses_finite_with_negatives_and_crowds():
    torch.manual_seed(0)
    model = build("det-n", ["a", "b"], imgsz=64).train()
    images = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8) for _ in range(3)]
    crowd = torch.tensor([[4.0, 4.0, 20.0, 20.0]]).repeat(60, 1) + torch.rand(60, 4) * 30
    targets = [
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # negative
        {"boxes": crowd, "labels": torch.randint(0, 2, (60,))},
        {"boxes": torch.tensor([[10.0, 5.0, 70.0, 60.0]]), "labels": torch.tensor([1])},
    ]
    out = model(images, targets)
    assert set(out) == {"qfl", "dfl", "giou"}
    total = sum(out.values())
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    negatives = model(images[:1], targets[:1])  # a batch of negatives trains the scores only
    assert float(negatives["qfl"].detach()) > 0 and float(negatives["giou"].detach()) == 0.0
    assert int(model.steps) == 2  # the static-assignment phase counts steps


def test_assignment_turns_dynamic_after_the_static_steps():
    model = build("det-n", ["a"], imgsz=64, static_steps=1).train()
    img = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)]
    tgt = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]), "labels": torch.tensor([0])}]
    seen = []
    import detforge.models.fastdet.model as m

    real = m.losses
    m.losses = lambda *a: seen.append(a[-1]) or real(*a)
    try:
        model(img, tgt)
        model(img, tgt)
    finally:
        m.losses = real
    assert seen == [True, False]


def test_recipe_is_listed_and_imgsz_rounds_to_the_stride():
    assert describe()["det-n"]["recipe"]["imgsz"] == 320
    assert build("det-s", ["a"], imgsz=300).imgsz == 320


@pytest.mark.slow
@pytest.mark.learning
def test_det_n_learns(tmp_path):
    """Bar: train-set mAP50 >= 0.6 after 30 epochs of 4 steps on 16 synthetic images, from
    scratch with the recipe's optimizer (measured 0.87 on 2 CPU cores, about 30 s)."""
    torch.set_num_threads(TRAIN_THREADS)
    from detforge.engine.train.loop import train

    r = train(
        data=str(tiny(tmp_path)),
        model="det-n",
        pretrained="none",  # from scratch, as its bar was measured
        epochs=30,
        imgsz=128,
        batch=4,
        workers=0,
        augment={**NO_AUG, "mosaic": 0.0},
        project=str(tmp_path / "runs"),
        seed=LEARN_SEED,
    )
    m = rows(r["run_dir"])
    first, last = float(m[0]["mAP50"]), max(float(x["mAP50"]) for x in m)
    assert first < 0.6, first  # it learned here, it did not start there
    # INT8: calibrated on the training images; loads, predicts, keeps the mAP within 0.05
    import detforge

    best = os.path.join(r["run_dir"], "weights", "best.pt")
    q = detforge.export(best, int8=True)["int8"]
    assert q["calibration_images"] == 16 and q["metric"] == "mAP50-95"
    ov = detforge.export(best, format="openvino", int8=True)["int8"]  # NNCF, same images
    assert ov["calibration_images"] == 16 and ov["fp32"] == pytest.approx(q["fp32"], abs=0.01)
    hold_bars(
        "det-n",
        best_mAP50=(last, ">=", 0.6),
        int8_change=(abs(q["change"]), "<=", 0.05),
        openvino_int8_change=(abs(ov["change"]), "<=", 0.05),
    )
    det = detforge.load(q["path"])
    assert det.backend.metadata["quantized"] == "int8"
    img = read(os.path.join(tmp_path, "set")).samples[0].load()
    assert len(det.predict([img], conf=0.1)[0]) >= 1


@pytest.mark.parametrize(
    "arch,first", [("resnet18", "conv1.weight"), ("mobilenet_v3_large", "features.0.0.weight")]
)
def test_imagenet_backbones_load_from_the_torch_cache_or_fail_clearly(
    tmp_path, monkeypatch, arch, first
):
    """Through torchvision's weights API, as the zoo: offline, the error names the file and
    the folder; a stand-in file in the cache (random weights) is what the backbone holds."""
    import os

    import torchvision

    from detforge.errors import DetforgeError
    from detforge.models import load_checkpoint, save_checkpoint
    from detforge.models.fastdet.network import TORCHVISION

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = getattr(torchvision.models, TORCHVISION[arch][1]).IMAGENET1K_V1
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(weights.url)
    monkeypatch.setattr(
        torch.hub,
        "download_url_to_file",
        lambda *a, **k: (_ for _ in ()).throw(OSError("network is unreachable")),
    )
    with pytest.raises(DetforgeError) as e:
        build("det-n", ["a"], backbone=arch, pretrained="imagenet")
    assert str(cached) in str(e.value) and "--pretrained none" in str(e.value)
    torch.manual_seed(1)
    standin = getattr(torchvision.models, arch)().state_dict()
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(standin, cached)
    model = build("det-n", ["a", "b"], imgsz=64, backbone=arch, pretrained="imagenet")
    got = dict(model.backbone.named_parameters())
    assert any(torch.equal(p, standin[first]) for p in got.values())  # the first conv
    model.train()
    img = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)]
    tgt = [{"boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]), "labels": torch.tensor([1])}]
    assert torch.isfinite(sum(model(img, tgt).values()))
    path = save_checkpoint(tmp_path / "m.pt", model.eval())  # rebuilds without the download
    again, _ = load_checkpoint(path)
    assert again.options["backbone"] == arch
    with pytest.raises(DetforgeError, match="own backbone has no ImageNet"):
        build("det-n", ["a"], pretrained="imagenet")
