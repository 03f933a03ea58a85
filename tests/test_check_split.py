"""data check finds what is wrong and fixes copies; data split is seeded and stratified."""

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import detforge
from detforge.data import read, write
from detforge.data.check import check, fix
from detforge.data.split import split, split_indices
from detforge.errors import DetforgeError


def _broken(synth_ds, tmp_path):
    """A VOC copy of the synthetic set with one of each problem injected."""
    ds = synth_ds
    pos = [i for i, s in enumerate(ds) if len(s.boxes) >= 2]
    s = ds[pos[0]]
    s.boxes[0] = [-10, 5, s.width + 20, 30]  # out of bounds
    s = ds[pos[1]]
    s.boxes[0] = [20, 50, 50, 60]  # inverted below, in the XML (writers refuse to write it)
    s.boxes[1] = [10, 10, 10, 30]  # zero area
    inverted = s.path.stem
    s = ds[pos[2]]
    ds.samples[pos[2]] = s.replace(
        boxes=np.concatenate([s.boxes, s.boxes[:1]]),  # duplicate box
        labels=np.concatenate([s.labels, s.labels[:1]]),
    )
    dst = write(ds, tmp_path / "voc", "voc")
    xml = dst / "Annotations" / f"{inverted}.xml"
    text = xml.read_text().replace("<xmin>20</xmin>", "<xmin>50</xmin>", 1)
    xml.write_text(text.replace("<xmax>50</xmax>", "<xmax>20</xmax>", 1))
    imgs = sorted((dst / "JPEGImages").iterdir())
    shutil.copyfile(imgs[0], imgs[1])  # duplicate image (of another size than its XML says)
    imgs[2].write_bytes(imgs[2].read_bytes()[:300])  # truncated image
    return dst, imgs


def test_check_finds_each_problem(synth_ds, tmp_path):
    dst, imgs = _broken(synth_ds, tmp_path)
    report = check(read(dst), progress=False)
    assert report.by_kind() == {  # each injected problem once, and nothing else
        "out_of_bounds": 1,
        "inverted": 1,
        "zero_area": 1,
        "duplicate_box": 1,
        "duplicate_image": 1,
        "size_mismatch": 1,  # the copied image is not the size its XML says
        "unreadable_image": 1,
    }
    assert not report.ok and report.errors == 4  # inverted, zero area, size, unreadable
    bad = next(f for f in report.findings if f.kind == "unreadable_image")
    assert imgs[2].name in bad.path


def test_fix_writes_a_clean_copy_and_keeps_the_source(synth_ds, tmp_path):
    dst, imgs = _broken(synth_ds, tmp_path)
    before = {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    for policy in ("clip", "drop"):
        out, after = detforge.fix(dst, tmp_path / f"fixed-{policy}", policy=policy)
        assert after.ok, after.by_kind()
        fixed = read(out)
        assert len(fixed) == len(synth_ds) - 1  # the unreadable image is dropped
        assert all((s.boxes[:, 2:] > s.boxes[:, :2]).all() for s in fixed)
        assert all((s.boxes >= 0).all() and (s.boxes[:, 2] <= s.width).all() for s in fixed)
    assert before == {p: p.read_bytes() for p in dst.rglob("*") if p.is_file()}
    with pytest.raises(DetforgeError, match="clip or drop"):
        fix(read(dst), check(read(dst), progress=False), "nope")


def test_size_mismatch_and_exif_are_reported(tmp_path):
    from PIL import Image

    img = Image.new("RGB", (60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    img.save(tmp_path / "images" / "r.jpg", exif=exif.tobytes())
    img.save(tmp_path / "images" / "s.jpg")
    (tmp_path / "a.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "r.jpg,60,40,x,1,1,5,5\ns.jpg,99,40,x,1,1,5,5\n"
    )
    report = check(read(tmp_path / "a.csv"), progress=False)
    kinds = report.by_kind()
    assert kinds["exif_unrotated"] == 1 and kinds["size_mismatch"] == 1


def test_unknown_class_names(synth_ds):
    report = check(synth_ds, names=["circle", "square"], progress=False)
    assert any(f.kind == "unknown_class" and "triangle" in f.message for f in report.findings)


def test_split_is_deterministic_disjoint_and_stratified(tmp_path):
    from detforge.data.synth import generate

    ds = generate(tmp_path / "s", 120, seed=3, size=(64, 64), negatives=0.2)
    a = split(ds, (0.7, 0.15, 0.15), seed=0)
    b = split(ds, "0.7,0.15,0.15", seed=0)
    c = split(ds, (0.7, 0.15, 0.15), seed=1)
    names = {k: sorted(s.name for s in v) for k, v in a.items()}
    assert names == {k: sorted(s.name for s in v) for k, v in b.items()}
    assert names != {k: sorted(s.name for s in v) for k, v in c.items()}
    allnames = [n for v in names.values() for n in v]
    assert len(allnames) == len(set(allnames)) == len(ds)
    assert [len(a[k]) for k in ("train", "val", "test")] == [84, 18, 18]
    neg = {k: v.num_negatives for k, v in a.items()}
    total_neg = ds.num_negatives
    assert abs(neg["train"] - 0.7 * total_neg) <= 1.5 and abs(neg["val"] - 0.15 * total_neg) <= 1.5
    for part in a.values():  # every class appears in every split
        present = {int(c) for s in part for c in s.labels}
        assert present == {0, 1, 2}


def test_split_indices_ratios_and_errors():
    keys = ["a"] * 7 + ["b"] * 3
    parts = split_indices(keys, [0.5, 0.5], seed=0)
    assert sorted(parts[0] + parts[1]) == list(range(10))
    assert Counter(keys[i] for i in parts[0]) + Counter(keys[i] for i in parts[1]) == Counter(keys)
    with pytest.raises(DetforgeError, match="sum"):
        split_indices(keys, [0.5, 0.6])


def test_split_writes_folders_and_data_yaml(synth_ds, tmp_path):
    parts = detforge.split(synth_ds, tmp_path / "out", ratios="0.5,0.5", to="coco")
    splits = detforge.read_splits(tmp_path / "out" / "data.yaml")
    assert set(splits) == {"train", "val"}
    for k in splits:
        assert sorted(s.name for s in splits[k]) == sorted(s.name for s in parts[k])
        assert splits[k].format == "coco"


def test_split_counts_what_it_wrote_when_an_image_does_not_decode(synth_ds, tmp_path):
    bad = synth_ds.samples[3].image.path
    data = Path(bad).read_bytes()
    Path(bad).write_bytes(data[: len(data) // 3])  # a truncated file among good ones
    with pytest.warns(UserWarning, match=Path(bad).name):
        parts = detforge.split(synth_ds, tmp_path / "out", ratios="0.5,0.5", to="coco")
    assert sum(len(p) for p in parts.values()) == len(synth_ds) - 1
    splits = detforge.read_splits(tmp_path / "out" / "data.yaml")
    for k in splits:
        assert len(splits[k]) == len(parts[k])  # the counts printed are the files written
        assert splits[k].num_boxes == parts[k].num_boxes
    assert Path(bad).read_bytes() == data[: len(data) // 3]  # the source is never edited


def test_an_outside_image_is_a_finding_and_the_old_spellings_still_work(tmp_path):
    """``check`` lists an annotation's image outside the dataset as ``outside_path`` and
    skips it (``outside_paths='skip'``); the spellings before 0.1.0 (``'report'``, the
    ``Report`` class) work with one FutureWarning each."""
    import detforge.data.check as check_module

    from badinputs import good_labelme, jpeg, labelme, put

    ds = tmp_path / "src" / "ds"
    good_labelme(ds, n=3)
    put(tmp_path / "secret" / "x.jpg", jpeg(seed=9))  # not the dataset's, nor a sibling's
    labelme(ds / "esc.json", "../../secret/x.jpg")
    result = detforge.check(ds, progress=False)
    assert result.images == 3 and [f.kind for f in result.findings] == ["outside_path"]
    assert "esc.json" in result.findings[0].path and "x.jpg" in result.findings[0].message
    with pytest.warns(FutureWarning, match="'report' is now 'skip'"):
        old = detforge.check(ds, progress=False, outside_paths="report")
    assert old.to_dict() == result.to_dict()
    with pytest.warns(FutureWarning, match="Report is now CheckResult"):
        assert check_module.Report is check_module.CheckResult
    with pytest.raises(DetforgeError, match="points outside the dataset"):
        read(ds)  # reading for training refuses it
