"""Typed errors. Library code raises these; the CLI prints one line plus the hint."""

from __future__ import annotations

from pathlib import Path


class DetforgeError(Exception):
    """Base class: ``message`` says what went wrong, ``hint`` what to do about it."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} (hint: {self.hint})"

    def __reduce__(self):
        # Subclasses take other constructor arguments; rebuild from the instance's state so
        # every detforge error crosses process boundaries (pools, DataLoader workers).
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls, args, state):
    err = Exception.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


def _where(path: str | Path | None, line: int | None = None, record: int | None = None) -> str:
    if path is None:
        return ""
    loc = str(path)
    if line is not None:
        loc += f":{line}"
    if record is not None:
        loc += f" (record {record})"
    return loc + ": "


class FormatError(DetforgeError):
    """An annotation file (or record) cannot be parsed as its format says."""

    def __init__(self, path, message, hint=None, *, line=None, record=None):
        self.path, self.line, self.record = path, line, record
        super().__init__(_where(path, line, record) + message, hint)


class ImageError(DetforgeError):
    """An image is missing, empty, truncated or not an image."""

    def __init__(self, path, message, hint=None):
        self.path = path
        self.reason = message  # without the path: for reports that name the file already
        super().__init__(_where(path) + message, hint)


class TooManyPixelsError(ImageError):
    """An image declares more pixels than the limit (a decompression bomb?)."""


class DestinationError(DetforgeError):
    """Refusing to write where user data would be overwritten."""


class UnknownFormatError(DetforgeError):
    """``--format auto`` could not tell what a path holds, or a format name is unknown."""


class CameraError(DetforgeError):
    """A camera or video source could not be opened."""


class DiskFullError(DetforgeError):
    """A write failed because the disk (or the file-size limit) ran out."""

    def __init__(self, path, needed: int | None = None, limit: bool = False):
        import shutil

        self.path = path
        try:
            free = shutil.disk_usage(Path(path).parent if Path(path).parent.exists() else ".").free
        except OSError:
            free = None
        what = "file-size limit reached" if limit else "no space left on the device"
        need = f"; about {_mib(needed)} needed" if needed else ""
        have = f", {_mib(free)} free" if free is not None else ""
        hint = (
            "raise the limit (ulimit -f) or write elsewhere"
            if limit
            else "free some space or choose another output folder"
        )
        super().__init__(f"{path}: {what} while writing{need}{have}", hint)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def require(module: str, message: str, install: str):
    """Import optional ``module`` (an extra's package), or raise one line: ``message`` and the
    ``install`` command as the hint."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DetforgeError(message, install) from None
