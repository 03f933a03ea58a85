"""Every case of the bad-input corpus (tests/badinputs.py) through the real CLI: its exit code,
one line naming the file, no traceback, the source bytes unchanged, no partial output left."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from badinputs import CASES, markdown

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


def _snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] * c.slow) for c in CASES]
)
def test_bad_input_gets_its_documented_answer(case, tmp_path):
    case.build(tmp_path)
    before = _snapshot(tmp_path / "src")
    env = {**os.environ, "DETFORGE_CACHE": str(tmp_path / ".cache"), "COLUMNS": "200"}
    r = subprocess.run(
        [sys.executable, "-m", "detforge", *case.args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    said = r.stdout + r.stderr
    assert r.returncode == case.code, said
    for pattern in (case.says,) if isinstance(case.says, str) else case.says:
        assert re.search(pattern, said), said
    assert "Traceback" not in said
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1, said
    assert _snapshot(tmp_path / "src") == before, "source files changed"
    for p in case.gone:
        assert not (tmp_path / p).exists(), f"{p} left behind"
    leftovers = [p for p in tmp_path.rglob("*.tmp") if ".cache" not in p.parts]
    assert not leftovers, leftovers


def test_corpus_table_in_docs_is_current():
    assert DOCS.read_text().split("<!-- corpus -->\n", 1)[1] == markdown()
