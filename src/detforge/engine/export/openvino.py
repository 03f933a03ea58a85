"""OpenVINO export: the ONNX graph (preprocessing and NMS inside) converted to an OpenVINO IR
(``.xml`` + ``.bin``) with the ``openvino`` package, detforge's metadata in its ``rt_info``,
and the same parity check against PyTorch as every ONNX export. ``detforge.load("m.xml")``
runs it through :class:`~detforge.engine.infer.backends.OpenVinoBackend`."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from detforge.engine.export import parity
from detforge.engine.export.onnx import export_onnx
from detforge.engine.infer.backends import OpenVinoBackend, TorchBackend, import_openvino
from detforge.errors import DetforgeError


def _convert(onnx_path: Path, xml: Path) -> None:
    """Convert ``onnx_path`` to an fp32 IR at ``xml``, its detforge metadata kept."""
    import onnx

    ov = import_openvino()
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    # The runtime's ONNX reader, not ov.convert_model: the conversion tool sends usage
    # telemetry by default (openvino_telemetry, opt-out), which detforge never does for you.
    model = ov.Core().read_model(str(onnx_path))
    for key, value in meta.items():
        model.set_rt_info(value, ["detforge", key])
    ov.save_model(model, str(xml), compress_to_fp16=False)


def export_openvino(
    weights,
    out=None,
    *,
    imgsz: int | None = None,
    batch: int = 1,
    opset: int = 17,
    nms: bool = True,
    check: bool = True,
    overwrite: bool = False,
) -> dict:
    """Export checkpoint ``weights`` to an OpenVINO IR (``out``, default ``best.xml`` beside
    it, with its ``.bin``), checked against PyTorch. Both files appear together or not at
    all: they are written in a scratch folder beside ``out`` and moved in last."""
    from detforge.models import load_checkpoint

    import_openvino()  # before any work: say how to install it
    weights = Path(weights)
    out = Path(out) if out else weights.with_suffix(".xml")
    if out.suffix.lower() != ".xml":
        raise DetforgeError(f"{out}: an OpenVINO IR is an .xml file", "name the output NAME.xml")
    bin_path = out.with_suffix(".bin")
    if (out.exists() or bin_path.exists()) and not overwrite:
        raise DetforgeError(f"{out}: already exists", "pass --overwrite or another --output")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".detforge-openvino-", dir=out.parent))
    try:
        onnx_path = tmp / "model.onnx"
        export_onnx(weights, onnx_path, imgsz=imgsz, batch=batch, opset=opset, nms=nms, check=False)
        _convert(onnx_path, tmp / out.name)
        report = {"path": str(out), "imgsz": None, "batch": str(batch), "nms": nms}
        exported = OpenVinoBackend(tmp / out.name)
        report["imgsz"] = exported.imgsz
        if check:
            model, _ = load_checkpoint(weights, imgsz=int(imgsz) if imgsz else None)
            report["parity"] = parity.check(
                TorchBackend(model), exported, out, batch, exported.imgsz, runtime="OpenVINO"
            )
        del exported
        os.replace(tmp / out.with_suffix(".bin").name, bin_path)
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return report
