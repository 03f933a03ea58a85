"""Pascal VOC as LabelImg and labelme write it, flat or VOCdevkit, with stale paths."""

import numpy as np
import pytest

from detforge.data import formats, read
from detforge.data.formats import voc
from detforge.errors import FormatError

from conftest import save_image

XML = """<annotation>
\t<folder>images</folder>
\t<filename>{fn}</filename>
\t<path>{path}</path>
\t<source><database>Unknown</database></source>
\t<size><width>{w}</width><height>{h}</height><depth>3</depth></size>
\t<segmented>0</segmented>
{objects}</annotation>
"""
OBJ = """\t<object>
\t\t<name>{name}</name><pose>Unspecified</pose>
\t\t<truncated>{t}</truncated>
\t\t<difficult{d}
\t\t<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox>
\t</object>
"""


def voc_xml(path, fn, objects, w=64, h=48, stale="C:\\Users\\someone\\Desktop\\imgs\\{fn}"):
    objs = "".join(
        OBJ.format(name=n, b=b, t=t, d="/>" if d is None else f">{d}</difficult>")
        for n, b, t, d in objects
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(XML.format(fn=fn, path=stale.format(fn=fn), w=w, h=h, objects=objs))
    return path


def test_raccoon_layout_stale_path_floats_and_empty_tags(tmp_path):
    """annotations/ beside images/, an absolute <path> from another machine (like raccoon)."""
    save_image(tmp_path / "images" / "r1.jpg", fmt="JPEG")
    voc_xml(
        tmp_path / "annotations" / "r1.xml",
        "r1.jpg",
        [("raccoon", [1.5, 2.25, 30, 40], 1, None), ("raccoon", [3, 4, 5, 6], 0, 1)],
    )
    assert formats.detect(tmp_path) == "voc"
    ds = read(tmp_path)
    s = ds[0]
    assert s.path == (tmp_path / "images" / "r1.jpg").resolve()
    np.testing.assert_allclose(s.boxes, [[1.5, 2.25, 30, 40], [3, 4, 5, 6]])
    assert s.truncated.tolist() == [True, False] and s.difficult.tolist() == [False, True]


def test_user_images_dir_and_missing_extension(tmp_path):
    save_image(tmp_path / "pics" / "p.png", fmt="PNG")
    voc_xml(tmp_path / "xml" / "p.xml", "p", [("cat", [1, 1, 9, 9], 0, 0)])
    with pytest.raises(FormatError, match=r"no usable images.*missing_image.*--images"):
        read(tmp_path / "xml")
    ds = read(tmp_path / "xml", images=tmp_path / "pics")
    assert ds[0].path.name == "p.png"


def test_vocdevkit_layout_with_split(tmp_path):
    for i in range(4):
        save_image(tmp_path / "JPEGImages" / f"{i}.jpg", fmt="JPEG", seed=i)
        voc_xml(tmp_path / "Annotations" / f"{i}.xml", f"{i}.jpg", [("a", [1, 1, 5, 5], 0, 0)])
    (tmp_path / "ImageSets" / "Main").mkdir(parents=True)
    (tmp_path / "ImageSets" / "Main" / "val.txt").write_text("1\n3\n")
    assert len(read(tmp_path)) == 4
    assert sorted(s.path.stem for s in voc.read(tmp_path, split="val")) == ["1", "3"]
    with pytest.raises(FormatError, match="test.txt"):
        voc.read(tmp_path, split="test")


def test_negative_xml_and_size_from_image(tmp_path):
    save_image(tmp_path / "n.jpg", 64, 48, fmt="JPEG")
    voc_xml(tmp_path / "n.xml", "n.jpg", [], w=0, h=0)
    ds = read(tmp_path)
    assert ds.num_negatives == 1 and (ds[0].width, ds[0].height) == (64, 48)
    assert ds.issues == []


def test_entity_expansion_is_refused(tmp_path):
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]><annotation><filename>&lol2;</filename>'
        "</annotation>"
    )
    (tmp_path / "bomb.xml").write_text(bomb)
    with pytest.raises(FormatError, match="bomb.xml"):
        read(tmp_path / "bomb.xml", "voc")


def test_bad_coordinate_names_file(tmp_path):
    save_image(tmp_path / "a.jpg", fmt="JPEG")
    voc_xml(tmp_path / "a.xml", "a.jpg", [("x", ["one", 1, 5, 5], 0, 0)])
    with pytest.raises(FormatError, match=r"a\.xml.*xmin"):
        read(tmp_path / "a.xml")


def test_written_xml_reads_like_labelimg(synth_ds, tmp_path):
    dst = voc.write(synth_ds, tmp_path / "v")
    assert (dst / "Annotations").is_dir() and (dst / "JPEGImages").is_dir()
    assert (dst / "ImageSets" / "Main" / "all.txt").read_text().count("\n") == len(synth_ds)
    text = next((dst / "Annotations").glob("*.xml")).read_text()
    assert text.startswith("<annotation>") and "<bndbox>" in text or "<object>" not in text
