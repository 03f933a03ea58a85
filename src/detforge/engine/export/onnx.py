"""ONNX export: the checkpoint's ``infer`` traced with uint8 input ``images`` (B, 3, S, S),
preprocessing (and NMS, unless left out) inside, and metadata that lets
:func:`detforge.load` rebuild the Predictor from the file alone. A parity check against
PyTorch runs after every export (:mod:`detforge.engine.export.parity`)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import torch

from detforge.engine.export import parity
from detforge.engine.export.int8 import calibration_data, export_int8
from detforge.engine.infer.backends import InferModule, OnnxBackend, TorchBackend
from detforge.engine.tasks import task
from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes
from detforge.models import load_checkpoint

NOT_EXPORTABLE = {
    "fasterrcnn": "torchvision's multi-scale RoIAlign of fasterrcnn_resnet50_fpn_v2 traces to a "
    "graph that onnxruntime rejects on most images ('invalid expand shape' in box_roi_pool; "
    "pytorch/vision#8534)",
}


def _refuse(model, dynamic_batch: bool) -> None:
    if model.name in NOT_EXPORTABLE:
        raise DetforgeError(
            f"{model.name} cannot be exported to ONNX: {NOT_EXPORTABLE[model.name]}",
            "use fasterrcnn-mobilenet, retinanet, fcos or ssdlite for ONNX deployment",
        )
    if dynamic_batch and not model.dynamic_batch:
        raise DetforgeError(
            f"{model.name}: --dynamic-batch is not supported: torchvision's detection "
            "post-processing runs per image, so the traced graph has a fixed batch",
            "export with --batch N (the batch you will run), or leave the default 1; "
            "detforge.load() feeds such a model N images at a time",
        )


def _trace(model, batch: int, dynamic_batch: bool, opset: int) -> bytes:
    """The ONNX bytes of ``InferModule(model)`` traced on a uint8 batch."""
    x = torch.from_numpy(parity.parity_images(batch, model.imgsz, seed=0))
    names = list(model.output_names)
    dyn = None
    if dynamic_batch:
        axis = task(model.task).output_axis
        dyn = {"images": {0: "batch"}, **{k: {0: axis} for k in names}}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            InferModule(model).eval(),
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=names,
            dynamic_axes=dyn,
        )
    return buf.getvalue()


def _with_metadata(data: bytes, model, batch: str, nms: bool) -> bytes:
    """The graph with detforge's metadata, checked by onnx.checker."""
    import onnx

    proto = onnx.load_from_string(data)
    meta = {
        "detforge": "1",
        "task": model.task,
        "model": model.name,
        "classes": json.dumps(model.classes),
        "imgsz": str(model.imgsz),
        "resize": model.resize_mode,
        "batch": batch,
        "nms": str(bool(nms)).lower(),
    }
    if getattr(model, "default_conf", None) is not None:
        meta["conf"] = f"{model.default_conf:g}"  # the measured default confidence
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def export_onnx(
    weights,
    out=None,
    *,
    imgsz: int | None = None,
    batch: int = 1,
    dynamic_batch: bool = False,
    opset: int = 17,
    nms: bool = True,
    check: bool = True,
    overwrite: bool = False,
    int8: bool = False,
    data=None,
) -> dict:
    """Export checkpoint ``weights`` to ONNX (next to it by default). ``nms=False`` leaves the
    final NMS out (10x the candidates; the Predictor runs it). Returns a report with the path
    and, when ``check``, the parity figures of onnxruntime against PyTorch. ``int8`` also
    writes ``<name>-int8.onnx``, calibrated on the training images of ``data`` (default: the
    run's own data), and reports its mAP change and speedup (:mod:`.int8`)."""

    weights = Path(weights)
    if int8:
        calibration_data(weights, data)  # refused before anything is written
    # the weights do not depend on the input size: rebuild at --imgsz when given
    model, _ = load_checkpoint(weights, imgsz=int(imgsz) if imgsz else None)
    _refuse(model, dynamic_batch)
    out = Path(out) if out else weights.with_suffix(".onnx")
    if out.exists() and not overwrite:
        raise DetforgeError(f"{out}: already exists", "pass --overwrite or another --output")
    shape = "dynamic" if dynamic_batch else str(batch)
    no_nms = model.nms_left_out() if not nms else contextlib.nullcontext()
    with no_nms:
        atomic_write_bytes(
            out, _with_metadata(_trace(model, batch, dynamic_batch, opset), model, shape, nms)
        )
        report = {"path": str(out), "imgsz": model.imgsz, "batch": shape, "nms": nms}
        try:
            if check:
                n = 4 if dynamic_batch else batch
                report["parity"] = parity.check(
                    TorchBackend(model), OnnxBackend(out), out, n, model.imgsz
                )
        except BaseException:
            out.unlink(missing_ok=True)  # an export that failed its check is not left behind
            raise
    if int8:
        report["int8"] = export_int8(weights, out, data=data)
    return report
