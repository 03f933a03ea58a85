"""Image references and decoding: every image becomes RGB uint8 HxWx3 in displayed orientation.

A :class:`Sample` points at its pixels through a small picklable reference (a file, a record in
a shard, or a labelme JSON's embedded ``imageData``) so a dataset of 100k images holds no pixels.
"""

from __future__ import annotations

import base64
import io
import json
import os
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from detforge.data.records import read_example_at
from detforge.errors import ImageError, TooManyPixelsError

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
PIXELS_ENV = "DETFORGE_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 89_478_485  # PIL's own limit: about 9459 x 9459
# Bigger images are refused by our own check below (one ImageError naming the file), so PIL's
# warning for them would only repeat it.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def max_pixels() -> int:
    """The pixel count above which an image is refused as a possible decompression bomb:
    ``$DETFORGE_MAX_PIXELS`` (``--max-pixels``), else PIL's default."""
    try:
        return max(1, int(os.environ.get(PIXELS_ENV, DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def set_max_pixels(n: int) -> None:
    """Raise (or lower) the limit for this process and the workers it starts."""
    os.environ[PIXELS_ENV] = str(int(n))
    Image.MAX_IMAGE_PIXELS = max(int(n), DEFAULT_MAX_PIXELS)


def _check_pixels(img: Image.Image, where) -> None:
    w, h = img.size
    if w * h > max_pixels():
        raise TooManyPixelsError(
            where,
            f"image is {w}x{h} = {w * h / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels() / 1e6:.0f} (a decompression bomb?)",
            f"if the image is real, raise the limit: --max-pixels {w * h} "
            f"(or {PIXELS_ENV}={w * h})",
        )


class FileImage:
    """An image file on disk (the path is kept as a string: 100k of these stay small)."""

    __slots__ = ("file",)

    def __init__(self, path: str | Path):
        self.file = os.fspath(path)

    def __repr__(self) -> str:
        return f"FileImage({self.file!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, FileImage) and other.file == self.file

    def __hash__(self) -> int:
        return hash(self.file)

    def __reduce__(self):
        return FileImage, (self.file,)

    @property
    def path(self) -> Path:
        return Path(self.file)

    @property
    def name(self) -> str:
        return os.path.basename(self.file)

    def read(self) -> bytes:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError as e:
            raise ImageError(
                self.path, "image not found", "check the path in the annotation"
            ) from e
        except OSError as e:
            raise ImageError(self.path, f"cannot read image: {e}") from e
        if not data:
            raise ImageError(self.path, "image file is empty (0 bytes)", "re-export or remove it")
        return data

    def size_hint(self) -> int:
        try:
            return os.stat(self.file).st_size
        except OSError:
            return 0

    def exists(self) -> bool:
        return os.path.isfile(self.file)


@dataclass(frozen=True)
class EmbeddedImage:
    """The base64 ``imageData`` inside a labelme JSON, read again on demand."""

    json_path: Path
    name: str

    @property
    def path(self) -> Path:
        return self.json_path.parent / self.name

    def read(self) -> bytes:
        try:
            obj = json.loads(self.json_path.read_text(encoding="utf-8-sig"))
            return base64.b64decode(obj["imageData"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ImageError(self.json_path, f"cannot read embedded imageData: {e}") from e

    def size_hint(self) -> int:
        try:
            return self.json_path.stat().st_size * 3 // 4
        except OSError:
            return 0

    def exists(self) -> bool:
        return self.json_path.is_file()


@dataclass(frozen=True)
class RecordImage:
    """``image/encoded`` of the record at ``offset`` in a TFRecord file."""

    path: Path
    offset: int
    length: int
    name: str

    def read(self) -> bytes:

        ex = read_example_at(self.path, self.offset)
        data = ex.get("image/encoded")
        if not isinstance(data, list) or not data or not data[0]:
            raise ImageError(self.path, f"record at byte {self.offset} holds no image/encoded")
        return data[0]

    def size_hint(self) -> int:
        return self.length

    def exists(self) -> bool:
        return self.path.is_file()


ImageRef = FileImage | EmbeddedImage | RecordImage


def _open(data: bytes, where) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as e:
        raise ImageError(where, "not an image or an unsupported format", "re-export it") from e
    except Image.DecompressionBombError:
        img = None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise ImageError(where, f"corrupt or truncated image: {e}", "re-export or remove it") from e
    if img is None:  # over PIL's own hard limit: read the size without PIL's check
        _bomb(data, where)
    _check_pixels(img, where)
    return img


def _bomb(data: bytes, where) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as e:  # noqa: BLE001 - whatever PIL says of a file this odd
        raise ImageError(where, f"corrupt image: {e}", "re-export or remove it") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    _check_pixels(img, where)


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8), or 1 when absent or invalid."""
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # corrupt EXIF blocks are common in the wild; they carry no rotation
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def info(data: bytes, where=None) -> tuple[int, int, int]:
    """Header-only read: ``(width, height, orientation)``, size in displayed orientation."""
    img = _open(data, where)
    o = orientation(img)
    w, h = img.size
    return (h, w, o) if o in _TRANSPOSED else (w, h, o)


def file_info(path: Path) -> tuple[int, int, int]:
    """Like :func:`info` but reads only the file's header."""
    try:
        with Image.open(path) as img:
            _check_pixels(img, path)
            o = orientation(img)
            w, h = img.size
    except FileNotFoundError as e:
        raise ImageError(path, "image not found", "check the path in the annotation") from e
    except UnidentifiedImageError as e:
        raise ImageError(path, "not an image or an unsupported format", "re-export it") from e
    except Image.DecompressionBombError:
        return info(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as e:
        raise ImageError(path, f"cannot read image: {e}") from e
    return (h, w, o) if o in _TRANSPOSED else (w, h, o)


def to_rgb(img: Image.Image) -> np.ndarray:
    """Convert any PIL mode to RGB uint8: 16/32-bit scaled, alpha composited over white."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        gray = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img, mode = img.convert("RGBA"), "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img)


def decode(data: bytes, where=None) -> np.ndarray:
    """Decode image bytes to RGB uint8 HxWx3 with EXIF orientation applied."""
    img = _open(data, where)
    try:
        if orientation(img) != 1:
            img = ImageOps.exif_transpose(img)
        img.load()
        return to_rgb(img)
    except (OSError, SyntaxError, ValueError, struct.error, EOFError, MemoryError) as e:
        raise ImageError(where, f"corrupt or truncated image: {e}", "re-export or remove it") from e


def load(ref: ImageRef) -> np.ndarray:
    """Read and decode the image behind ``ref``."""
    return decode(ref.read(), getattr(ref, "path", None))


def find_images(root: str | Path) -> list[str]:
    """Absolute paths of all image files under ``root`` (recursive, sorted, hidden entries
    skipped). Plain strings: a listing of 100k files should not cost 100k Path objects."""
    out = []
    for folder, dirs, files in os.walk(os.path.abspath(root)):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [
            os.path.join(folder, f)
            for f in files
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTS
        ]
    return sorted(out)
