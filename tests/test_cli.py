"""The CLI end to end: each command, its exit codes and its one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from detforge.cli import app
from detforge.data import read

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def detforge(*args, cwd=None):
    """Run the real console entry point (error handling lives in main())."""
    return subprocess.run(
        [sys.executable, "-m", "detforge", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
    )


def test_data_commands_end_to_end(tmp_path):
    r = cli("data", "synth", "--out", tmp_path / "s", "--n", 30, "--format", "labelme",
            "--size", 96)  # fmt: skip
    assert r.exit_code == 0, r.output
    r = cli("data", "stats", tmp_path / "s", "--json")
    stats = json.loads(r.output)
    assert stats["images"] == 30 and stats["format"] == "labelme"
    r = cli("data", "check", tmp_path / "s", "--json")
    assert r.exit_code == 0 and json.loads(r.output)["errors"] == 0
    r = cli("data", "convert", tmp_path / "s", "--out", tmp_path / "c", "--to", "coco")
    assert r.exit_code == 0 and read(tmp_path / "c").num_boxes == stats["boxes"]
    r = cli("data", "split", tmp_path / "c", "--out", tmp_path / "sp", "--ratios", "0.8,0.2")
    assert r.exit_code == 0 and (tmp_path / "sp" / "data.yaml").is_file()
    r = cli("data", "pack", tmp_path / "sp" / "data.yaml", "--out", tmp_path / "p",
            "--shard-size", 10)  # fmt: skip
    records = [
        json.loads((tmp_path / "p" / k / "index.json").read_text())["records"]
        for k in ("train", "val")
    ]
    assert r.exit_code == 0 and sum(records) == 30  # one shard set per split
    r = cli("data", "show", tmp_path / "p" / "data.yaml", "--out", tmp_path / "g.png", "--n", 4)
    assert r.exit_code == 0 and cv2.imread(str(tmp_path / "g.png")) is not None


def test_piped_tables_are_plain_lines_that_keep_whole_paths(tmp_path):
    """Piped (not a terminal), `data check` and `models` print tab-separated lines: a long
    path with brackets stays whole on one line for grep, never wrapped or read as markup."""
    root = tmp_path / ("a_rather_long_folder_name_for_a_dataset_of_photos[2026]" * 2)
    cli("data", "synth", "--out", root, "--n", 6, "--format", "csv", "--size", 64)
    csv = root / "annotations.csv"
    lines = csv.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.split(",")[3])
    cols = lines[i].split(",")
    cols[4], cols[6] = cols[6], cols[4]  # an inverted box: a finding naming the file
    lines[i] = ",".join(cols)
    csv.write_text("\n".join(lines) + "\n")
    r = detforge("data", "check", root, cwd=tmp_path.parent)
    assert r.returncode == 1
    header = "severity\tkind\tcount\tfirst example"
    assert header in r.stdout.splitlines()
    rows = [ln.split("\t") for ln in r.stdout.splitlines() if ln.startswith("error\t")]
    assert rows and rows[0][3].startswith(str(root.relative_to(tmp_path.parent)) + "/images/")
    r = detforge("models")
    head, *rows = [ln for ln in r.stdout.splitlines() if "\t" in ln]
    assert head.startswith("model\ttask") and {"det-n", "ssdlite"} <= {w[0] for w in (
        row.split("\t") for row in rows)}  # fmt: skip


def test_check_exit_code_and_fix(tmp_path):
    cli("data", "synth", "--out", tmp_path / "s", "--n", 10, "--format", "csv", "--size", 96)
    csv = tmp_path / "s" / "annotations.csv"
    lines = csv.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if line.split(",")[3])
    cols = lines[i].split(",")
    cols[4], cols[6] = cols[6], cols[4]  # inverted box
    lines[i] = ",".join(cols)
    csv.write_text("\n".join(lines) + "\n")
    assert cli("data", "check", tmp_path / "s").exit_code == 1
    r = cli("data", "check", tmp_path / "s", "--fix", "drop", "--out", tmp_path / "f")
    assert r.exit_code == 0, r.output
    assert "fixed copy" in r.output
    assert csv.read_text() == "\n".join(lines) + "\n"


def test_errors_are_one_clear_line(tmp_path):
    r = detforge("data", "stats", tmp_path / "nope")
    assert r.returncode == 2
    assert "error:" in r.stderr and "nope" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "x").write_text("mine")
    cli("data", "synth", "--out", tmp_path / "s", "--n", 3)
    r = detforge("data", "convert", tmp_path / "s", tmp_path / "o", "--to", "voc")  # before 0.1.0
    assert r.returncode == 2 and "--overwrite" in r.stderr
    assert "note: DST (positional) is now --out" in r.stderr  # the old spelling still works
    r = detforge("data", "convert", tmp_path / "s", "--out", tmp_path / "o2", "--to", "vocc")
    assert r.returncode == 2 and "did you mean 'voc'" in r.stderr


def test_collect_errors_and_saves_frames(tmp_path):
    r = detforge("data", "collect", "--camera", "97", "--out", tmp_path / "f", "--count", 1)
    assert r.returncode == 2 and "could not open camera 97" in r.stderr
    video = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for k in range(5):
        w.write(np.full((48, 64, 3), k * 40, np.uint8))
    w.release()
    r = cli(
        "data", "collect", "--camera", video, "--out", tmp_path / "f", "--count", 3, "--interval", 0
    )
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert len(names) == 3 and len(set(names)) == 3


@pytest.mark.slow
def test_demo_runs(tmp_path):
    r = detforge("demo", "--project", tmp_path / "runs", "--n", 40, "--epochs", 2, "--imgsz", 96)
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "demo" / "exp"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["images"] == 40 and summary["check"]["errors"] == 0
    assert (
        summary["train"]["epochs"] == 2
        and (run / "train" / "exp" / "weights" / "last.pt").is_file()
    )
    assert (run / "model.onnx").is_file() and summary["onnx"]["parity"]["unmatched"] == 0
    assert summary["predict"]["frames"] == 150 and (run / "predict" / "video.mp4").is_file()
    assert summary["track"]["objects"] == 6 and (run / "predict" / "tracks.txt").is_file()
    assert (run / "eval" / "test" / "confusion_matrix.png").is_file()
    r = detforge("demo", "--project", tmp_path / "runs", "--n", 20, "--epochs", 0)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "runs" / "demo" / "exp2" / "summary.json").is_file()  # never reused


@pytest.mark.slow  # trains: the full suite, not the everyday loop
def test_classification_demo_runs(tmp_path):
    r = detforge(
        *("demo", "--task", "classify", "--project", tmp_path / "runs"),
        *("--n", 45, "--epochs", 1, "--imgsz", 32),
    )
    assert r.returncode == 0, r.stderr
    run = tmp_path / "runs" / "demo" / "classify"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "classify" and summary["images"] == 45
    assert summary["splits"] == {"train": 31, "val": 7, "test": 7}
    assert (run / "splits" / "test" / "circle").is_dir()  # class folders, split per class
    assert summary["onnx"]["parity"]["same_top1"] and (run / "model.onnx").is_file()
    assert (run / "eval" / "test" / "misclassified.png").is_file()
    lines = Path(summary["predict"]["predictions"]).read_text().splitlines()
    assert len(lines) == 7 and json.loads(lines[0])["boxes"] == []  # a classifier's row
    r = detforge("demo", "--task", "segment")
    assert r.returncode == 2 and "detect or classify" in r.stderr


def test_eval_predict_export_commands(tmp_path):
    import detforge as df

    from conftest import jittered_checkpoint

    ds = df.synth(tmp_path / "data", 6, "yolo", seed=4)
    w = jittered_checkpoint(tmp_path / "m.pt", "ssdlite", imgsz=96, classes=ds.classes)
    r = cli("eval", w, "--data", tmp_path / "data", "--project", tmp_path / "runs", "--json")
    m = json.loads(r.stdout)
    assert {"mAP50-95", "mAP50", "mAP75", "precision", "recall", "per_class"} <= set(m)
    r = cli("export", w, "--format", "onnx")
    assert "parity with PyTorch" in r.stdout and (tmp_path / "m.onnx").is_file()
    out = tmp_path / "pred"
    r = cli(
        "predict",
        tmp_path / "m.onnx",
        "--source",
        tmp_path / "data" / "images",
        "--save-dir",
        out,
        "--format",
        "csv",
        "--conf",
        "0.05",
    )
    assert "6 images/frames" in r.stdout
    assert "--save-dir is now --out (--save-dir is accepted until detforge 0.2)" in r.stderr
    assert len(list(out.glob("*.jpg"))) == 6 and (out / "predictions.csv").is_file()
    r = detforge("predict", w, "--source", 7, "--out", tmp_path / "cam")
    assert r.returncode == 2 and "could not open camera 7" in r.stderr


def test_data_side_does_not_import_torch():
    """The data commands start fast: torch (about 1 s, 400 MB) loads only with a model."""
    code = (
        "import sys, detforge, detforge.cli\n"
        "from detforge.data import read, write\n"
        "assert 'torch' not in sys.modules and 'cv2' not in sys.modules, 'imported'\n"
        "detforge.load, detforge.train, detforge.evaluate\n"
        "assert 'torch' not in sys.modules, 'the API functions import torch when called'\n"
        "detforge.Predictor\n"
        "assert 'torch' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_paths_with_brackets_print_as_they_are(tmp_path):
    """A folder named like Rich markup (``exp[1]``, ``[bold]``) is printed as itself."""
    for name in ("exp[1]", "[bold]x"):
        r = detforge("data", "synth", "--out", tmp_path / name, "--n", "2", "--size", "64")
        assert r.returncode == 0, r.stderr
        assert f"{tmp_path / name} (yolo)" in r.stdout.replace("\n", "")
