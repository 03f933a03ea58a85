"""Classification on the detection pipeline: class folders in, a classifier that learns,
top-k evaluation, prediction, ONNX, and clear errors for the classic mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import detforge
from detforge.cli import app
from detforge.data.synth import classify_folders
from detforge.engine.train.loop import train
from detforge.errors import DetforgeError

from conftest import LEARN_SEED, assert_same_weights, cut_and_resume, hold_bars

# resnet18 from scratch at 64 px: 300 images (240 train, 60 val), 12 epochs. At 150 images the
# run sat at the edge of generalizing (0.53 to 0.87 by kernel path and seed: chaotic); see the
# seeds x kernel-paths table in benchmarks/learning_margins.py for what this budget measures.
N_IMAGES, EPOCHS, TOP1_BAR = 300, 12, 0.75


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cls")
    classify_folders(root / "data", N_IMAGES, size=(64, 64), seed=0, sizes=True)
    r = train(
        data=str(root / "data"),
        model="resnet18",
        task="classify",
        epochs=EPOCHS,
        imgsz=64,
        batch=8,
        workers=0,
        lr=1e-3,
        project=str(root / "runs"),
        seed=LEARN_SEED,
    )
    return root, r


@pytest.mark.slow
@pytest.mark.learning
def test_classifier_learns_and_evaluates(trained):
    root, r = trained
    w = Path(r["run_dir"]) / "weights" / "best.pt"
    m = detforge.evaluate(w, root / "data", project=root / "runs")
    hold_bars(
        "classifier",
        val_top1=(r["best"], ">=", TOP1_BAR),
        all_top1=(m["top1"], ">=", TOP1_BAR),  # every image, train included
    )
    assert r["task"] == "classify"
    rows = (Path(r["run_dir"]) / "metrics.csv").read_text().splitlines()
    assert "top1" in rows[0] and len(rows) == EPOCHS + 1
    assert m["top5"] == 1.0  # three classes
    assert set(m["per_class"]) == {"circle", "square", "triangle"}
    assert (Path(m["run_dir"]) / "confusion_matrix.png").is_file()
    assert sum(map(sum, m["confusion"])) == N_IMAGES
    saved = json.loads((Path(m["run_dir"]) / "results.json").read_text())
    assert saved["top1"] == pytest.approx(m["top1"])


@pytest.mark.slow
@pytest.mark.learning
def test_predict_and_onnx_parity(trained):
    root, r = trained
    w = Path(r["run_dir"]) / "weights" / "best.pt"
    rep = detforge.export(w, root / "c.onnx", dynamic_batch=True)
    assert rep["parity"]["same_top1"] and rep["parity"]["max_prob_diff"] <= 1e-4
    a = detforge.load(w).predict(root / "data" / "square", batch=8)
    b = detforge.load(rep["path"]).predict(root / "data" / "square", batch=8)
    assert len(a) == N_IMAGES // 3
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-4)
        assert x.probs.sum() == pytest.approx(1.0, abs=1e-5)
    squares = np.mean([x.topk(1)[0][0] == "square" for x in a])
    hold_bars("classifier", squares_top1=(squares, ">=", TOP1_BAR))
    # the exported model evaluates like the checkpoint
    m_pt = detforge.evaluate(w, root / "data", project=root / "runs", name="pt")
    m_onnx = detforge.evaluate(rep["path"], root / "data", project=root / "runs", name="onnx")
    assert m_onnx["top1"] == pytest.approx(m_pt["top1"], abs=1 / N_IMAGES)  # one tie may flip


# Textures whose classes differ only by their pattern (detforge.data.synth.texture), at 48 px:
# 100 a class, 30 a class held out; 15 epochs of resnet18 from scratch with the classifiers'
# recipe (the whole image at eval's scale). Held-out top-1 over seeds 0-1 x kernel paths
# default/avx2/avx512: 0.756-0.844 (bar 0.65); at one thread (pytest -n on two cores), seeds
# 0-2: 0.722-0.833. With the old random-resized crop this training
# was chaotic (one seed at chance); benchmarks/bench_recipes.py --part classify measures both
# sides against a plain loop at 96 px.
TEXTURE_PER_CLASS, TEXTURE_EPOCHS, TEXTURE_BAR = 100, 15, 0.65


@pytest.mark.slow
@pytest.mark.learning
def test_classifier_recipe_learns_textures(tmp_path):
    from detforge.data.synth import texture_folders

    root = texture_folders(tmp_path / "tex", TEXTURE_PER_CLASS, held_out=30, size=48, seed=0)
    r = train(data=str(root / "train"), model="resnet18", epochs=TEXTURE_EPOCHS, imgsz=48,
              workers=0, project=str(tmp_path / "runs"), seed=LEARN_SEED)  # fmt: skip
    cfg = (Path(r["run_dir"]) / "config.yaml").read_text()
    assert "crop_scale:\n  - 1.0\n  - 1.0" in cfg  # the recipe, recorded in the run
    m = detforge.evaluate(Path(r["run_dir"]) / "weights" / "best.pt", root / "test",
                          project=str(tmp_path / "runs"))  # fmt: skip
    hold_bars("classifier textures", held_out_top1=(m["top1"], ">=", TEXTURE_BAR))


def test_csv_split_yaml_trains(tmp_path):
    """filename,label CSV -> stratified split written as CSV + data.yaml -> a classifier."""
    from detforge.data import read, write

    src = classify_folders(tmp_path / "folders", 24, size=(32, 32))
    write(src, tmp_path / "csv", "csv")
    res = CliRunner().invoke(
        app,
        ["data", "split", str(tmp_path / "csv"), "--out", str(tmp_path / "split")]
        + ["--ratios", "0.75,0.25"],
        catch_exceptions=False,
    )
    assert res.exit_code == 0 and (tmp_path / "split" / "val" / "labels.csv").is_file()
    assert read(tmp_path / "split" / "val").task == "classify"
    res = CliRunner().invoke(
        app,
        ["train", "--data", str(tmp_path / "split" / "data.yaml"), "--model", "resnet18"]
        + ["--epochs", "1", "--imgsz", "32", "--batch", "4", "--workers", "0"]
        + ["--balanced", "--name", "csv", "--project", str(tmp_path / "runs")],
        catch_exceptions=False,
    )
    assert res.exit_code == 0, res.stdout
    assert "18 train, 6 val images" in res.stdout.replace("\n", " ") and "top-1" in res.stdout


KW = dict(epochs=1, imgsz=32, batch=4, workers=0)


def test_one_class_and_an_empty_class_are_refused(tmp_path):
    one = tmp_path / "one" / "cats"
    one.mkdir(parents=True)
    classify_folders(tmp_path / "tmp", 6)
    for p in (tmp_path / "tmp" / "circle").iterdir():
        p.rename(one / p.name)
    with pytest.raises(DetforgeError, match="only one class"):
        train(data=str(tmp_path / "one"), model="resnet18", project=str(tmp_path / "r"), **KW)
    data = tmp_path / "data"
    classify_folders(data, 12)
    (data / "empty").mkdir()
    with pytest.raises(DetforgeError, match="empty"):
        train(data=str(data), model="resnet18", project=str(tmp_path / "r"), **KW)


def test_model_and_task_must_fit_the_data(tmp_path):
    classify_folders(tmp_path / "data", 12)
    kw = dict(data=str(tmp_path / "data"), project=str(tmp_path / "r"), **KW)
    with pytest.raises(DetforgeError, match="does not fit a classify dataset") as e:
        train(model="ssdlite", **kw)
    assert "resnet18" in e.value.hint  # the hint names models that fit
    with pytest.raises(DetforgeError, match="--task detect"):
        train(model="ssdlite", task="detect", **kw)


def test_bad_model_options_are_refused_before_building(tmp_path):
    from detforge.models import build

    classify_folders(tmp_path / "data", 12)
    kw = dict(data=str(tmp_path / "data"), project=str(tmp_path / "r"), **KW)
    with pytest.raises(DetforgeError, match="needs 3 positive numbers"):
        train(model="resnet18", model_options={"class_weights": [1, 2]}, **kw)
    with pytest.raises(DetforgeError, match="'ssdlite' has no option 'class_weights'") as e:
        build("ssdlite", ["a", "b"], class_weights=[1, 2])
    assert "imgsz, max_det, pretrained" in e.value.hint  # its real options
    with pytest.raises(DetforgeError, match="option max_det='many' must be int"):
        build("ssdlite", ["a", "b"], max_det="many")


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    """A mobilenet classifier trained one epoch on images of mixed sizes."""
    root = tmp_path_factory.mktemp("one")
    classify_folders(root / "data", 12)
    r = train(data=str(root / "data"), model="mobilenet_v3_large", project=str(root / "r"), **KW)
    return root, Path(r["run_dir"]) / "weights" / "last.pt"


def test_eval_on_other_classes_and_box_formats_are_refused(one_epoch, tmp_path):
    root, w = one_epoch
    other = tmp_path / "other"
    classify_folders(other, 8)
    (other / "square").rename(other / "box")
    with pytest.raises(DetforgeError, match="classes"):
        detforge.evaluate(w, other, project=tmp_path / "runs")
    with pytest.raises(DetforgeError, match="predictions go to jsonl"):
        detforge.predict(
            detforge.load(w), str(root / "data"), out=tmp_path, fmt="csv", progress=False
        )
    with pytest.raises(DetforgeError, match="--save-labelme needs a detector"):
        detforge.predict(detforge.load(w), str(root / "data"), out=tmp_path, save_labelme=True)


def test_export_command_reports_probability_parity(one_epoch):
    _, w = one_epoch
    res = CliRunner().invoke(app, ["export", str(w)], catch_exceptions=False)
    assert res.exit_code == 0
    assert "max probability diff" in res.stdout and "same top-1" in res.stdout


def test_classifier_predicts_video_frames(one_epoch, tmp_path):
    """Top-k per frame and an annotated video, into a folder made on the way."""
    from detforge.data.synth import video

    _, w = one_epoch
    clip, _, _ = video(tmp_path / "clip.mp4", frames=12, size=(96, 64), fps=10)
    s = detforge.predict(detforge.load(w), str(clip), out=tmp_path / "pred" / "v", progress=False)
    assert s["frames"] == 12 and Path(s["video"]).stat().st_size > 0
    assert sum(s["counts"].values()) == 12 and set(s["counts"]) <= {"circle", "square", "triangle"}
    lines = Path(s["predictions"]).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 12 and all(len(r["names"]) == len(r["scores"]) == 3 for r in rows)
    assert all(r["boxes"] == [] and r["scores"] == sorted(r["scores"], reverse=True) for r in rows)
    assert all(sum(r["scores"]) == pytest.approx(1, abs=1e-3) for r in rows)


def _imbalanced(root: Path, keep_square: int = 3) -> Path:
    classify_folders(root, 24, size=(40, 40), sizes=True)
    for p in sorted((root / "square").iterdir())[keep_square:]:
        p.unlink()
    return root


def test_balanced_sampler_evens_out_classes_and_replays():
    from detforge.data.torch.loader import BalancedSampler

    keys = ["a"] * 90 + ["b"] * 10
    draw = lambda rank=0, world=1: list(  # noqa: E731
        BalancedSampler(keys, torch.Generator().manual_seed(5), rank, world)
    )
    epochs = [i for _ in range(20) for i in BalancedSampler(keys, torch.Generator())]
    share_b = np.mean([keys[i] == "b" for i in epochs])
    assert 0.45 < share_b < 0.55  # 10% of the images, half of the draws
    assert draw() == draw()  # the generator decides: a resumed run draws the same
    halves = draw(0, 2), draw(1, 2)
    assert len(halves[0]) == len(halves[1]) == 50
    assert [i for pair in zip(*halves) for i in pair] == draw()  # one draw, sliced per rank


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_classifier_resumes_exactly(tmp_path, monkeypatch):
    """Stopped mid-epoch and resumed, with every random part on (balanced sampling, mixup,
    augmentation), the weights equal an uninterrupted run's bit for bit."""
    data = _imbalanced(tmp_path / "data")
    kw = dict(
        data=str(data),
        model="resnet18",
        epochs=2,
        imgsz=32,
        batch=4,
        workers=0,
        lr=1e-3,
        balanced=True,
        model_options={"mixup": 0.4, "class_weights": "balanced", "label_smoothing": 0.1},
        project=str(tmp_path / "runs"),
        seed=2,
    )
    a, b, cut, _ = cut_and_resume(monkeypatch, 3, **kw)  # stops after batch 2 of 3
    assert cut["stopped"].startswith("interrupted in epoch 1") and b["train"]["complete"]
    assert_same_weights(a, b)
    # class_weights: balanced became inverse class frequencies of the training split
    from detforge.data import read
    from detforge.data.split import split

    held = split(read(data), (0.8, 0.2), seed=2)["train"]
    counts = np.bincount([s.category for s in held])
    w = np.array(a["model"]["options"]["class_weights"])
    assert counts[1] < counts[0] and w.mean() == pytest.approx(1)
    np.testing.assert_allclose(w * counts, w[0] * counts[0], rtol=1e-5)


def test_imagenet_weights_load_from_the_torch_cache_or_fail_clearly(tmp_path, monkeypatch):
    """``--pretrained imagenet`` goes through torchvision's weights API: a file in the torch
    cache is loaded (backbone kept, a new head for our classes); offline, the error says where
    to put the file. The stand-in file holds random weights: none can be downloaded here."""
    import os

    import torchvision

    from detforge.models import build

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(url)

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(DetforgeError) as e:
        build("resnet18", ["a", "b"], pretrained="imagenet")
    assert str(cached) in str(e.value) and "--pretrained none" in str(e.value)
    torch.manual_seed(1)
    standin = torchvision.models.resnet18().state_dict()
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(standin, cached)
    model = build("resnet18", ["a", "b", "c"], pretrained="imagenet")
    torch.testing.assert_close(model.net.conv1.weight, standin["conv1.weight"])
    torch.testing.assert_close(
        model.net.layer4[1].bn2.running_var, standin["layer4.1.bn2.running_var"]
    )
    assert model.net.fc.out_features == 3
    with pytest.raises(DetforgeError, match="no COCO weights"):
        build("resnet18", ["a", "b"], pretrained="coco")
