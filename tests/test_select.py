"""The labeling loop: `data select` ranks unlabeled images by the model's doubt and spreads
its picks over different scenes; deterministic by seed, never the same image twice."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from detforge.engine.select import borderline, flip_disagreement, pick


def _r(boxes, scores, labels, w=100):
    return SimpleNamespace(boxes=np.array(boxes, np.float32).reshape(-1, 4),
                           scores=np.array(scores, np.float32), labels=np.array(labels),
                           shape=(50, w))  # fmt: skip


def test_flip_disagreement_on_hand_made_boxes():
    a = _r([[10, 10, 30, 30], [60, 10, 90, 40]], [0.9, 0.8], [0, 1])
    mirrored = _r([[70, 10, 90, 30], [10, 10, 40, 40]], [0.9, 0.7], [0, 1])  # the same, flipped
    assert flip_disagreement(a, mirrored, 0.5) == 0.0
    wrong_class = _r([[70, 10, 90, 30], [10, 10, 40, 40]], [0.9, 0.7], [0, 0])
    assert flip_disagreement(a, wrong_class, 0.5) == pytest.approx(0.5)  # F1 1/2
    below = _r([[70, 10, 90, 30], [10, 10, 40, 40]], [0.9, 0.3], [0, 1])  # one under threshold
    assert flip_disagreement(a, below, 0.5) == pytest.approx(1 - 2 / 3)
    assert flip_disagreement(_r([], [], []), _r([], [], []), 0.5) == 0.0
    assert flip_disagreement(a, _r([], [], []), 0.5) == 1.0


def test_borderline_counts_scores_near_the_threshold():
    assert borderline([0.9, 0.05], 0.4) == 0.0
    assert borderline([0.4], 0.4) == pytest.approx(0.5)  # b = 1
    assert borderline([0.5, 0.3], 0.4) == pytest.approx(0.5)  # 0.5 + 0.5


def test_pick_prefers_doubt_spread_over_scenes_and_is_deterministic():
    rng = np.random.default_rng(0)
    base = rng.normal(size=192)
    scored = []
    for _ in range(10):  # one scene, ten frames, the most uncertain
        v = base + rng.normal(scale=0.01, size=192)
        scored.append({"uncertainty": 1.5, "vector": v / np.linalg.norm(v)})
    for _ in range(6):  # six other scenes, a little less uncertain
        v = rng.normal(size=192)
        scored.append({"uncertainty": 1.0, "vector": v / np.linalg.norm(v)})
    chosen = pick(scored, 4, seed=3)
    assert len(chosen) == len(set(chosen)) == 4
    assert sum(i < 10 for i in chosen) == 1  # one frame of the repeated scene, then others
    assert pick(scored, 4, seed=3) == chosen
    assert len(set(pick(scored, 16, seed=1))) == 16  # all of them, each once
    assert pick(scored, 0) == [] and pick([], 3) == []


@pytest.mark.slow
def test_data_select_writes_a_batch_with_preannotations(tmp_path):
    from detforge.cli import app
    from detforge.data.synth import render

    from conftest import jittered_checkpoint

    weights = jittered_checkpoint(tmp_path / "m.pt")
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(12):
        render(np.random.default_rng(i), 160, 120, 3)[0].save(pool / f"u{i:02d}.jpg")
    (pool / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    before = sorted(p.name for p in pool.iterdir())
    args = ["data", "select", str(weights), "--source", str(pool), "--n", "5", "--seed", "2",
            "--save-labelme", "--save-cvat", "--save-labelstudio"]  # fmt: skip
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b1")])
    assert r.exit_code == 0, r.output
    assert "5 of 12 images picked" in r.output and "broken.jpg" in r.output
    sel = json.loads((tmp_path / "b1" / "selection.json").read_text())
    assert [p["rank"] for p in sel["picks"]] == [1, 2, 3, 4, 5]
    assert len({p["source"] for p in sel["picks"]}) == 5
    ranks = [p["uncertainty"] for p in sel["picks"]]
    assert max(ranks) == ranks[0] or sel["picks"][0]["uncertainty"] >= np.median(ranks)
    images = sorted((tmp_path / "b1" / "images").glob("*.jpg"))
    assert len(images) == 5 and all(p.with_suffix(".json").is_file() for p in images)
    for f in ("cvat_annotations.xml", "labelstudio_tasks.json"):
        assert (tmp_path / "b1" / f).is_file()
    tasks = json.loads((tmp_path / "b1" / "labelstudio_tasks.json").read_text())
    assert {t["data"]["image"] for t in tasks} == {
        f"/data/local-files/?d={p.name}" for p in images}  # fmt: skip
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "b2")])
    assert again.exit_code == 0, again.output
    sel2 = json.loads((tmp_path / "b2" / "selection.json").read_text())
    assert [p["source"] for p in sel2["picks"]] == [p["source"] for p in sel["picks"]]
    assert sorted(p.name for p in pool.iterdir()) == before  # the pool is untouched
    inside = CliRunner().invoke(app, [*args, "--out", str(pool / "batch")])
    assert inside.exit_code != 0 and "inside the source" in str(inside.exception)
