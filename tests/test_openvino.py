"""OpenVINO export: an IR that agrees with PyTorch (and with the ONNX export), loads through
the same Predictor, and refuses what it cannot be, in one line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import detforge
from detforge.data.synth import render
from detforge.engine.export.parity import _match, _safe
from detforge.errors import DetforgeError

from conftest import jittered_checkpoint

pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")


def _images(n=3):
    return [np.asarray(render(np.random.default_rng(s), 180, 140, 3)[0]) for s in range(n)]


@pytest.mark.parametrize("name", ["det-n", "resnet18"])
def test_openvino_ir_agrees_with_pytorch_and_onnx(name, tmp_path):
    weights = jittered_checkpoint(tmp_path / "m.pt", name, imgsz=128)
    r = detforge.export(weights, tmp_path / "ir" / "model.xml", format="openvino")
    xml, bin_ = tmp_path / "ir" / "model.xml", tmp_path / "ir" / "model.bin"
    assert r["path"] == str(xml) and xml.is_file() and bin_.stat().st_size > 10_000
    assert sorted(p.name for p in xml.parent.iterdir()) == ["model.bin", "model.xml"]
    p = r["parity"]
    ov_det = detforge.load(xml)
    assert ov_det.backend.kind == "openvino" and ov_det.imgsz == 128
    onnx_det = detforge.load(detforge.export(weights, tmp_path / "m.onnx")["path"])
    assert ov_det.names == onnx_det.names
    if name == "resnet18":
        assert p["same_top1"] and p["max_prob_diff"] <= 1e-4
        for a, b in zip(ov_det.predict(_images()), onnx_det.predict(_images())):
            assert np.abs(a.probs - b.probs).max() <= 1e-4
        return
    assert p["detections"] > 0 and p["unmatched"] == 0
    opts = {"conf": 0.006, "iou": 1.0}  # a random det-n's scores sit just above its 0.005 floor
    for a, b in zip(ov_det.predict(_images(), **opts), onnx_det.predict(_images(), **opts)):
        a, b = (a.boxes, a.scores, a.labels), (b.boxes, b.scores, b.labels)
        assert len(a[0]) > 0
        for x, y in ((_safe(a), b), (_safe(b), a)):
            unmatched, worst_iou, worst_ds = _match(x, y, 0.99, 1e-3)
            assert unmatched == 0 and worst_iou >= 0.99 and worst_ds <= 1e-3


def test_openvino_refusals_name_the_file(tmp_path):
    weights = jittered_checkpoint(tmp_path / "m.pt", "ssdlite", imgsz=96)
    with pytest.raises(DetforgeError, match=r"an OpenVINO IR is an \.xml file"):
        detforge.export(weights, tmp_path / "m.ir", format="openvino")
    detforge.export(weights, tmp_path / "a.xml", format="openvino")
    with pytest.raises(DetforgeError, match="already exists"):
        detforge.export(weights, tmp_path / "a.xml", format="openvino")
    with pytest.raises(DetforgeError, match="unknown export format"):
        detforge.export(weights, format="tflite")
    broken = tmp_path / "broken.xml"
    broken.write_text("<net>not an IR")
    with pytest.raises(DetforgeError, match=r"broken\.xml: OpenVINO cannot load it"):
        detforge.load(broken)
    assert not list(tmp_path.glob(".detforge-openvino-*"))  # no scratch left behind


def test_export_starts_no_telemetry(tmp_path, monkeypatch):
    """OpenVINO's conversion tool sends usage telemetry unless the user opted out (and on a
    machine without internet its sender hung a process at exit); detforge's export must not
    start it."""
    tm = pytest.importorskip("openvino_telemetry")

    def refuse(*args, **kwargs):
        raise AssertionError("OpenVINO telemetry was started")

    monkeypatch.setattr(tm.Telemetry, "init", refuse)
    monkeypatch.setattr(tm.Telemetry, "send_event", refuse)
    weights = jittered_checkpoint(tmp_path / "m.pt", "det-n", imgsz=96)
    r = detforge.export(weights, tmp_path / "m.xml", format="openvino")
    assert r["parity"]["unmatched"] == 0


def test_openvino_computes_in_f32_unless_asked(tmp_path):
    """OpenVINO's CPU plugin picks bf16 by itself on CPUs with AVX512_BF16 or AMX; detforge
    compiles at f32 there too (the parity above holds on every CPU) and computes in bf16 only
    when asked. The bf16 half runs where the CPU has bf16 units, and skips elsewhere."""
    import openvino as ov

    weights = jittered_checkpoint(tmp_path / "m.pt", "resnet18", imgsz=64)
    xml = detforge.export(weights, tmp_path / "m.xml", format="openvino")["path"]
    onnx = detforge.load(detforge.export(weights, tmp_path / "m.onnx")["path"])
    f32 = detforge.load(xml)
    assert f32.backend.precision == "f32"
    want = [r.probs for r in onnx.predict(_images())]
    for got, ref in zip(f32.predict(_images()), want):
        assert np.abs(got.probs - ref).max() <= 1e-5
    with pytest.raises(DetforgeError, match="precision 'int4' is not one of f32, bf16, f16"):
        detforge.load(xml, precision="int4")
    for other in (weights, tmp_path / "m.onnx"):  # the CLI's --precision: OpenVINO's alone
        with pytest.raises(DetforgeError, match=r"precision 'bf16' is for OpenVINO models"):
            detforge.load(other, precision="bf16")
    args = ["predict", str(weights), "--source", str(tmp_path), "--precision", "bf16"]
    cli = subprocess.run([sys.executable, "-m", "detforge", *args], capture_output=True, text=True)
    assert cli.returncode == 2 and "is for OpenVINO models (.xml)" in cli.stderr
    core = ov.Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("this CPU has no bf16 units: OpenVINO computes f32 whatever is asked")
    plugin_default = core.compile_model(core.read_model(xml), "CPU")
    assert plugin_default.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "bf16"
    bf16 = detforge.load(xml, precision="bf16")
    assert bf16.backend.precision == "bf16"
    diffs = [np.abs(a.probs - b).max() for a, b in zip(bf16.predict(_images()), want)]
    assert max(diffs) > 1e-4  # bf16 keeps 8 mantissa bits: what f32 parity must not see


ALTSTACK = """
import gc, os, signal, sys
import numpy as np
import detforge
a = detforge.load(sys.argv[1]); a.predict([np.zeros((64, 64, 3), np.uint8)])
b = detforge.load(sys.argv[1]); b.predict([np.zeros((64, 64, 3), np.uint8)])
del a; gc.collect()
del b; gc.collect()  # destroyed in the order made: OpenVINO would leave a freed signal stack
signal.signal(signal.SIGUSR1, lambda *_: print("handled"))
os.kill(os.getpid(), signal.SIGUSR1)
"""


def test_two_models_freed_in_order_leave_signal_handling_intact(tmp_path):
    """OpenVINO installs its own signal stack on a thread that infers and restores the one it
    found when a model is destroyed; freed in the order made, two models left the thread on
    freed memory and the next Python signal handler (torch's SIGCHLD one, Ctrl-C) ended the
    process with SIGSEGV: that is how the test suite died on AVX-512 machines. Run apart, so a
    regression kills a child, not the suite."""
    import subprocess
    import sys

    weights = jittered_checkpoint(tmp_path / "m.pt", "resnet18", imgsz=64)
    xml = detforge.export(weights, tmp_path / "m.xml", format="openvino")["path"]
    run = subprocess.run([sys.executable, "-X", "faulthandler", "-c", ALTSTACK, xml],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0 and run.stdout.strip() == "handled", (run.returncode, run.stderr)


def test_openvino_int8_export_quantizes_all_but_the_head_outputs(tmp_path, synth_ds):
    """`export --format openvino --int8`: NNCF post-training quantization calibrated on the
    training images (a truncated one skipped with a warning), scored and timed against the
    fp32 IR; the head's output convolutions stay in float, and the IR says it is int8."""
    import openvino as ov

    from detforge.data import write

    write(synth_ds.subset(range(16)), tmp_path / "data" / "train", "yolo")
    write(synth_ds.subset(range(16, 24)), tmp_path / "data" / "val", "yolo")
    (tmp_path / "data" / "data.yaml").write_text("train: train\nval: val\n")
    cuts = [sorted((tmp_path / "data" / s).rglob("*.jpg"))[3] for s in ("train", "val")]
    sizes = []
    for cut in cuts:  # one photo in each split truncated to a third (its header still reads)
        sizes.append(cut.stat().st_size // 3)
        cut.write_bytes(cut.read_bytes()[: sizes[-1]])
    weights = jittered_checkpoint(tmp_path / "m.pt", "det-n", imgsz=96)
    with pytest.warns(UserWarning) as warned:
        r = detforge.export(
            weights, tmp_path / "m.xml", format="openvino", int8=True,
            data=str(tmp_path / "data" / "data.yaml"),
        )  # fmt: skip
    for cut, size in zip(cuts, sizes):  # each named, and the user's file as it was
        assert any(str(w.message).startswith(f"skipping {cut}: ") for w in warned), cut
        assert cut.stat().st_size == size
    q = r["int8"]
    assert q["path"] == str(tmp_path / "m-int8.xml") and (tmp_path / "m-int8.bin").is_file()
    assert q["calibration_images"] == 15 and q["metric"] == "mAP50-95"
    assert q["ms_int8"] > 0  # the speedup comes from the unrounded times
    assert q["speedup"] == pytest.approx(q["ms_fp32"] / q["ms_int8"], abs=0.03)
    from detforge.engine.export.openvino import cpu_has_bf16

    assert ("bf16" in r) == cpu_has_bf16()  # bf16 measured beside int8 where the CPU has it
    if "bf16" in r:
        b = r["bf16"]
        assert b["fp32"] == q["fp32"] and b["change"] == pytest.approx(b["bf16"] - b["fp32"])
        assert b["speedup"] == pytest.approx(b["ms_fp32"] / b["ms_bf16"], abs=0.03)
    model = ov.Core().read_model(q["path"])
    fq = [op for op in model.get_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fq) > 20
    convs = {
        op.get_friendly_name(): op for op in model.get_ops() if op.get_type_name() == "Convolution"
    }
    for name, op in convs.items():  # a quantized conv reads int8 weights scaled back
        weight_from = op.input_value(1).get_node().get_type_name()
        head_output = "/head/cls." in name or "/head/reg." in name
        assert (weight_from == "Constant") == head_output, (name, weight_from)
    # depthwise weights ranged per output channel only, as the CPU's int8 kernels need
    # (through the ONNX Reshape NNCF ranged them per channel and kernel column: float kernels)
    depthwise = [op for op in model.get_ops() if op.get_type_name() == "GroupConvolution"]
    assert len(depthwise) >= 10
    for op in depthwise:
        scaled = op.input_value(1).get_node()  # int8 -> Convert -> Multiply, or FakeQuantize
        ranges = [list(v.get_shape()) for v in scaled.input_values()[1:2]]
        if scaled.get_type_name() == "Multiply":
            consts = [
                v for v in scaled.input_values() if v.get_node().get_type_name() == "Constant"
            ]
            ranges = [list(v.get_shape()) for v in consts]
        groups = op.input_value(1).get_shape()[0]
        assert ranges == [[groups, 1, 1, 1, 1]], (op.get_friendly_name(), ranges)
    assert model.get_rt_info(["detforge", "quantized"]).astype(str) == "int8"
    det = detforge.load(q["path"])  # it runs through the same backend, metadata intact
    assert det.task == "detect" and det.classes == ["circle", "square", "triangle"]
    det.predict(_images())


@pytest.mark.parametrize("fmt,name", [("openvino", "m.xml"), ("onnx", "m.onnx")])
def test_int8_without_calibration_images_is_refused_before_anything_is_written(tmp_path, fmt, name):
    """A checkpoint that does not say what it trained on, and no --data: one line saying to
    pass --data, and no file written (not even the fp32 graph)."""
    weights = jittered_checkpoint(tmp_path / "m.pt", "det-n", imgsz=64)
    with pytest.raises(DetforgeError, match="does not say what it trained on") as e:
        detforge.export(weights, tmp_path / name, format=fmt, int8=True)
    assert "pass --data" in e.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_nncf_sends_no_telemetry_from_our_process():
    """NNCF reports usage through openvino_telemetry unless NNCF_CI is set before its first
    import; detforge's import of it sets it (checked outside pytest, which NNCF exempts)."""
    import subprocess
    import sys

    code = (
        "from detforge.engine.export.openvino import import_nncf; import_nncf(); "
        "import nncf.telemetry.wrapper as w; print(type(w.telemetry).__name__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "MagicMock"  # NNCF's stub: nothing is sent
