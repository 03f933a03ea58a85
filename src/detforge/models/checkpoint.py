"""Checkpoints: one file with the weights and everything that rebuilds the model (name,
classes, options), plus the detforge version, the resize mode, and whatever training adds
(best metric, data fingerprint, optimizer state). Read with ``weights_only=True``."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from detforge._version import __version__
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes
from detforge.models.base import Model
from detforge.models.registry import build

CHECKPOINT_FORMAT = "detforge-checkpoint"


def save_checkpoint(path, model: Model, **extra) -> Path:
    """Write ``model`` (unwrapped from DDP) and ``extra`` (plain values and tensors) to
    ``path`` atomically."""
    model = getattr(model, "module", model)  # DDP wrapper
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": 1,
        "detforge": __version__,
        "model": model.spec(),
        "task": model.task,
        "resize": model.resize_mode,
        "state_dict": model.state_dict(),
        **extra,
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def read_checkpoint(path, map_location="cpu") -> dict:
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError as e:
        raise DetforgeError(f"{path}: checkpoint not found", "check the path") from e
    except OSError as e:
        raise DetforgeError(f"{path}: cannot read the checkpoint ({e.strerror})") from e
    if size == 0:
        raise DetforgeError(
            f"{path}: empty file (0 bytes), not a checkpoint", "train or copy it again"
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # unpickling errors come in many types; torch's text is long
        raise DetforgeError(
            f"{path}: not a readable checkpoint ({_first_line(e)})",
            "pass a .pt file written by detforge; files holding code are refused",
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise DetforgeError(
            f"{path}: not a detforge checkpoint",
            "detforge reads the .pt files it writes (runs/train/NAME/weights)",
        )
    _check_fields(path, ckpt)
    return ckpt


def _check_fields(path, ckpt: dict) -> None:
    spec = ckpt.get("model")
    ok = (
        isinstance(spec, dict)
        and isinstance(spec.get("name"), str)
        and isinstance(spec.get("classes"), list)
        and all(isinstance(c, str) for c in spec["classes"])
        and isinstance(spec.get("options", {}), dict)
    )
    if not ok:
        raise DetforgeError(
            f"{path}: the checkpoint's model spec (name, classes, options) is missing or damaged",
            "use a checkpoint written by detforge train",
        )
    if not isinstance(ckpt.get("state_dict"), dict):
        raise DetforgeError(f"{path}: the checkpoint holds no weights (state_dict)")


def load_checkpoint(path, map_location="cpu", **options) -> tuple[Model, dict]:
    """Rebuild the model saved in ``path`` (``options`` override saved ones, e.g. ``imgsz``);
    returns ``(model in eval mode, checkpoint dict)``."""

    ckpt = read_checkpoint(path, map_location)
    spec = ckpt["model"]
    options = {**spec.get("options", {}), **{k: v for k, v in options.items() if v is not None}}
    try:
        model = build(spec["name"], spec["classes"], pretrained="none", **options)
    except DetforgeError as e:
        raise DetforgeError(f"{path}: {e.message}", e.hint) from e
    except (TypeError, ValueError) as e:
        raise DetforgeError(
            f"{path}: cannot rebuild model {spec['name']!r} ({_first_line(e)})",
            "the checkpoint comes from another detforge version, or is damaged",
        ) from e
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, KeyError) as e:
        raise DetforgeError(
            f"{path}: its weights do not fit model {spec['name']!r} ({_weights_mismatch(e)})",
            "the checkpoint is damaged or was edited; use best.pt or last.pt of a run",
        ) from e
    model.default_conf = _measured_conf(spec.get("conf"))
    return model.eval(), ckpt


def _measured_conf(value) -> float | None:
    """The checkpoint's measured default confidence when it is a usable one (in (0, 1))."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    return None


def _weights_mismatch(e: BaseException) -> str:
    text = str(e)
    parts = []
    for what in ("Missing key(s)", "Unexpected key(s)", "size mismatch"):
        n = text.count("size mismatch for ") if what == "size mismatch" else text.count(what)
        if n:
            parts.append(what.lower().replace("(s)", "s"))
    return ", ".join(parts) or _first_line(e)
