"""Fallbacks that used to be silent are a clear error or a one-line warning now."""

import warnings

import pytest
import torch

from detforge.data import read, write
from detforge.data.records import encode_example, frame, label_map_text
from detforge.data.synth import generate
from detforge.data.torch.loader import ShardDataset
from detforge.engine.train.config import ConfigError
from detforge.engine.train.loop import train
from detforge.errors import FormatError

from conftest import save_image


def test_a_box_of_an_unknown_class_in_a_shard_names_the_record(tmp_path):
    jpeg = save_image(tmp_path / "a.jpg", w=40, h=30, fmt="JPEG").read_bytes()
    box = {
        "image/object/bbox/xmin": [0.1],
        "image/object/bbox/ymin": [0.1],
        "image/object/bbox/xmax": [0.5],
        "image/object/bbox/ymax": [0.5],
    }

    def record(cid, text):
        feats = {"image/encoded": [jpeg], **box, "image/object/class/label": [cid]}
        return frame(encode_example({**feats, "image/object/class/text": [text]}))

    (tmp_path / "label_map.pbtxt").write_text(label_map_text(["cat"]))
    (tmp_path / "x.record").write_bytes(record(1, b"cat") + record(7, b"zebra"))
    items = iter(ShardDataset(tmp_path / "x.record"))
    _, t = next(items)
    assert t["labels"].tolist() == [0]
    with pytest.raises(FormatError, match=r"x\.record \(record 1\).*not one of the dataset"):
        next(items)


def test_link_that_has_to_copy_says_so(tmp_path):
    write(generate(tmp_path / "img", 4, size=(64, 64)), tmp_path / "s", "yolo")
    files = read(tmp_path / "s")  # images are files: links work, nothing to say
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write(files, tmp_path / "linked", "voc", images="link")
    records = tmp_path / "rec"  # images inside records: nothing to link to
    write(files, records, "tfrecord")
    with pytest.warns(UserWarning, match=r"--link: 4 of 4 images .* copied, not linked"):
        write(read(records), tmp_path / "from-records", "voc", images="link")


@pytest.fixture
def one_epoch_run(tmp_path):
    ds = generate(tmp_path / "img", 8, size=(64, 64), max_objects=2)
    write(ds, tmp_path / "set", "yolo")
    (tmp_path / "data.yaml").write_text("train: set\nval: set\n")
    kw = dict(data=str(tmp_path / "data.yaml"), model="ssdlite", imgsz=64, batch=4, workers=0)
    r = train(epochs=1, project=str(tmp_path / "runs"), **kw)
    return tmp_path / "runs" / "train" / "exp", r


def test_resume_applies_what_may_change_and_refuses_the_rest(one_epoch_run, capsys):
    run, _ = one_epoch_run
    with pytest.raises(ConfigError, match="cannot change model, lr") as e:
        train(resume=run, epochs=2, lr=0.5, model="tracker")
    assert "epochs, device, workers" in e.value.hint
    r = train(resume=run, epochs=2, workers=1, device="cpu", imgsz=64)  # imgsz: as saved
    assert r["epochs"] == 2
    assert "resuming with epochs=2, device=cpu, workers=1" in capsys.readouterr().out
    saved = torch.load(run / "weights" / "last.pt", weights_only=True)
    assert saved["train"]["config"]["workers"] == 1 and saved["data"]["train_images"] == 8


def test_a_data_yaml_without_a_train_split_is_an_error(tmp_path):
    write(generate(tmp_path / "img", 4, size=(64, 64)), tmp_path / "val", "yolo")
    (tmp_path / "data.yaml").write_text("val: val\n")
    with pytest.raises(ConfigError, match="names no train split"):
        train(data=str(tmp_path / "data.yaml"), epochs=1, project=str(tmp_path / "runs"))
