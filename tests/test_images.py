"""Odd image modes, EXIF orientation and broken files all end as RGB uint8 or a clear error."""

import io

import numpy as np
import pytest
from PIL import Image

from detforge.data import image as imageio
from detforge.errors import ImageError

from conftest import save_image


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "RGBA", "LA", "1", "I;16"])
def test_modes_decode_to_rgb_uint8(tmp_path, mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    if mode == "I;16":
        arr = (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 20).astype(np.uint16)
        p = tmp_path / "a.png"
        Image.fromarray(arr).save(p)
        assert Image.open(p).mode.startswith("I")
    else:
        p = save_image(tmp_path / f"a.{fmt.lower()}", mode=mode, fmt=fmt)
    out = imageio.load(imageio.FileImage(p))
    assert out.dtype == np.uint8 and out.shape == (48, 64, 3)
    if mode == "I;16":  # 16-bit scaled to 8-bit, not clipped
        assert out.max() > 200 and out[0, 0, 0] == 0


def test_alpha_composited_over_white(tmp_path):
    p = tmp_path / "t.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(p)
    assert (imageio.load(imageio.FileImage(p)) == 255).all()


def _exif_jpeg(path, orientation, w=60, h=40):
    img = Image.new("RGB", (w, h), (0, 0, 0))
    img.paste((255, 255, 255), (0, 0, 10, 10))  # white block at top-left of the stored image
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, "JPEG", exif=exif.tobytes(), quality=100)
    return path


def test_exif_orientation_applied(tmp_path):
    p = _exif_jpeg(tmp_path / "r.jpg", 6)  # rotate 90 CW for display
    w, h, o = imageio.file_info(p)
    assert (w, h, o) == (40, 60, 6)
    arr = imageio.load(imageio.FileImage(p))
    assert arr.shape == (60, 40, 3)
    assert arr[:10, -10:].mean() > 200  # top-left block is now top-right


@pytest.mark.parametrize("value", [0, 9, 100])
def test_invalid_orientation_ignored(tmp_path, value):
    p = _exif_jpeg(tmp_path / "bad.jpg", value)
    assert imageio.file_info(p) == (60, 40, 1)
    assert imageio.load(imageio.FileImage(p)).shape == (40, 60, 3)


def test_truncated_and_empty_files_are_reported(tmp_path):
    good = save_image(tmp_path / "g.jpg", 200, 200, fmt="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(good.read_bytes()[:600])
    with pytest.raises(ImageError, match="cut.jpg"):
        imageio.load(imageio.FileImage(cut))
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        imageio.load(imageio.FileImage(empty))
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="junk.png"):
        imageio.load(imageio.FileImage(junk))
    with pytest.raises(ImageError, match="not found"):
        imageio.load(imageio.FileImage(tmp_path / "nope.jpg"))


def test_embedded_image_reads_base64(tmp_path):
    import base64
    import json

    buf = io.BytesIO()
    Image.new("RGB", (5, 4), (1, 2, 3)).save(buf, "PNG")
    j = tmp_path / "x.json"
    j.write_text(json.dumps({"imageData": base64.b64encode(buf.getvalue()).decode()}))
    arr = imageio.load(imageio.EmbeddedImage(j, "x.png"))
    assert arr.shape == (4, 5, 3) and tuple(arr[0, 0]) == (1, 2, 3)


def test_48bit_png_and_unreadable_image_in_a_dataset(tmp_path):
    import cv2

    from detforge.data import read

    rgb16 = np.zeros((6, 8, 3), np.uint16)
    rgb16[..., 0] = 65535  # full red, stored BGR by OpenCV
    p = tmp_path / "images" / "deep.png"
    p.parent.mkdir()
    cv2.imwrite(str(p), rgb16)
    out = imageio.load(imageio.FileImage(p))
    assert out.dtype == np.uint8 and out.shape == (6, 8, 3) and out[0, 0].tolist() == [0, 0, 255]
    (tmp_path / "images" / "zero.jpg").write_bytes(b"")
    (tmp_path / "a.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\n"
        "deep.png,,,x,1,1,5,5\nzero.jpg,,,x,1,1,5,5\n"
    )
    ds = read(tmp_path / "a.csv")  # the zero-byte image is reported, the rest still reads
    assert len(ds) == 1 and [i.kind for i in ds.issues] == ["unreadable_image"]
    assert "zero.jpg" in ds.issues[0].path
