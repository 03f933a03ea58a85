"""det-n's shipped formula-pretrained weights (`--pretrained synthetic`) and the pretraining
source they come from (`--data formula`): the file's checksum, the class head re-built for
the user's classes, a damaged copy refused, a short fine-tune from them, and scenes streamed
new each epoch."""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detforge.errors import DetforgeError
from detforge.models import build
from detforge.models.weights import SHIPPED, load_shipped, shipped_file


def _shipped_state() -> dict:
    path, _ = shipped_file("det-n")
    return torch.load(io.BytesIO(path.read_bytes()), weights_only=True)


def test_the_shipped_file_is_the_one_its_checksum_names():
    path, sha = shipped_file("det-n")
    assert path.is_file() and path.stat().st_size < 4 * 2**20  # a few MB at most
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sha
    assert SHIPPED["det-n"][1] == sha


@pytest.mark.parametrize("classes", [["face"], ["a", "b", "c", "d", "e"]])
def test_pretrained_synthetic_keeps_all_but_the_class_head(classes):
    shipped = _shipped_state()
    model = build("det-n", classes, pretrained="synthetic")
    scratch = build("det-n", classes, pretrained="none").state_dict()
    own = model.state_dict()
    assert not any(k.startswith("head.cls.") for k in shipped)
    for k, v in shipped.items():  # every shipped tensor arrives (fp16 storage, float model)
        assert torch.equal(own[k], v.to(own[k].dtype)), k
    for level in range(3):  # the class head: built for these classes, at its prior
        w, b = own[f"head.cls.{level}.weight"], own[f"head.cls.{level}.bias"]
        assert w.shape[0] == len(classes) and b.shape == (len(classes),)
        assert torch.equal(b, scratch[f"head.cls.{level}.bias"])
    assert int(own["steps"]) == 0  # the static-assignment warm start runs again
    with torch.no_grad():  # and it detects: the same image gives the model's own output
        out = model.eval()([torch.randint(0, 255, (3, 240, 320), dtype=torch.uint8)])
    assert out[0]["boxes"].shape[1] == 4


def test_a_damaged_copy_is_refused(tmp_path):
    path, _ = shipped_file("det-n")
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    model = build("det-n", ["x"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DetforgeError, match="SHA-256.*not loaded") as e:
        load_shipped(model, "det-n", copy)
    assert "reinstall" in e.value.hint
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(DetforgeError, match="det-s has no synthetic"):
        build("det-s", ["x"], pretrained="synthetic")


def test_a_short_fine_tune_starts_from_the_shipped_weights(tmp_path, synth_ds):
    import detforge
    from detforge.data import write
    from detforge.models.checkpoint import read_checkpoint

    write(synth_ds, tmp_path / "data", "yolo")
    r = detforge.train(data=str(tmp_path / "data"), model="det-n", pretrained="synthetic",
                       epochs=1, imgsz=160, batch=4, project=str(tmp_path / "runs"))  # fmt: skip
    import yaml

    ckpt = read_checkpoint(f"{r['run_dir']}/weights/best.pt")
    config = (Path(r["run_dir"]) / "config.yaml").read_text()
    assert yaml.safe_load(config)["pretrained"] == "synthetic"
    assert r["default_conf"] is not None  # a threshold is still chosen and stored
    shipped = _shipped_state()
    moved = [k for k, v in shipped.items() if v.is_floating_point() and k.endswith("weight")
             and not torch.equal(ckpt["state_dict"][k], v.float())]  # fmt: skip
    assert moved  # it trained from there
    near = np.mean([
        float(torch.nn.functional.cosine_similarity(
            ckpt["state_dict"][k].flatten(), shipped[k].float().flatten(), dim=0))
        for k in shipped if k.startswith("backbone") and k.endswith("conv.weight")
    ])  # fmt: skip
    assert near > 0.9  # one epoch moved the backbone a little, not away


def test_formula_scenes_stream_new_each_epoch():
    from detforge.data.formula import formula_splits
    from detforge.data.torch.loader import SceneStream

    train, val = formula_splits("formula:classes=8,seed=2,scenes=5,val=3", 96)
    assert len(train) == 5 and len(val) == 3 and train.classes == val.classes
    stream = SceneStream(train)
    first, _ = stream[1]
    stream.set_epoch(1)
    second, target = stream[1]
    assert not torch.equal(first, second)
    img, boxes, labels = train.scenes.scene(5 + 1)  # epoch 1, item 1
    assert torch.equal(second, torch.from_numpy(img).permute(2, 0, 1))
    assert torch.equal(target["boxes"], torch.from_numpy(boxes))
    for s in val.samples:  # val scenes: real samples whose boxes are the rendered ones
        _, b, lab = s.image.pixels()
        assert np.array_equal(s.boxes, b) and np.array_equal(s.labels, lab)
        assert s.load().shape == (96, 96, 3)


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_train_on_formula_scenes_and_a_bad_spec(tmp_path):
    from typer.testing import CliRunner

    from detforge.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["train", "--data", "formula:classes=6,scenes=16,val=8", "--model",
                            "det-n", "--epochs", "2", "--imgsz", "96", "--batch", "4",
                            "--project", str(tmp_path)])  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "pretraining on formula scenes (6 classes" in r.output
    assert (tmp_path / "train" / "exp" / "weights" / "best.pt").is_file()
    assert (tmp_path / "train" / "exp" / "report.html").is_file()  # scenes have no file: fine
    bad = subprocess.run(  # the console entry point: one line, no traceback
        [sys.executable, "-m", "detforge", "train", "--data", "formula:classes=1", "--model",
         "det-n", "--project", str(tmp_path / "bad")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "bad option 'classes=1'" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad").exists()
