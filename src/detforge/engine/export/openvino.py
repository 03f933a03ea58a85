"""OpenVINO export: the ONNX graph (preprocessing and NMS inside) converted to an OpenVINO IR
(``.xml`` + ``.bin``) with the ``openvino`` package, detforge's metadata in its ``rt_info``,
and the same parity check against PyTorch as every ONNX export. ``detforge.load("m.xml")``
runs it through :class:`~detforge.engine.infer.backends.OpenVinoBackend`."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

from detforge.engine.export import parity
from detforge.engine.export.int8 import calibration_data, compare, quantized_report
from detforge.engine.export.onnx import export_onnx
from detforge.engine.infer.backends import OpenVinoBackend, TorchBackend, import_openvino
from detforge.errors import DetforgeError
from detforge.models import load_checkpoint


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
    int8: bool = False,
    data=None,
) -> dict:
    """Export checkpoint ``weights`` to an OpenVINO IR (``out``, default ``best.xml`` beside
    it, with its ``.bin``), checked against PyTorch. Both files appear together or not at
    all: they are written in a scratch folder beside ``out`` and moved in last. ``int8``
    also writes ``<name>-int8.xml``: NNCF post-training quantization calibrated on the
    training images of ``data`` (default: the run's own), with its metric change and speedup
    on the validation split in the report; on a CPU with bf16 units the report also has
    ``bf16``: the fp32 IR run in bf16, measured the same way."""

    import_openvino()  # before any work: say how to install it
    weights = Path(weights)
    if int8:
        import_nncf()
        calibration_data(weights, data)  # refused before anything is written
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
    if int8:
        report["int8"] = export_openvino_int8(weights, out, data=data, overwrite=overwrite)
        if "bf16" in report["int8"]:  # measured on the same split
            q = report["int8"]
            report["bf16"] = {"val_split": q["val_split"], **q.pop("bf16")}
    return report


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin has bf16 kernels here (AVX512_BF16 or AMX)."""
    caps = import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "BF16" in caps


def bf16_report(xml: Path, val_ds, backend, fp32_score: float) -> dict:
    """The fp32 IR at ``xml`` (which scored ``fp32_score`` on ``val_ds``) run in bf16
    (``--precision bf16``): its metric change and speedup, as the int8 report has them.
    Nothing is written."""
    bf16 = functools.partial(OpenVinoBackend, precision="bf16")
    return compare(
        OpenVinoBackend, xml, xml, val_ds, backend, name="bf16", open_other=bf16,
        fp32_score=fp32_score,
    )  # fmt: skip


def import_nncf():
    """NNCF, without its usage telemetry: it sends events through openvino_telemetry unless
    ``NNCF_CI`` is set before its first import (detforge never reports usage for you)."""
    import sys

    if "nncf" not in sys.modules:
        os.environ.setdefault("NNCF_CI", "1")  # NNCF's own switch that turns telemetry off
    try:
        import nncf
    except ImportError as e:
        raise DetforgeError(
            "INT8 for OpenVINO needs NNCF",
            "pip install 'detforge[openvino]' (or: pip install nncf)",
        ) from e
    import logging

    nncf.set_log_level(logging.ERROR)  # its INFO lists every ignored node; detforge reports
    return nncf


# NNCF's own default: on raccoon (160 training images) det-n's int8 mAP50-95 moved -0.004 to
# -0.011 from fp32 over three draws of 64 calibration images, and -0.001 on all of them
OPENVINO_CALIBRATION = 300

# det-n/s/m's output convolutions (scores and box sides): quantized, they cost confidences
HEAD_OUTPUT_PATTERNS = [r".*/head/cls\.\d+/Conv.*", r".*/head/reg\.\d+/Conv.*"]


def folded(model):
    """``model`` with its constant subgraphs computed once. ONNX's grouped convolution reaches
    OpenVINO as weights -> Reshape -> GroupConvolution, and through that Reshape NNCF ranges a
    depthwise convolution's weights per output channel *and kernel column*; the CPU plugin
    runs no int8 kernel on such weights, so every depthwise convolution stayed float with
    quantize steps around it (det-n's graph 1.2x faster in int8, 1.45x with this fold)."""
    try:
        from openvino import passes
    except ImportError:  # OpenVINO before 2025
        from openvino.runtime import passes

    manager = passes.Manager()
    manager.register_pass(passes.ConstantFolding())
    manager.run_passes(model)
    return model


def quantize_ir(xml: Path, out: Path, calibration: list) -> Path:
    """NNCF post-training quantization of the IR at ``xml`` (mixed preset: symmetric weights,
    asymmetric activations; the head's output convolutions, the box decoding and NMS in
    float) into ``out`` (+ ``.bin``), detforge's metadata kept and marked int8."""
    nncf = import_nncf()
    ov = import_openvino()
    model = folded(ov.Core().read_model(str(xml)))
    q = nncf.quantize(
        model,
        nncf.Dataset(calibration),
        preset=nncf.QuantizationPreset.MIXED,
        subset_size=len(calibration),
        ignored_scope=nncf.IgnoredScope(patterns=HEAD_OUTPUT_PATTERNS, validate=False),
    )
    q.set_rt_info("int8", ["detforge", "quantized"])
    tmp = Path(tempfile.mkdtemp(prefix=".detforge-openvino-", dir=out.parent))
    try:
        ov.save_model(q, str(tmp / out.name), compress_to_fp16=False)
        os.replace(tmp / out.with_suffix(".bin").name, out.with_suffix(".bin"))
        os.replace(tmp / out.name, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_openvino_int8(weights, xml: Path, out=None, data=None, overwrite=False) -> dict:
    """``xml`` (the fp32 IR of ``weights``) quantized to ``<name>-int8.xml``, and both scored
    on the validation split and timed (batch 1, interleaved); on a CPU with bf16 units the
    report's ``bf16`` has the fp32 IR run in bf16, measured the same way."""

    xml = Path(xml)
    out = Path(out) if out else xml.with_name(xml.stem + "-int8.xml")
    if out.exists() and not overwrite:
        raise DetforgeError(f"{out}: already exists", "pass --overwrite or another --output")
    files = [out, out.with_suffix(".bin")]

    def bf16(val_ds, backend, fp32_score) -> dict:  # the other faster choice, if the CPU has it
        return {"bf16": bf16_report(xml, val_ds, backend, fp32_score)} if cpu_has_bf16() else {}

    return quantized_report(
        OpenVinoBackend, quantize_ir, weights, xml, out, data, files, OPENVINO_CALIBRATION, bf16
    )
