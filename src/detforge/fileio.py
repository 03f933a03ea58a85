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

from detforge.errors import DestinationError, DiskFullError, FormatError

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
    claim(path)
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


MANIFEST = ".detforge-manifest.json"
_ACTIVE: list[Destination] = []


def _abs(p) -> str:
    return os.path.normpath(os.path.abspath(p))


def refuse_overlap(dst, sources) -> None:
    """An output that is, holds or lies inside a source would overwrite or mix into the data
    it is made from: refused whatever the flags."""
    d = _abs(dst)
    for src in sources:
        if src is None:
            continue
        s = _abs(src)
        if d == s:
            why = "is the source"
        elif d.startswith(s.rstrip(os.sep) + os.sep):
            why = f"lies inside the source {s}"
        elif s.startswith(d.rstrip(os.sep) + os.sep):
            why = f"holds the source {s}"
        else:
            continue
        raise DestinationError(
            f"output {dst} {why}", "write to a folder outside the data you read from"
        )


class Destination:
    """A folder detforge writes into. Its manifest (``.detforge-manifest.json``) lists the files
    detforge wrote there; ``overwrite`` replaces only those, never a file of the user's. While
    active (``with``), every atomic write under the folder is checked and recorded; on an error
    the files this run created are removed again (and the folder, if this run made it)."""

    def __init__(self, path, overwrite: bool = False, sources=()):
        self.path = Path(path)
        refuse_overlap(self.path, sources)
        if self.path.exists() and not self.path.is_dir():
            raise DestinationError(
                f"{path} exists and is not a folder", "choose another destination"
            )
        self.created = not self.path.exists()
        if not self.created and any(self.path.iterdir()) and not overwrite:
            raise DestinationError(
                f"{path} is not empty",
                "choose an empty folder, or pass --overwrite to replace what detforge wrote there",
            )
        self.owned = self._manifest()
        self.dirs_before = (
            set() if self.created else {d for d, _, _ in os.walk(self.path)}
        )  # folders this run makes are removed again on an error
        self.written: set[str] = set()
        self.new: set[str] = set()

    def _manifest(self) -> set[str]:
        try:
            return set(json.loads((self.path / MANIFEST).read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def rel(self, target) -> str | None:
        r = os.path.relpath(_abs(target), _abs(self.path))
        return None if r.startswith("..") else r.replace(os.sep, "/")

    def claim(self, target) -> None:
        """About to write ``target``: refuse a file that is there and not detforge's."""
        r = self.rel(target)
        if r is None or r == MANIFEST or r in self.written:
            return
        if os.path.lexists(target):
            if r not in self.owned:
                raise DestinationError(
                    f"{target} exists and was not written by detforge",
                    "move it away or choose another folder; --overwrite only replaces files "
                    "detforge wrote",
                )
        else:
            self.new.add(r)
        self.written.add(r)

    def owns(self, target) -> bool:
        r = self.rel(target)
        return r is not None and (r in self.owned or r in self.written)

    def __enter__(self) -> Destination:
        self.path.mkdir(parents=True, exist_ok=True)
        _ACTIVE.append(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        _ACTIVE.remove(self)
        if exc_type is None:
            files = sorted((self.owned | self.written) - {MANIFEST})
            files = [f for f in files if (self.path / f).exists()]
            atomic_write_json(self.path / MANIFEST, {"version": 1, "files": files}, indent=None)
            return
        for r in self.new:  # what this run added; replaced files are already gone
            (self.path / r).unlink(missing_ok=True)
        made = {d for d, _, _ in os.walk(self.path)} - self.dirs_before
        for d in sorted(made, key=len, reverse=True):  # deepest first; only if emptied
            with contextlib.suppress(OSError):
                os.rmdir(d)
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)


def claim(target) -> None:
    """Check a write against the active destinations (see :class:`Destination`)."""
    for d in _ACTIVE:
        d.claim(target)


@contextlib.contextmanager
def destination(path, overwrite: bool = False, sources=()):
    """A :class:`Destination` for ``path``, or the active one that already holds it."""
    for d in _ACTIVE:
        if d.rel(path) is not None:
            refuse_overlap(path, sources)
            yield d
            return
    with Destination(path, overwrite, sources) as d:
        yield d


def prepare_destination(dst: str | Path, overwrite: bool = False) -> Path:
    """Create ``dst``; refuse a non-empty folder unless ``overwrite`` (then files are replaced
    one by one as they are written; nothing else in the folder is removed)."""
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DestinationError(f"{dst} exists and is not a folder", "choose another destination")
    if any(d.rel(dst) is not None for d in _ACTIVE):  # the active destination checked it
        dst.mkdir(parents=True, exist_ok=True)
        return dst
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
    claim(dst)
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


def cache_dir(*parts: str) -> Path:
    """detforge's cache folder: ``$DETFORGE_CACHE``, else ``$XDG_CACHE_HOME/detforge``, else
    ``~/.cache/detforge`` (not created here)."""
    base = os.environ.get("DETFORGE_CACHE")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(xdg, "detforge")
    return Path(base, *parts)


def read_text(path) -> str:
    """A text file a user gave us (UTF-8, a BOM allowed); not UTF-8 or unreadable is a
    :class:`FormatError` naming it."""

    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise FormatError(path, f"not UTF-8 text (byte {e.start})", "save it as UTF-8") from None
    except OSError as e:
        raise FormatError(path, f"cannot read: {e.strerror}") from None
