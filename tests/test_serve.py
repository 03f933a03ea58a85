"""`detforge serve` tested as its clients use it: a real server process on loopback, real HTTP
clients (httpx, threads, headless Chromium), bad requests, micro-batching, SIGTERM."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import detforge
from detforge.data.synth import render

from conftest import jittered_checkpoint

httpx = pytest.importorskip("httpx", reason="the serve extra is not installed")
pytest.importorskip("fastapi", reason="the serve extra is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_serve_lines() -> list[str]:
    """The commands of the README's "Serving over HTTP" block, comments dropped."""
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- serve:start -->\n```bash\n(.*?)```", text, re.S).group(1)
    return [ln.split("  #")[0].strip() for ln in block.splitlines() if ln.strip()]


@contextmanager
def server(weights: Path, *args: str, env=None, start_s: float = 30, cwd=None):
    """``detforge serve`` in its own process; yields (base URL, process)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "detforge", "serve", str(weights), "--port", str(port), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})}, cwd=cwd,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None:
                    raise AssertionError(proc.stdout.read()) from None
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return jittered_checkpoint(tmp_path_factory.mktemp("serve") / "m.pt")


@pytest.fixture(scope="module")
def images():
    return [np.asarray(render(np.random.default_rng(k), 200, 150, 4)[0]) for k in range(3)]


@pytest.mark.slow
def test_serve_answers_as_predict_does(weights, images):
    det = detforge.load(weights)
    with server(weights) as (url, _):
        info = httpx.get(url + "/model").json()
        assert info["task"] == "detect" and info["classes"] == det.classes
        assert info["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        assert info["conf"] == det.conf and info["imgsz"] == det.imgsz
        r = httpx.post(url + "/predict?conf=0.05", content=_png(images[0]),
                       headers={"Content-Type": "image/png"})  # fmt: skip
        assert r.status_code == 200, r.text
        (got,) = r.json()["results"]
        want = det.predict(images[0], conf=0.05)[0].to_dict()
        assert len(want["boxes"]) > 0 and (got["width"], got["height"]) == (200, 150)
        assert got["names"] == want["names"] and got["labels"] == want["labels"]
        np.testing.assert_allclose(got["boxes"], want["boxes"], atol=0.02)
        files = [("files", (f"{k}.png", _png(im), "image/png")) for k, im in enumerate(images)]
        r = httpx.post(url + "/predict", files=files)
        assert r.status_code == 200 and [x["source"] for x in r.json()["results"]] == [
            "0.png", "1.png", "2.png"]  # fmt: skip
        assert r.json()["conf"] == det.conf  # the model's own threshold by default


def _huge_png() -> bytes:
    """A blank 10000 x 9000 PNG: 90 megapixels (over the default limit) in about 90 KB."""
    buf = io.BytesIO()
    Image.new("1", (10_000, 9_000)).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_every_bad_request_gets_a_4xx_and_the_server_keeps_serving(weights, images):
    import psutil

    jpeg = io.BytesIO()
    Image.fromarray(images[0]).save(jpeg, "JPEG")
    cases = [
        ("body", b"", 400, "no image"),
        ("body", b"hello, not an image", 400, "not an image"),
        ("body", jpeg.getvalue()[:600], 400, "truncated"),
        ("body", _huge_png(), 413, "megapixels"),
        ("body", b"\0" * (2 << 20), 413, "over the"),
        ("conf", _png(images[0]), 422, "conf"),
        ("key", _png(images[0]), 401, "API key"),
    ]
    with server(weights, "--max-body-mb", "1", "--api-key", "s3cret") as (url, proc):
        ok = {"X-API-Key": "s3cret"}
        rss = psutil.Process(proc.pid).memory_info().rss
        for _ in range(5):
            for kind, body, status, words in cases:
                params = {"conf": "2"} if kind == "conf" else {}
                headers = {} if kind == "key" else ok
                r = httpx.post(url + "/predict", content=body, params=params, headers=headers)
                assert r.status_code == status, (kind, words, r.text)
                assert words in r.json()["error"], r.json()
        grown = psutil.Process(proc.pid).memory_info().rss - rss
        assert grown < 64 << 20  # 35 bad requests leave no memory behind
        assert httpx.post(url + "/predict", content=_png(images[1]), headers=ok).status_code == 200
        assert httpx.get(url + "/model").status_code == 401
        assert httpx.get(url + "/model", headers={"Authorization": "Bearer s3cret"}).is_success


@pytest.mark.slow
@pytest.mark.alone  # a request in flight 100 ms after it is sent
def test_concurrent_requests_share_batches_and_sigterm_finishes_them(weights, images):
    body = _png(images[2])
    with server(weights, "--wait-ms", "300", "--batch", "8") as (url, proc):
        answers: list = []

        def ask():
            answers.append(httpx.post(url + "/predict", content=body, timeout=60).status_code)

        threads = [threading.Thread(target=ask) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = httpx.get(url + "/health").json()
        assert answers == [200] * 12
        assert stats["images"] == 12 and stats["batches"] < 12  # requests were batched
        late = threading.Thread(target=ask)  # in flight (waiting 300 ms for company) ...
        late.start()
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # ... when the server is told to stop
        late.join()
        assert answers[-1] == 200 and proc.wait(30) == 0


def test_the_batcher_adds_no_wait_alone_and_batches_what_queues_while_the_model_runs():
    """The default (``wait_ms`` 0): a lone request runs alone, at once; requests that arrive
    while the model is busy form the next batch, up to ``batch`` (with no wait and no
    draining, every batch would hold one image)."""
    import asyncio

    from detforge import Thresholds
    from detforge.engine.serve import MicroBatcher, ServeOptions

    class SlowModel:  # 50 ms a batch, whatever its size; records the batches' sizes
        sizes: list = []

        def run(self, frames, limits):
            self.sizes.append(len(frames))
            time.sleep(0.05)
            return [f"r{f}" for f in frames]

    async def scenario():
        batcher = MicroBatcher(SlowModel(), ServeOptions(batch=4, wait_ms=0.0))
        batcher.start()
        assert await batcher.predict(0, Thresholds()) == "r0"
        first = asyncio.ensure_future(batcher.predict(1, Thresholds()))
        await asyncio.sleep(0.01)  # the model is now busy with 1 ...
        rest = [batcher.predict(i, Thresholds()) for i in range(2, 8)]  # ... while 6 arrive
        got = await asyncio.gather(first, *rest)
        await batcher.stop()
        return got

    assert asyncio.run(scenario()) == [f"r{i}" for i in range(1, 8)]
    assert SlowModel.sizes == [1, 1, 4, 2]  # alone; alone while busy; then what queued, by 4


@pytest.mark.slow
@pytest.mark.alone  # a local Ray takes every core
def test_ray_serve_replicas_answer_as_predict_does(weights, images):
    """`serve --ray --replicas 2` on the local Ray it starts: both replicas answer, with
    `predict`'s boxes; SIGTERM shuts Serve and Ray down and exits 0."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (detforge[ray])")
    (line,) = [ln for ln in readme_serve_lines() if "--ray" in ln]  # the README's, as written
    args = shlex.split(line)
    assert args[:2] == ["detforge", "serve"]
    det = detforge.load(weights)
    want = det.predict(images[1], conf=0.05)[0].to_dict()
    with server(weights, *args[3:], start_s=180) as (url, proc):
        assert httpx.get(url + "/model").json()["sha256"] == hashlib.sha256(
            weights.read_bytes()).hexdigest()  # fmt: skip
        pids = set()
        with httpx.Client(timeout=60) as c:
            for _ in range(40):
                r = c.post(url + "/predict?conf=0.05", content=_png(images[1]))
                assert r.status_code == 200, r.text
                got = r.json()["results"][0]
                assert got["names"] == want["names"]
                np.testing.assert_allclose(got["boxes"], want["boxes"], atol=0.02)
                pids.add(c.get(url + "/health").json()["pid"])
                if len(pids) == 2:
                    break
        assert len(pids) == 2, "one replica answered every request"
        assert httpx.post(url + "/predict", content=b"not an image").status_code == 400
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stdout.read()


@pytest.mark.slow
def test_the_readme_serve_commands_run_as_written(weights, images, tmp_path):
    """Each `detforge serve` line of the README (but Ray's, in the test above) started in a
    folder laid out as it says, on a free port; each curl line answered by the one before."""
    pytest.importorskip("onnxruntime")
    if not shutil.which("curl"):
        pytest.skip("curl is not installed")
    best = tmp_path / "runs" / "train" / "exp" / "weights" / "best.pt"
    best.parent.mkdir(parents=True)
    shutil.copy(weights, best)
    detforge.export(best, tmp_path / "best.onnx", check=False)
    for name, im in zip(("photo.jpg", "a.jpg", "b.jpg"), images):
        Image.fromarray(im).save(tmp_path / name)
    env = {"KEY": "s3cret-key"}
    lines = [ln for ln in readme_serve_lines() if not ln.startswith("pip ") and "--ray" not in ln]
    assert sum(ln.startswith("detforge serve") for ln in lines) == 2 and len(lines) == 5
    answered, running = 0, None
    try:
        for line in lines:
            if line.startswith("detforge serve"):
                if running:
                    running.__exit__(None, None, None)
                args = shlex.split(line.replace('"$KEY"', env["KEY"]))
                running = server(Path(args[2]), *args[3:], cwd=tmp_path)
                url, _ = running.__enter__()
                continue
            cmd = line.replace("http://127.0.0.1:8000", url)
            r = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, env={**os.environ, **env},
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            assert r.returncode == 0, line + r.stderr
            want = 2 if "-F" in line else 1  # several files in one request, or one
            assert len(json.loads(r.stdout)["results"]) == want, line
            answered += 1
        assert answered == 3
        no_key = httpx.post(url + "/predict", content=(tmp_path / "photo.jpg").read_bytes())
        assert no_key.status_code == 401  # the keyed server refuses a client without it
    finally:
        if running:
            running.__exit__(None, None, None)


def test_binding_beyond_loopback_needs_a_key():
    from detforge.engine.serve import check_bind
    from detforge.errors import DetforgeError

    assert check_bind("127.0.0.1", None, False) is None
    assert check_bind("0.0.0.0", "key", False) is None
    with pytest.raises(DetforgeError, match="--api-key"):
        check_bind("0.0.0.0", None, False)
    assert "without an API key" in check_bind("0.0.0.0", None, True)


@pytest.mark.slow
def test_the_page_shows_boxes_and_a_table_in_a_browser(weights, images, tmp_path):
    from browser import opened

    Image.fromarray(images[0]).save(tmp_path / "try.png")
    with server(weights) as (url, _), opened(url + "/", "serve-page") as (page, problems):
        page.wait_for_function("document.getElementById('model').textContent.includes('classes')")
        page.fill("#conf", "0.05")
        page.set_input_files("#file", str(tmp_path / "try.png"))
        page.click("button[type=submit]")
        page.wait_for_function("document.querySelectorAll('#results tbody tr').length > 0")
        rows = page.locator("#results tbody tr").count()
        assert page.evaluate("document.getElementById('view').width") == 200
        assert "boxes at conf 0.05" in page.text_content("#timing")
        assert rows == len(detforge.load(weights).predict(images[0], conf=0.05)[0])
        assert problems == []
