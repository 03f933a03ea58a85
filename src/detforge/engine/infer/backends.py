"""Backends: a model in one runtime behind one protocol.

Every prediction in detforge (training-time validation, ``detforge eval``, ``predict``,
``stream``, the ONNX parity check) goes: :func:`~detforge.data.resize.prepare` each image on
the host (resize to the model's square input, uint8, with training's own filter) -> a backend
on the uint8 batch -> a result type's ``from_batch``. Normalization happens inside the model,
or inside the ONNX graph.

A backend has ``kind``, ``task``, ``classes``, ``imgsz``, ``resize`` and is called on a uint8
batch ``(B, 3, S, S)``; it returns one raw output per image: ``(boxes, scores, labels)`` for
graphs with a ``batch_index`` output (detections), else each output's row (``probs``).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import torch

from detforge.engine.devices import pick_device
from detforge.errors import DetforgeError, require
from detforge.models import load_checkpoint


def split_outputs(names, outputs, n: int) -> list:
    """A batch's raw outputs -> one entry per image (see the module docstring)."""
    if "batch_index" in names:
        d = dict(zip(names, outputs))
        index = d["batch_index"]
        return [
            (d["boxes"][index == i], d["scores"][index == i], d["labels"][index == i])
            for i in range(n)
        ]
    return list(outputs[0][:n])


class InferModule(torch.nn.Module):
    """``forward`` is the model's ``infer``: what the PyTorch backend runs and ONNX traces."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor):
        return self.model.infer(images)


class TorchBackend:
    """A model in eval mode on ``device``, called through :class:`InferModule`."""

    kind = "torch"

    def __init__(self, model, device="cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.module = InferModule(self.model).eval()
        self.classes = list(model.classes)
        self.imgsz = model.imgsz
        self.resize = model.resize_mode
        self.task = model.task
        self.output_names = tuple(model.output_names)
        self.default_conf = getattr(model, "default_conf", None)

    @classmethod
    def from_checkpoint(cls, path, device="cpu") -> TorchBackend:

        model, _ = load_checkpoint(path)
        return cls(model, pick_device(device))

    @torch.no_grad()
    def __call__(self, batch: np.ndarray) -> list:
        out = self.module(torch.from_numpy(batch).to(self.device))
        return split_outputs(self.output_names, [t.cpu().numpy() for t in out], len(batch))


def ort_session(path, device: str = "cpu", threads: int | None = None):
    """An onnxruntime session (CUDA first when asked for and available); ``threads`` caps
    its CPU threads (default: onnxruntime's, one per core)."""
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    gpu = str(device).startswith("cuda") or str(device) == "auto"
    if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # data-dependent output shapes warn on every run
    if threads:
        opts.intra_op_num_threads = threads
        # threads that spin while waiting burn the CPU the decoding beside them needs
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise DetforgeError(
            f"{path}: onnxruntime cannot load it ({first})", "re-export with detforge export"
        ) from e


def graph_metadata(path, meta: dict, fmt: str = "onnx") -> dict:
    """detforge's metadata of an exported graph, checked: task, classes, imgsz, resize,
    batch (None when dynamic). Names the file and says how to re-export when it is damaged."""
    again = f"re-export it with `detforge export WEIGHTS --format {fmt}`"
    name = {"onnx": "ONNX", "openvino": "OpenVINO"}[fmt]
    if meta.get("task") not in ("detect", "classify") or "classes" not in meta:
        raise DetforgeError(f"{path}: not an {name} file written by detforge export", again)
    try:
        out = {
            "classes": json.loads(meta["classes"]),
            "imgsz": int(meta["imgsz"]),
            "resize": meta["resize"],
            "task": meta["task"],
            "batch": None if meta["batch"] == "dynamic" else int(meta["batch"]),
            "conf": float(meta["conf"]) if meta.get("conf") else None,  # measured default
        }
        if not isinstance(out["classes"], list) or not all(
            isinstance(c, str) for c in out["classes"]
        ):
            raise ValueError("classes is not a list of names")
        if out["imgsz"] <= 0 or (out["batch"] is not None and out["batch"] <= 0):
            raise ValueError("imgsz and batch must be positive")
        if out["conf"] is not None and not 0 < out["conf"] < 1:
            raise ValueError(f"conf {out['conf']} is not in (0, 1)")
    except KeyError as e:
        raise DetforgeError(f"{path}: detforge metadata lacks {e.args[0]!r}", again) from None
    except (ValueError, TypeError) as e:
        raise DetforgeError(f"{path}: detforge metadata is damaged ({e})", again) from None
    return out


class GraphBackend:
    """An exported graph (onnxruntime, OpenVINO): metadata from the file, ``run`` on a batch
    that fits the graph's batch dimension; calls pad a fixed batch as needed."""

    batch: int | None
    output_names: tuple

    def _set_metadata(self, path, meta: dict, fmt: str) -> None:
        self.metadata = dict(meta)
        m = graph_metadata(path, meta, fmt)
        self.classes, self.imgsz, self.resize = m["classes"], m["imgsz"], m["resize"]
        self.task, self.batch, self.default_conf = m["task"], m["batch"], m["conf"]

    def run(self, batch: np.ndarray) -> list:
        raise NotImplementedError

    def __call__(self, batch: np.ndarray) -> list:
        n = self.batch or len(batch)
        out = []
        for i in range(0, len(batch), n):
            chunk = batch[i : i + n]
            real = len(chunk)
            if real < n:  # a fixed-batch graph: pad with copies, drop their outputs
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], n - real, 0)])
            out += split_outputs(self.output_names, self.run(chunk), real)
        return out


class OnnxBackend(GraphBackend):
    """An exported model in onnxruntime; everything it needs is in the file's metadata."""

    kind = "onnx"

    def __init__(self, path, device="cpu", threads: int | None = None):
        self.session = ort_session(path, device, threads)
        self._set_metadata(path, self.session.get_modelmeta().custom_metadata_map, "onnx")
        self.output_names = tuple(o.name for o in self.session.get_outputs())

    def run(self, batch: np.ndarray) -> list:
        """The graph's raw outputs for ``batch`` (which fits its batch dimension)."""
        return self.session.run(None, {"images": batch})


class _SignalStackKept:
    """Keeps the calling thread's alternate signal stack across a call into OpenVINO (Linux).

    OpenVINO's CPU plugin installs a signal stack of its own on a thread that runs inference
    and puts back the one it found when the model is destroyed: two models destroyed in the
    order they were made leave the thread pointing at freed memory, and the next Python signal
    handler (Ctrl-C, torch's SIGCHLD handler) then kills the process with SIGSEGV. Put back
    after each call, the caller's stack (faulthandler's, or none) is the one that stays."""

    def __init__(self):
        import ctypes

        class Stack(ctypes.Structure):
            _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

        self.ctypes, self.stack = ctypes, Stack
        self.libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

    def __enter__(self):
        if self.libc is not None:
            self.saved = self.stack()
            self.libc.sigaltstack(None, self.ctypes.byref(self.saved))
        return self

    def __exit__(self, *exc):
        if self.libc is not None:
            self.libc.sigaltstack(self.ctypes.byref(self.saved), None)


# What OpenVINO's CPU plugin may compute in. It picks bf16 by itself on CPUs with AVX512_BF16
# or AMX (its default hint there), which moves scores and boxes away from what validation
# measured: detforge always asks for one, f32 unless the caller chose otherwise.
OPENVINO_PRECISIONS = ("f32", "bf16", "f16")


class OpenVinoBackend(GraphBackend):
    """An exported model as an OpenVINO IR (``.xml`` + ``.bin``) on the CPU; detforge's
    metadata sits in the IR's ``rt_info`` under ``detforge``. ``precision`` is what the CPU
    computes in: f32 (the default, on every CPU), or bf16 / f16 as an explicit choice."""

    kind = "openvino"

    def __init__(self, path, device="cpu", threads: int | None = None, precision: str = "f32"):
        ov = import_openvino()
        if precision not in OPENVINO_PRECISIONS:
            raise DetforgeError(
                f"OpenVINO precision {precision!r} is not one of {', '.join(OPENVINO_PRECISIONS)}",
                "f32 is exact on every CPU; bf16 needs AVX512_BF16 or AMX",
            )
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        self.signal_stack = _SignalStackKept()
        try:
            model = core.read_model(str(path))
            with self.signal_stack:
                compiled = core.compile_model(model, "CPU", config)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DetforgeError(
                f"{path}: OpenVINO cannot load it ({first})",
                "re-export with `detforge export WEIGHTS --format openvino`",
            ) from e
        meta = {}
        if model.has_rt_info(["detforge"]):
            for key, value in model.get_rt_info(["detforge"]).astype(dict).items():
                meta[key] = value.astype(str)
        self._set_metadata(path, meta, "openvino")
        # what the plugin settled on (a CPU without bf16 units computes f32 whatever asked)
        self.precision = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.request = compiled.create_infer_request()
        self.outputs = list(compiled.outputs)
        # the IR's own names: a compiled output may carry extra ones (``/Gather_4_output_0``)
        self.output_names = tuple(o.get_any_name() for o in model.outputs)

    def run(self, batch: np.ndarray) -> list:
        with self.signal_stack:
            # the batch is read in place (no copy into the request); outputs are copied out
            res = self.request.infer({"images": batch}, share_inputs=True)
        return [np.asarray(res[o]) for o in self.outputs]


def import_openvino():
    """The ``openvino`` module, or one line on how to install it."""
    return require("openvino", "OpenVINO is not installed",
                   "pip install 'detforge[openvino]' (or: pip install openvino)")  # fmt: skip
