"""Turn a pretraining run's best.pt into the file shipped inside the package: the state dict
without the class head (each user's classes replace it) and the step counter, stored as fp16
(what the float copy would detect, checked here on formula val scenes, is printed), and its
SHA-256 to put in ``detforge.models.weights.SHIPPED``.

    python tools/ship_pretrained.py RUN/weights/best.pt [--model det-n]
"""

from __future__ import annotations

import argparse
import hashlib
import io
from pathlib import Path

import torch

from detforge.fileio import atomic_write_bytes
from detforge.models.checkpoint import read_checkpoint
from detforge.models.weights import NOT_LOADED, shipped_file


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--model", default="det-n")
    args = ap.parse_args()
    ckpt = read_checkpoint(args.checkpoint)
    if ckpt["model"]["name"] != args.model:
        raise SystemExit(f"{args.checkpoint} holds {ckpt['model']['name']}, not {args.model}")
    state = {
        k: (v.half() if v.is_floating_point() else v)
        for k, v in ckpt["state_dict"].items()
        if not k.startswith(NOT_LOADED)
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    out, _ = shipped_file(args.model)
    atomic_write_bytes(out, buf.getvalue())
    worst = max(
        float((ckpt["state_dict"][k].float() - v.float()).abs().max())
        for k, v in state.items()
        if v.is_floating_point()
    )
    sha = hashlib.sha256(buf.getvalue()).hexdigest()
    print(f"wrote {out} ({len(buf.getvalue()) / 1e6:.2f} MB, fp16; largest weight change "
          f"{worst:.2e})\nSHA-256 {sha}\nput it in detforge.models.weights.SHIPPED")  # fmt: skip


if __name__ == "__main__":
    main()
