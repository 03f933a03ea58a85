"""INT8 export: static QDQ quantization with onnxruntime's tools, calibrated on training
images, then measured against the fp32 graph on the validation split (mAP change, speed).

The backbone and neck run in int8 (convolutions per channel with int8 weights and uint8
activations, and the ReLU, residual Add, Resize and pooling between them); the detection head's
output convolutions, box decoding and NMS stay in float, because quantized score outputs are
where INT8 detectors lose their confidences (onnxruntime#14233). On det-n (raccoon val, 2 cores)
this kept mAP50-95 within 0.006 of fp32 where quantizing the convolutions alone lost 0.02.

Concat stays in float: a quantized Concat puts every input on the output's one scale, so the
PAN's concatenation of a small-range shallow map with a large-range deep one rounds the small
one away. On det-n trained on a small synthetic set (the learning test) quantizing it cost
0.060 mAP50-95 on the training images, against 0.016 with Concat in float.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from detforge.data.resize import prepare
from detforge.engine.infer.backends import OnnxBackend
from detforge.engine.loading import predictor
from detforge.engine.scoring import eval_split, scorable
from detforge.engine.tasks import task
from detforge.errors import DetforgeError, ImageError
from detforge.fileio import atomic_write_bytes
from detforge.models.checkpoint import read_checkpoint

CALIBRATION_IMAGES = 64
HEAD_OUTPUTS = ("/head/cls", "/head/reg")  # traced names of det-n/s/m's output convolutions
NETWORK = ("/backbone", "/neck", "/head")  # what is quantized of det-n/s/m: not the decoding
QUANTIZED_OPS = ["Conv", "Relu", "Add", "Resize", "MaxPool"]  # not Concat: see above


class PreparedImages:
    """``n`` images of ``ds`` drawn by ``seed``, each a prepared uint8 batch of one, decoded
    every time they are iterated: calibration memory stays one image whatever ``n`` is. An
    image that does not decode is skipped with one warning naming it."""

    def __init__(self, ds, n: int, size: int, mode: str, seed: int = 0):
        self.ds, self.size, self.mode = ds, size, mode
        self.pick = np.random.default_rng(seed).permutation(len(ds))[:n].tolist()
        self.skipped: set = set()

    def __len__(self) -> int:
        return len(self.pick)

    def __iter__(self):
        yielded = 0
        for i in self.pick:
            sample = self.ds.samples[i]
            try:
                image = sample.load()
            except ImageError as e:
                if sample.path not in self.skipped:
                    self.skipped.add(sample.path)
                    warnings.warn(f"skipping {e}", stacklevel=2)
                continue
            yielded += 1
            yield prepare(image, self.size, self.mode)[0][None]
        if not yielded:
            raise DetforgeError(
                f"{self.ds.root or 'the training split'}: none of the {len(self.pick)} images "
                "drawn for calibration decodes",
                "check them with `detforge data check`, or pass --data with other images",
            )


def _images(ds, n: int, size: int, mode: str, seed: int = 0) -> list[np.ndarray]:
    return list(PreparedImages(ds, n, size, mode, seed))


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over prepared uint8 batches."""

    def __init__(self, batches):
        self.batches = iter(batches)

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {"images": b}

    def rewind(self):  # not needed by MinMax calibration
        pass


def _excluded(model_path: Path) -> list[str]:
    """The nodes left in float: det-n/s/m's head output convolutions, and every op of theirs
    outside the network proper (the input's normalization; the box decoding, whose Add would
    put box corners on a 256-step grid, 1.6 px at 320)."""
    import onnx

    nodes = [n for n in onnx.load(str(model_path)).graph.node if n.op_type in QUANTIZED_OPS]
    if not any(n.name.startswith(HEAD_OUTPUTS) for n in nodes):  # not det-n/s/m
        return []
    return [
        n.name for n in nodes if n.name.startswith(HEAD_OUTPUTS) or not n.name.startswith(NETWORK)
    ]


def quantize(fp32: Path, out: Path, calibration: list[np.ndarray]) -> Path:
    """Write the static INT8 (QDQ) version of ``fp32`` to ``out``, metadata kept."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    tmp = Path(tempfile.mkdtemp(prefix="detforge-int8-"))
    try:
        prep = tmp / "prep.onnx"
        quant_pre_process(str(fp32), str(prep), skip_symbolic_shape=True)
        q = tmp / "int8.onnx"
        quantize_static(
            str(prep),
            str(q),
            _Reader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=QUANTIZED_OPS,
            nodes_to_exclude=_excluded(prep),
        )
        model = onnx.load(str(q))
        meta = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
        meta["quantized"] = "int8"
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        atomic_write_bytes(out, model.SerializeToString())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def interleaved_ms(calls: list, items: list, rounds: int = 7) -> list[float]:
    """ms per item of each call (``call(item)``, one item at a time): ``rounds`` passes over
    ``items``, the calls taking turns within each round, each one's fastest pass kept (a
    busy moment of the machine then costs every call alike, or none)."""
    for call in calls:
        for item in items[:2]:
            call(item)
    best = [float("inf")] * len(calls)
    for _ in range(rounds):
        for k, call in enumerate(calls):
            t = time.perf_counter()
            for item in items:
                call(item)
            best[k] = min(best[k], (time.perf_counter() - t) / len(items) * 1000)
    return best


def calibration_data(weights, data=None):
    """The data to calibrate on: ``data``, else the data the run of ``weights`` trained on;
    refused in one line when neither is known (checked before anything is written)."""
    data = data or read_checkpoint(weights).get("data", {}).get("source")
    if not data:
        raise DetforgeError(
            f"{weights}: the checkpoint does not say what it trained on",
            "pass --data with the training data for calibration",
        )
    return data


def calibration_and_val(
    weights, data, imgsz: int, resize: str, count: int = CALIBRATION_IMAGES
) -> tuple[PreparedImages, object, str]:
    """(``count`` prepared calibration batches from the training images of ``data``, default
    the data the run trained on; the validation split and its name)."""

    data = calibration_data(weights, data)
    train_ds, _ = eval_split(data, "train", weights)
    val_ds, split = eval_split(data, "val", weights)
    val_ds = scorable(val_ds)  # scored whole: its unreadable images left out, as eval does
    return PreparedImages(train_ds, count, imgsz, resize), val_ds, split


def export_int8(weights, fp32: Path, out: Path | None = None, data=None) -> dict:
    """Quantize the exported ``fp32`` graph of checkpoint ``weights``: calibrate on training
    images of ``data`` (default: the data the run trained on), then report the mAP of both
    graphs on its validation split and their speed (ms/image, batch 1, interleaved)."""
    fp32 = Path(fp32)
    out = Path(out) if out else fp32.with_name(fp32.stem + "-int8.onnx")
    return quantized_report(OnnxBackend, quantize, weights, fp32, out, data, [out])


def quantized_report(
    open_backend, quantize_fn, weights, fp32: Path, out: Path, data, files,
    calibration_images: int = CALIBRATION_IMAGES, more=None,
) -> dict:  # fmt: skip
    """Calibrate on up to ``calibration_images`` of ``data``'s training images,
    ``quantize_fn(fp32, out, calibration)``, then score and time both models
    (:func:`compare`), and add what ``more(val_ds, backend, fp32_score)`` measures on the
    same split;
    ``files`` (what quantizing wrote) are removed when scoring fails, so no unchecked int8
    model is left behind."""
    backend = open_backend(fp32)
    calib, val_ds, split = calibration_and_val(
        weights, data, backend.imgsz, backend.resize, calibration_images
    )
    quantize_fn(fp32, out, calib)
    try:
        report = compare(open_backend, fp32, out, val_ds, backend)
        report.update(more(val_ds, backend, report["fp32"]) if more else {})
    except BaseException:
        for f in files:
            Path(f).unlink(missing_ok=True)
        raise
    used = len(calib) - len(calib.skipped)
    return {"path": str(out), "calibration_images": used, "val_split": split, **report}


def compare(
    open_backend, fp32: Path, int8: Path, val_ds, backend, name="int8", open_other=None,
    fp32_score: float | None = None,
) -> dict:  # fmt: skip
    """The task's metric of both models on ``val_ds`` and their ms per image (batch 1,
    interleaved rounds: :func:`interleaved_ms`). The other model is ``int8`` opened by
    ``open_other`` (default ``open_backend``), reported under ``name``; ``fp32_score`` is
    the fp32 model's metric when it was already scored on ``val_ds``."""

    t = task(backend.task)
    open_other = open_other or open_backend
    opened = [(name, open_other, int8)]
    if fp32_score is None:
        opened.append(("fp32", open_backend, fp32))
    scores = {n: t.score(predictor(o(p)), val_ds).metrics[t.fitness] for n, o, p in opened}
    scores.setdefault("fp32", fp32_score)
    timing = _images(val_ds, 16, backend.imgsz, backend.resize, seed=1)
    ms32, ms_other = interleaved_ms([open_backend(fp32).run, open_other(int8).run], timing)
    return {
        "metric": t.fitness,
        "fp32": round(scores["fp32"], 4),
        name: round(scores[name], 4),
        "change": round(scores[name] - scores["fp32"], 4),
        "ms_fp32": round(ms32, 2),
        f"ms_{name}": round(ms_other, 2),
        "speedup": round(ms32 / ms_other, 2),
    }
