"""Atomic writes and destination handling: nothing the user had is lost or half-written."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path

from detforge.errors import DestinationError, DiskFullError

_UMASK: list[int] = []
_UMASK_LOCK = threading.Lock()


def file_mode() -> int:
    """The mode a plain ``open()`` would give a new file under the process umask (read once:
    ``os.umask`` can only be read by setting it)."""
    with _UMASK_LOCK:
        if not _UMASK:
            old = os.umask(0o022)
            os.umask(old)
            _UMASK.append(old)
    return 0o666 & ~_UMASK[0]


@contextlib.contextmanager
def disk_errors(path, needed: int | None = None):
    """Turn "no space left" (ENOSPC, EDQUOT) and "file too large" (EFBIG) into one
    :class:`DiskFullError` line naming ``path``."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(path, needed) from e
        if e.errno == errno.EFBIG:
            raise DiskFullError(path, needed, limit=True) from e
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temp file in the same folder and a rename. The file
    gets the umask's mode (as ``open`` gives), never the temp file's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with disk_errors(path, len(data)), os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), file_mode())
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False) + "\n")


def prepare_destination(dst: str | Path, overwrite: bool = False) -> Path:
    """Create ``dst``; refuse a non-empty folder unless ``overwrite`` (then files are replaced
    one by one as they are written; nothing else in the folder is removed)."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DestinationError(f"{dst} exists and is not a folder", "choose another destination")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DestinationError(
            f"{dst} is not empty", "choose an empty folder, or pass --overwrite to write into it"
        )
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def place_image(data_or_src, dst: Path, mode: str = "copy") -> bool:
    """Put an image at ``dst``: ``mode`` is ``copy`` or ``link`` (hard link; where the file
    system cannot link, a copy). ``data_or_src`` is a source path or the image bytes. Returns
    False when a link was asked for and a copy was made (the caller says so)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data_or_src, (bytes, bytearray)):
        atomic_write_bytes(dst, bytes(data_or_src))
        return mode != "link"
    src = Path(data_or_src)
    if dst.exists() and dst.samefile(src):
        return True
    if mode == "link":
        tmp = dst.with_name(f".{dst.name}.lnk")
        tmp.unlink(missing_ok=True)
        try:
            os.link(src, tmp)
            os.replace(tmp, dst)
            return True
        except OSError:
            tmp.unlink(missing_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    try:
        with disk_errors(dst, os.path.getsize(src)):
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return mode != "link"
