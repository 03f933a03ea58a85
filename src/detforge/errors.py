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
        super().__init__(_where(path) + message, hint)


class DestinationError(DetforgeError):
    """Refusing to write where user data would be overwritten."""


class UnknownFormatError(DetforgeError):
    """``--format auto`` could not tell what a path holds, or a format name is unknown."""


class CameraError(DetforgeError):
    """A camera or video source could not be opened."""
