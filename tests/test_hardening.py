"""Hardening: errors cross processes, files keep the umask, full disks get one line."""

from __future__ import annotations

import importlib
import inspect
import os
import pickle
import pkgutil
import subprocess
import sys

import pytest

import detforge
from detforge.errors import DetforgeError, DiskFullError
from detforge.fileio import atomic_write_bytes


def _all_error_classes() -> list[type]:
    for m in pkgutil.walk_packages(detforge.__path__, "detforge."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)
    found, todo = [], [DetforgeError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def _args_for(cls) -> tuple[list, dict]:
    values = {"path": "data/x.jpg", "message": "broken", "hint": "fix it", "needed": 2**20}
    args, kwargs = [], {}
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.kind == p.KEYWORD_ONLY:
            kwargs[p.name] = 3 if p.default is None else p.default
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(values.get(p.name, "value"))
    return args, kwargs


def test_every_detforge_error_survives_pickling():
    classes = _all_error_classes()
    assert len(classes) >= 9  # errors.py's own plus the engine's
    for cls in classes:
        args, kwargs = _args_for(cls)
        err = cls(*args, **kwargs)
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is cls
        assert str(back) == str(err) and back.args == err.args
        assert back.__dict__ == err.__dict__, cls


def test_atomic_writes_keep_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        import detforge.fileio as fileio

        fileio._UMASK.clear()
        p = atomic_write_bytes(tmp_path / "a.txt", b"x")
        assert p.stat().st_mode & 0o777 == 0o644
        os.umask(0o002)
        fileio._UMASK.clear()
        assert atomic_write_bytes(tmp_path / "b.txt", b"x").stat().st_mode & 0o777 == 0o664
    finally:
        os.umask(old)
        fileio._UMASK.clear()


def test_file_size_limit_is_one_clear_error_and_no_temp_left(tmp_path):
    code = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from detforge.fileio import atomic_write_bytes
from detforge.errors import DiskFullError
try:
    atomic_write_bytes({str(tmp_path / "big.bin")!r}, b"x" * 5000)
except DiskFullError as e:
    print(e.message)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "big.bin: file-size limit reached while writing; about 0.0 MiB needed" in r.stdout
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temp file


def test_disk_full_message_names_file_and_space(tmp_path):
    e = DiskFullError(tmp_path / "out.pt", 3 * 2**20)
    assert str(tmp_path / "out.pt") in e.message and "about 3.0 MiB needed" in e.message
    assert "MiB free" in e.message and e.hint


def test_cli_errors_are_one_line_and_a_hint(tmp_path):
    bad = tmp_path / "x.record"
    bad.write_bytes(b"\x00" * 3)
    r = subprocess.run(
        [sys.executable, "-m", "detforge", "data", "stats", str(bad)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert str(bad) in r.stderr and len(r.stderr.strip().splitlines()) <= 2


def test_unexpected_exceptions_are_one_line_without_verbose(tmp_path, monkeypatch, capsys):
    cli_app = importlib.import_module("detforge.cli.app")

    def boom(*a, **k):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(detforge, "stats", boom)
    monkeypatch.setattr(sys, "argv", ["detforge", "data", "stats", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        cli_app.main()
    assert e.value.code == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0] == "error: unexpected RuntimeError: boom" and "--verbose" in lines[1]
