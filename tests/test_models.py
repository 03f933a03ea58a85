"""Every registered model keeps the Detector contract; checkpoints rebuild their model."""

import pytest
import torch

from detforge.errors import DetforgeError
from detforge.models import build, load_checkpoint, names, save_checkpoint

CLASSES = ["a", "b", "c"]


def batch():
    g = torch.Generator().manual_seed(0)
    images = [
        torch.randint(0, 256, (3, 72, 96), dtype=torch.uint8, generator=g),
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=g),
    ]
    targets = [
        {"boxes": torch.tensor([[8.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]  # negative
    return images, targets


@pytest.mark.parametrize("name", names("detect"))  # classify: own tests
def test_forward_backward_and_eval_contract(name, tmp_path):
    torch.manual_seed(0)
    model = build(name, CLASSES, imgsz=64)
    images, targets = batch()
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for o, im in zip(out, images):
        assert o["boxes"].shape[1] == 4 and len(o["boxes"]) == len(o["scores"]) == len(o["labels"])
        if len(o["labels"]):
            assert int(o["labels"].min()) >= 0 and int(o["labels"].max()) < len(CLASSES)
            assert float(o["boxes"][:, 2].max()) <= im.shape[2] + 1e-3
    # a checkpoint alone rebuilds the same model
    save_checkpoint(tmp_path / "m.pt", model, train={"epoch": 1})
    again, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["model"]["name"] == name and ckpt["model"]["classes"] == CLASSES
    with torch.no_grad():
        out2 = again(images)
    for a, b in zip(out, out2):
        torch.testing.assert_close(a["boxes"], b["boxes"])
        torch.testing.assert_close(a["scores"], b["scores"])


def test_uint8_and_float_inputs_agree():
    torch.manual_seed(0)
    model = build("localizer", CLASSES, imgsz=64).eval()
    images, _ = batch()
    with torch.no_grad():
        a = model(images)
        b = model([im.float() / 255 for im in images])
    torch.testing.assert_close(a[0]["boxes"], b[0]["boxes"])


def test_bad_inputs_and_names():
    with pytest.raises(DetforgeError, match="did you mean 'ssdlite'"):
        build("ssdlit", CLASSES)
    model = build("localizer", CLASSES, imgsz=64).eval()
    with pytest.raises(DetforgeError, match=r"expected a \(3, H, W\) tensor"):
        model([torch.zeros(64, 64, 3, dtype=torch.uint8)])
    with pytest.raises(DetforgeError, match="pretrained"):
        build("ssdlite", CLASSES, pretrained="imagenet1k")


def test_tracker_is_now_localizer_and_its_old_name_still_builds_it():
    """Renamed in 0.1.0 (``predict --track`` is the tracker); the old name builds the same
    model with one FutureWarning, and a training config records the new name."""
    from detforge.engine.train.config import load_config

    with pytest.warns(FutureWarning, match="'tracker' is now called 'localizer'"):
        old = build("tracker", CLASSES, imgsz=64)
    assert old.name == "localizer" and type(old).__name__ == "Localizer"
    assert "tracker" not in names() and "localizer" in names()
    with pytest.warns(FutureWarning):
        assert load_config(None, data="x", model="tracker").model == "localizer"


def test_offline_pretrained_error_names_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DetforgeError) as e:
        build("ssdlite", CLASSES, pretrained="coco")
    msg = str(e.value)
    assert "ssdlite320_mobilenet_v3_large_coco" in msg and str(tmp_path) in msg


def test_tracker_refuses_many_objects_unless_largest():
    model = build("localizer", CLASSES, imgsz=64).train()
    images, _ = batch()
    two = [
        {
            "boxes": torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 40, 40]]),
            "labels": torch.tensor([0, 1]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    with pytest.raises(DetforgeError, match="one object per image"):
        model(images, two)
    model = build("localizer", CLASSES, imgsz=64, largest=True).train()
    assert torch.isfinite(sum(model(images, two).values()))


@pytest.mark.parametrize(
    "kind,name",
    [
        ("rcnn", "fasterrcnn-mobilenet-320"),
        ("retinanet", "retinanet"),
        ("fcos", "fcos"),
        ("ssd", "ssdlite"),
    ],
)
def test_coco_rows_move_to_the_new_head(kind, name):
    """Classes named like COCO categories keep their COCO head weights (a random 91-class head
    stands in for the downloaded one)."""
    from types import SimpleNamespace

    from detforge.models import zoo

    fam = zoo.FAMILIES[name]
    categories = fam.coco_weights.meta["categories"]
    torch.manual_seed(0)
    net = fam.builder(weights=None, weights_backbone=None, num_classes=len(categories))
    old = [
        (SimpleNamespace(weight=m.weight.detach().clone(), bias=m.bias.detach().clone()), lay, w)
        for m, lay, w in zoo.head_layers(net, kind)
    ]
    zoo._replace_head(net, kind, 3)  # background + ["raccoon", "dog"]
    keep = zoo.coco_matches(["raccoon", "Dog"], categories)
    j = categories.index("dog")
    assert keep == {0: 0, 2: j}
    new = zoo.head_layers(net, kind)
    zoo.transfer_rows(old, new, keep, len(categories), 3)
    (src, layout, width), (dst, _, _) = old[0], new[0]
    if layout == "class":
        torch.testing.assert_close(
            dst.weight[2 * width : 3 * width], src.weight[j * width : (j + 1) * width]
        )
    else:
        for a in range(width):  # each anchor's "dog" channel
            torch.testing.assert_close(dst.weight[a * 3 + 2], src.weight[a * len(categories) + j])
            torch.testing.assert_close(dst.bias[a * 3 + 0], src.bias[a * len(categories)])


def test_describe_lists_each_models_options_from_its_signature():
    from detforge.models import describe

    table = describe()
    assert list(table).index("ssdlite") < list(table).index("resnet18")  # detectors first
    assert table["ssdlite"]["task"] == "detect"
    opts = {o["name"]: o for o in table["fasterrcnn-mobilenet"]["options"]}
    assert opts["rois"]["type"] == "int | None" and opts["rois"]["default"] is None
    assert opts["imgsz"]["default"] == 800 and opts["max_det"]["type"] == "int"
    assert "rois" not in {o["name"] for o in table["ssdlite"]["options"]}  # only what it takes
    tracker = {o["name"]: o["default"] for o in table["localizer"]["options"]}
    assert tracker == {"imgsz": 224, "backbone": "resnet18", "largest": False, "pretrained": "none"}
    assert table["resnet18"]["task"] == "classify"


def test_a_type_error_inside_a_builder_is_not_reported_as_a_bad_option(monkeypatch):
    from detforge.models import registry

    def broken(classes, *, imgsz: int = 64, pretrained: str = "none"):
        raise TypeError("something inside torchvision went wrong")

    monkeypatch.setitem(
        registry.REGISTRY, "broken", registry.ModelEntry("broken", "detect", "", broken)
    )
    with pytest.raises(TypeError, match="inside torchvision"):
        build("broken", ["a"])
