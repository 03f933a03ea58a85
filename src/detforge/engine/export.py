"""ONNX export (uint8 input, preprocessing and NMS inside, metadata for loading) and the
onnxruntime backend of the Predictor.

The graph is the checkpoint's model behind :class:`ExportModule`: input ``images`` uint8
(B, 3, S, S); outputs ``boxes`` (N, 4) xyxy in input pixels, ``scores`` (N,), ``labels`` (N,)
0-based, ``batch_index`` (N,). The same module serves the PyTorch backend, so parity is a
comparison of one function in two runtimes.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch

from detforge.errors import DetforgeError
from detforge.fileio import atomic_write_bytes

NOT_EXPORTABLE = {
    "fasterrcnn": "torchvision's multi-scale RoIAlign of fasterrcnn_resnet50_fpn_v2 traces to a "
    "graph that onnxruntime rejects on most images ('invalid expand shape' in box_roi_pool; "
    "pytorch/vision#8534)",
}


class ExportModule(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.detect(images)


def _keep_all(boxes, scores, idxs, iou_threshold):
    """Stands in for torchvision's NMS: every candidate survives, best first."""
    return torch.argsort(scores, descending=True)


@contextlib.contextmanager
def nms_left_out(model, enabled: bool):
    """Inside: the final NMS of a torchvision detector is skipped (the region proposals keep
    theirs) and it keeps 10x more candidates, for a graph whose user runs NMS."""
    from torchvision.ops import boxes as box_ops

    net = getattr(model, "net", None)
    if not enabled or net is None:
        yield
        return
    holder = getattr(net, "roi_heads", net)
    post, old_k = holder.postprocess_detections, holder.detections_per_img

    def without_nms(*args, **kwargs):
        nms = box_ops.batched_nms
        box_ops.batched_nms = _keep_all
        try:
            return post(*args, **kwargs)
        finally:
            box_ops.batched_nms = nms

    holder.postprocess_detections = without_nms
    holder.detections_per_img = old_k * 10
    try:
        yield
    finally:
        del holder.postprocess_detections  # back to the class's method
        holder.detections_per_img = old_k


def _example(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """Test images: synthetic shapes scenes at the input size (deterministic)."""
    from detforge.data.synth import render

    rng = np.random.default_rng(seed)
    ims = [np.asarray(render(rng, size, size, 3)[0]) for _ in range(batch)]
    return torch.from_numpy(np.stack(ims).transpose(0, 3, 1, 2).copy())


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
) -> dict:
    """Export checkpoint ``weights`` to ONNX (next to it by default). Returns a report with
    the path and, when ``check``, the parity figures of onnxruntime against PyTorch."""
    import onnx

    from detforge.models import load_checkpoint

    weights = Path(weights)
    # the weights do not depend on the input size: rebuild at --imgsz when given
    model, _ = load_checkpoint(weights, imgsz=int(imgsz) if imgsz else None)
    _refuse(model, dynamic_batch)
    size = int(model.options["imgsz"])
    out = Path(out) if out else weights.with_suffix(".onnx")
    if out.exists() and not overwrite:
        raise DetforgeError(f"{out}: already exists", "pass --overwrite or another --output")
    x = _example(batch, size)
    module = ExportModule(model).eval()
    names = list(model.output_names)
    dyn = {"images": {0: "batch"}} if dynamic_batch else None
    if dyn:
        dyn.update({k: {0: "batch" if model.task == "classify" else "detections"} for k in names})
    buf = io.BytesIO()
    with nms_left_out(model, not nms), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (x,),
            buf,
            dynamo=False,
            opset_version=opset,
            input_names=["images"],
            output_names=names,
            dynamic_axes=dyn,
        )
    proto = onnx.load_from_string(buf.getvalue())
    meta = {
        "detforge": "1",
        "task": model.task,
        "model": model.name,
        "classes": json.dumps(model.classes),
        "imgsz": str(size),
        "resize": model.resize_mode,
        "batch": "dynamic" if dynamic_batch else str(batch),
        "nms": str(bool(nms)).lower(),
    }
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(proto)
    atomic_write_bytes(out, proto.SerializeToString())
    report = {"path": str(out), "imgsz": size, "batch": meta["batch"], "nms": nms}
    if check and model.task == "classify":
        report["parity"] = parity_probs(module, out, size, batch, dynamic_batch)
    elif check:
        with nms_left_out(model, not nms):
            report["parity"] = parity(module, out, size, batch, dynamic_batch)
    return report


def _match(a, b, iou_min: float, score_tol: float) -> tuple[int, float, float]:
    """Each detection of ``a`` (above ``a``'s truncation margin) must have one in ``b`` of
    the same label; returns (unmatched, worst IoU, worst score difference)."""
    from torchvision.ops import box_iou

    (ba, sa, la), (bb, sb, lb) = a, b
    if len(ba) == 0:
        return 0, 1.0, 0.0
    if len(bb) == 0:
        return len(ba), 0.0, 1.0
    ious = np.nan_to_num(box_iou(torch.from_numpy(ba), torch.from_numpy(bb)).numpy())
    # boxes clipped flat at the border have no area: compare their corners instead
    flat = (ba[:, 2:] - ba[:, :2]).min(1)[:, None] < 1e-3
    same = np.abs(ba[:, None] - bb[None]).max(2) <= 1e-2
    ious[flat & same] = 1.0
    ious[la[:, None] != lb[None, :]] = 0
    ds = np.abs(sa[:, None] - sb[None, :])
    ok = (ious >= iou_min) & (ds <= score_tol)
    best = np.where(ok, ious, -1).max(1)
    unmatched = int((best < 0).sum())
    worst_iou = float(best[best >= 0].min()) if (best >= 0).any() else 0.0
    worst_ds = float(np.where(ok, ds, np.inf).min(1)[best >= 0].max()) if (best >= 0).any() else 1
    return unmatched, worst_iou, worst_ds


def _safe(dets, margin: float = 2e-3):
    """Drop each class's detections within ``margin`` of that class's lowest score: where a
    list was cut (top-k, max detections), a 1e-7 difference may put them on either side."""
    b, s, lab = dets
    keep = np.ones(len(s), bool)
    for c in np.unique(lab):
        k = lab == c
        if k.sum() > 1:  # a lone detection was not cut from a list
            keep[k] = s[k] > s[k].min() + margin
    return b[keep], s[keep], lab[keep]


def parity(module, onnx_path, size: int, batch: int, dynamic: bool, images: int = 4) -> dict:
    """Detections from onnxruntime vs PyTorch on the same synthetic images: every detection
    must have a partner of the same class with IoU >= 0.99 and score within 1e-3."""
    from detforge.engine.predict import split_batch

    sess = _session(onnx_path, "cpu")
    x = _example(images if dynamic else batch, size, seed=1)
    with torch.no_grad():
        ref = split_batch(len(x), *(t.numpy() for t in module(x)))
    got = split_batch(len(x), *sess.run(None, {"images": x.numpy()}))
    n = unmatched = 0
    worst_iou, worst_ds = 1.0, 0.0
    for r, g in zip(ref, got):
        for a, b in ((_safe(r), g), (_safe(g), r)):
            u, wi, wd = _match(a, b, 0.99, 1e-3)
            n += len(a[0])
            unmatched += u
            worst_iou, worst_ds = min(worst_iou, wi), max(worst_ds, wd)
    rep = {
        "detections": n,
        "unmatched": unmatched,
        "worst_iou": round(worst_iou, 6),
        "worst_score_diff": float(f"{worst_ds:.3g}"),
    }
    if unmatched:
        raise DetforgeError(
            f"{onnx_path}: ONNX and PyTorch disagree on {unmatched} of {n} detections "
            f"(worst IoU {worst_iou:.4f}, score diff {worst_ds:.2g})",
            "try another --opset; please report the model and versions",
        )
    return rep


def parity_probs(module, onnx_path, size: int, batch: int, dynamic: bool) -> dict:
    """Class probabilities from onnxruntime vs PyTorch: within 1e-4, same top-1."""
    sess = _session(onnx_path, "cpu")
    x = _example(4 if dynamic else batch, size, seed=1)
    with torch.no_grad():
        ref = module(x)[0].numpy()
    got = sess.run(None, {"images": x.numpy()})[0]
    diff = float(np.abs(ref - got).max())
    same = bool((ref.argmax(1) == got.argmax(1)).all())
    if diff > 1e-4 or not same:
        raise DetforgeError(
            f"{onnx_path}: ONNX and PyTorch probabilities differ by {diff:.2g}",
            "try another --opset; please report the model and versions",
        )
    return {"images": len(x), "max_prob_diff": float(f"{diff:.3g}"), "same_top1": same}


def _session(path, device: str):
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # data-dependent output shapes warn on every run
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:
        raise DetforgeError(
            f"{path}: onnxruntime cannot load it ({e})", "re-export with detforge export"
        ) from e


class OnnxBackend:
    """An exported model in onnxruntime; everything it needs is in the file's metadata."""

    kind = "onnx"

    def __init__(self, path, device="cpu"):
        self.session = _session(path, device)
        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("task") not in ("detect", "classify") or "classes" not in meta:
            raise DetforgeError(
                f"{path}: not an ONNX file written by detforge export",
                "export it with `detforge export WEIGHTS --format onnx`",
            )
        self.classes = json.loads(meta["classes"])
        self.imgsz = int(meta["imgsz"])
        self.resize = meta["resize"]
        self.nms = meta.get("nms") == "true"
        self.task = meta["task"]
        self.max_batch = None if meta["batch"] == "dynamic" else int(meta["batch"])

    def __call__(self, batch: np.ndarray) -> list[tuple[np.ndarray, ...]]:
        from detforge.engine.predict import split_batch

        n = self.max_batch
        if self.task == "classify":
            if n is None:
                return self.session.run(None, {"images": batch})[0]
            probs = []
            for i in range(0, len(batch), n):
                chunk = batch[i : i + n]
                pad = np.repeat(chunk[-1:], n - len(chunk), 0)
                probs.append(self.session.run(None, {"images": np.concatenate([chunk, pad])})[0])
                probs[-1] = probs[-1][: len(chunk)]
            return np.concatenate(probs)
        if n is None:
            return split_batch(len(batch), *self.session.run(None, {"images": batch}))
        out = []
        for i in range(0, len(batch), n):
            chunk = batch[i : i + n]
            real = len(chunk)
            if real < n:  # a fixed-batch graph: pad with copies, drop their detections
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - real, 0)])
            out += split_batch(n, *self.session.run(None, {"images": chunk}))[:real]
        return out
