"""Every documented option of every command reaches the API, once.

A table gives each command the arguments it needs (``BASE``) and, where the type alone does
not give a valid one, a value per option (``VALUES``). For each visible option the command runs
with the option added, against a recorder in place of the API function it calls, which binds
the call to the real function's signature (an option passed twice is a TypeError there, as
``convert --images`` once was) and stops the command. The call must differ from the call
without the option: an option the CLI forgets to pass on fails here. Options that only shape
what is printed are listed in ``PRINT_ONLY``; the test fails on any option the table does not
know. The data commands then run for real on a small generated set with every option at once
(``REAL``), so a facade that drops or doubles one fails too.
"""

from __future__ import annotations

import inspect

import pytest
import typer.main
from typer.testing import CliRunner

import detforge
import detforge.api
from detforge.cli import app
from detforge.data.check import CheckResult

runner = CliRunner()

# what each command needs besides the option under test ({d}: a small generated dataset)
BASE = {
    "predict": ["w.pt", "--source", "{d}"],
    "eval-track": ["pred.txt", "gt.txt"],
    "serve": ["w.pt"],
    "models": [],
    "train": ["--data", "{d}"],
    "eval": ["w.pt", "--data", "{d}"],
    "report": ["run"],
    "export": ["w.pt"],
    "demo": [],
    "data check": ["{d}"],
    "data split": ["{d}", "--out", "{t}/split"],
    "data convert": ["{d}", "--out", "{t}/conv", "--to", "coco"],
    "data report": ["{d}"],
    "data stats": ["{d}"],
    "data show": ["{d}"],
    "data pack": ["{d}", "--out", "{t}/pack"],
    "data synth": ["--out", "{t}/synth"],
    "data collect": ["--out", "{t}/frames"],
    "data select": ["w.pt", "--source", "{d}", "--out", "{t}/batch"],
}
# values where the option's type does not give a valid one; a list: the option's arguments
# (several when an option only counts together with another)
VALUES = {
    "--format": "voc",
    "predict --format": "csv",
    "export --format": "openvino",
    "--to": "voc",
    "data check --to": ["--fix", "clip", "--out", "{t}/fixed", "--to", "voc"],
    "data check --out": ["--fix", "clip", "--out", "{t}/fixed"],
    "data check --fix": ["--fix", "drop", "--out", "{t}/fixed"],
    "data check --overwrite": ["--fix", "clip", "--out", "{t}/fixed", "--overwrite"],
    "--device": "cpu",
    "--precision": "bf16",
    "--task": "classify",
    "--model": "det-s",
    "--pretrained": "none",
    "--optimizer": "sgd",
    "--ratios": "0.5,0.5",
    "--shard-size": "10",
    "--names": "circle,square,triangle",
    "--source": "{d}/images",
    "--data": "{d}/other",
    "--address": ["--ray", "--address", "auto"],
    "--actors": ["--ray", "--actors", "3"],
    "serve --replicas": ["--ray", "--replicas", "3"],
    "--set": "augment.mosaic=0.3",
    "--resume": None,  # another call: see test_train's resume tests
    "--config": None,  # likewise: a YAML file of fields
    "--split": "val",
    "--host": "0.0.0.0",
    "--api-key": "k",
    "--camera": "3",
    "--scene": ["--video", "--scene", "4"],
    "--classes": ["--pretrain", "--classes", "12"],
    "--mosaic": ["--augment", "--mosaic", "0.7"],
    "data show --imgsz": ["--augment", "--imgsz", "96"],
    "--imgsz": "160",
    "--label-map": "{d}/label_map.pbtxt",
    "--images": "{d}/images",
}
PRINT_ONLY = {"--json", "--verbose"}  # how the result is printed, not what is computed

CALLS = {  # the API function each command calls (options may switch to the second)
    "predict": ("predict", "predict_dataset"),
    "eval-track": ("evaluate_tracks",),
    "serve": ("serve",),
    "models": ("list_models",),
    "train": ("train",),
    "eval": ("evaluate",),
    "report": ("report",),
    "export": ("export",),
    "demo": ("run_demo",),
    "data check": ("check", "fix"),
    "data split": ("split",),
    "data convert": ("convert",),
    "data report": ("data_report",),
    "data stats": ("stats",),
    "data show": ("show",),
    "data pack": ("pack",),
    "data synth": ("synth", "synth_video"),
    "data collect": ("collect",),
    "data select": ("select",),
}


class _Called(Exception):
    pass


GOES_ON = {"check": lambda: CheckResult(images=0, boxes=0)}  # data check --fix: check, then fix


def commands() -> dict:
    """{"data convert": click command, ...} for every command."""
    found = {}

    def walk(cmd, prefix):
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, [*prefix, name])
        if not hasattr(cmd, "commands"):
            found[" ".join(prefix)] = cmd

    walk(typer.main.get_command(app), [])
    return found


def visible_options(cmd) -> list:
    return [p for p in cmd.params if p.opts[0].startswith("--") and not p.hidden]


def value_for(command: str, param) -> list[str] | None:
    flag = param.opts[0]
    for key in (f"{command} {flag}", flag):
        if key in VALUES:
            v = VALUES[key]
            return None if v is None else (v if isinstance(v, list) else [flag, v])
    if param.is_flag:
        return [param.opts[0] if param.default is False else param.secondary_opts[0]]
    kind = param.type_descriptor.annotation
    return [flag, {int: "3", float: "0.37"}.get(kind, "x7")]


@pytest.fixture
def record(monkeypatch):
    """Replace every API function the CLI calls by one that binds its call to the real
    signature, records it and stops the command."""
    calls = []
    names = {n for pair in CALLS.values() for n in pair} | {"set_max_pixels"}
    for name in names:
        real = getattr(detforge.api, name, None) or getattr(detforge, name)

        def fake(*args, _name=name, _sig=inspect.signature(real), **kwargs):
            bound = _sig.bind(*args, **kwargs)  # TypeError for an argument given twice
            bound.apply_defaults()
            calls.append((_name, {k: repr(v) for k, v in bound.arguments.items()}))
            if _name in GOES_ON:  # the command uses the answer, then calls again
                return GOES_ON[_name]()
            raise _Called

        for owner in (detforge, detforge.api):
            if hasattr(owner, name):
                monkeypatch.setattr(owner, name, fake)
    return calls


def run(record, command: str, extra: list[str], t) -> tuple:
    """The API calls the command makes (name, bound arguments), in order."""
    args = [a.format(d=t / "data", t=t) for a in [*command.split(), *BASE[command], *extra]]
    record.clear()
    r = runner.invoke(app, args)
    assert record and (r.exception is None or isinstance(r.exception, (_Called, SystemExit))), (
        args, r.output, r.exception)  # fmt: skip
    return tuple(record)


def test_the_table_knows_every_command():
    assert set(commands()) - {"version"} == set(BASE) == set(CALLS)


@pytest.mark.parametrize("command", sorted(BASE))
def test_every_option_reaches_the_api_once(command, record, tmp_path):
    cmd = commands()[command]
    baseline = run(record, command, [], tmp_path)
    assert baseline[-1][0] in CALLS[command]
    for param in visible_options(cmd):
        flag = param.opts[0]
        if flag in PRINT_ONLY:
            continue
        extra = value_for(command, param)
        if extra is None:
            continue
        got = run(record, command, extra, tmp_path)
        assert got != baseline, f"{command} {' '.join(extra)}: not passed to {got[-1][0]}"


@pytest.mark.parametrize("command", sorted(BASE))
def test_every_option_is_known_to_the_table(command):
    """A new option needs a value here (or the type's default one) or a reason to skip."""
    for param in visible_options(commands()[command]):
        flag = param.opts[0]
        assert flag in PRINT_ONLY or value_for(command, param) is not None or flag in VALUES


# The data commands for real, every option at least once: {d} is a VOC set (XMLs in
# Annotations/, photos in JPEGImages/), {x} the XMLs alone, {r} a packed record with its
# label map, {v} a generated video (a camera stand-in), {t} a scratch folder. `data select`
# needs a trained model: tests/test_select.py runs it with its options.
REAL = [
    ["data", "synth", "--out", "{t}/s", "--n", "12", "--format", "yolo", "--seed", "3",
     "--size", "96", "--overwrite"],
    ["data", "synth", "--out", "{t}/v", "--video", "--n", "8", "--scene", "2", "--size", "96"],
    ["data", "synth", "--out", "{t}/f", "--pretrain", "--classes", "12", "--n", "2",
     "--size", "96"],
    ["data", "check", "{x}", "--format", "voc", "--images", "{d}/JPEGImages", "--negatives",
     "--names", "circle,square,triangle", "--fast", "--fix", "clip", "--out", "{t}/fixed",
     "--to", "yolo", "--overwrite", "--allow-outside-paths"],
    ["data", "check", "{r}", "--label-map", "{t}/rec/label_map.pbtxt", "--json"],
    ["data", "stats", "{r}", "--label-map", "{t}/rec/label_map.pbtxt", "--format", "tfrecord",
     "--imgsz", "160", "--negatives", "--allow-outside-paths", "--images", "{t}", "--json"],
    ["data", "convert", "{x}", "--out", "{t}/c", "--to", "coco", "--format", "voc",
     "--images", "{d}/JPEGImages", "--negatives", "--allow-outside-paths", "--strict",
     "--link", "--overwrite", "--label-map", "{t}/rec/label_map.pbtxt"],
    ["data", "convert", "{d}", "--out", "{t}/c2", "--to", "coco", "--no-images"],
    ["data", "split", "{x}", "--out", "{t}/sp", "--ratios", "0.5,0.5", "--seed", "2",
     "--to", "yolo", "--format", "voc", "--images", "{d}/JPEGImages", "--negatives",
     "--allow-outside-paths", "--strict", "--link", "--overwrite",
     "--label-map", "{t}/rec/label_map.pbtxt"],
    ["data", "split", "{d}", "--out", "{t}/sp2", "--no-images", "--to", "coco"],
    ["data", "pack", "{x}", "--out", "{t}/pk", "--shard-size", "4", "--workers", "1",
     "--name", "part", "--format", "voc", "--images", "{d}/JPEGImages", "--negatives",
     "--allow-outside-paths", "--strict", "--overwrite",
     "--label-map", "{t}/rec/label_map.pbtxt"],
    ["data", "show", "{x}", "--out", "{t}/grid.png", "--n", "4", "--seed", "1", "--augment",
     "--mosaic", "0.5", "--imgsz", "96", "--format", "voc", "--images", "{d}/JPEGImages",
     "--allow-outside-paths", "--label-map", "{t}/rec/label_map.pbtxt"],
    ["data", "collect", "--out", "{t}/frames", "--camera", "{v}", "--count", "3",
     "--interval", "0"],
    ["data", "report", "{x}", "--out", "{t}/rep", "--project", "{t}/runs", "--name", "r",
     "--no-decode", "--format", "voc", "--images", "{d}/JPEGImages", "--negatives",
     "--allow-outside-paths", "--label-map", "{t}/rec/label_map.pbtxt"],
]  # fmt: skip


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    t = tmp_path_factory.mktemp("real")
    ok = runner.invoke(app, ["data", "synth", "--out", str(t / "voc"), "--n", "10",
                             "--format", "voc", "--size", "96"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    (t / "xml").mkdir()
    for f in (t / "voc" / "Annotations").glob("*.xml"):
        (t / "xml" / f.name).write_bytes(f.read_bytes())
    ok = runner.invoke(app, ["data", "pack", str(t / "voc"), "--out", str(t / "rec")])
    assert ok.exit_code == 0, ok.output
    ok = runner.invoke(app, ["data", "synth", "--out", str(t / "vid"), "--video", "--n", "6",
                             "--size", "96"])  # fmt: skip
    assert ok.exit_code == 0, ok.output
    return t


@pytest.mark.parametrize("args", REAL, ids=lambda a: " ".join(a[:2] + a[3:5]))
def test_data_commands_run_for_real_with_their_options(args, real_sets, tmp_path):
    t = real_sets
    record = next((t / "rec").glob("*.tfrecord"))
    video = t / "vid" / "video.mp4"
    fill = {"d": t / "voc", "x": t / "xml", "r": record, "t": tmp_path, "v": video}
    (tmp_path / "rec").symlink_to(t / "rec")
    r = runner.invoke(app, [a.format(**fill) for a in args])
    assert r.exit_code == 0, (args, r.output, r.exception)


def test_the_real_runs_use_every_data_option():
    used = {(a[1], x) for a in REAL for x in a if x.startswith("--")}
    for name, cmd in commands().items():
        if name.startswith("data ") and name != "data select":  # select: test_select.py
            for p in visible_options(cmd):
                assert (name.split()[1], p.opts[0]) in used, f"{name} {p.opts[0]}"
