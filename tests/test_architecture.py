"""The architecture holds: the import-linter contracts in pyproject.toml (layers one way, a
torch-free data layer, no cycles between siblings), and files and functions stay small."""

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "detforge"


def test_import_contracts_are_kept():
    exe = shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    r = subprocess.run([exe], cwd=SRC.parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "0 broken" in r.stdout


def test_functions_stay_under_80_lines_and_files_near_500():
    long_functions, long_files = [], []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 520:
            long_files.append(path.name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long_functions.append(f"{path.relative_to(SRC)}:{node.name} ({n})")
    assert not long_functions and not long_files, (long_functions, long_files)
