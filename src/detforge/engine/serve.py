"""``detforge serve``: one loaded model behind HTTP (FastAPI under uvicorn).

``POST /predict`` takes an image as the request body or one or more multipart files and
answers what ``predict`` writes to ``predictions.jsonl`` for each (boxes, scores, labels and
names; a classifier's top 5) with the image's size and the time taken. Requests that arrive
together are answered from one batch (:class:`MicroBatcher`: up to ``batch`` images, those that
queued while the model ran the batch before, or what arrived within ``wait_ms``); the model
runs on a worker thread, never on the event loop.
``GET /health`` (with the batching counters), ``GET /model`` (task, classes, input size,
default threshold, version, the weights' SHA-256) and a page at ``/`` to try it.

Every bad request is a 4xx with ``{"error": "..."}`` naming the problem: no image or not an
image (400), truncated (400), too many pixels (413), a body over the limit (413), a wrong or
missing API key (401), a bad parameter (422), a request that took longer than ``timeout``
(504).

:func:`serve_on_ray` deploys the same app on Ray Serve: ``replicas`` copies behind Ray's HTTP
proxy, each with its own model (shipped through Ray's object store) and micro-batcher.
"""

import asyncio
import hashlib
import hmac
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from detforge._version import __version__
from detforge.data.image import decode
from detforge.engine.devices import cpu_cores
from detforge.engine.infer.inputs import Frame
from detforge.engine.infer.options import Thresholds
from detforge.engine.loading import load, model_files, unpacked
from detforge.errors import DetforgeError, ImageError, TooManyPixelsError, require

PAGE = Path(__file__).with_name("serve_page.html")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MAX_DET = 10000  # the most boxes a request may ask for


@dataclass
class ServeOptions:
    api_key: str | None = None  # required in X-API-Key (or Authorization: Bearer) when set
    max_body: int = 32 << 20  # bytes a request body may hold
    timeout: float = 30.0  # seconds a request may take, queueing included
    batch: int = 8  # images run together at most
    # How long the first image of a batch waits for company. 0: no wait; a batch is what queued
    # while the model ran the one before (no added latency when requests come one at a time).
    wait_ms: float = 0.0
    stats: dict = field(default_factory=lambda: {"requests": 0, "images": 0, "batches": 0})


class MicroBatcher:
    """Collects images from concurrent requests into batches for one Predictor; each batch
    runs on a single worker thread (the model is not re-entrant)."""

    def __init__(self, det, opts: ServeOptions):
        self.det, self.opts = det, opts
        self.queue: asyncio.Queue | None = None
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="detforge-model")
        self.worker: asyncio.Task | None = None

    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.worker:
            self.worker.cancel()
        self.pool.shutdown(wait=True)

    async def predict(self, frame: Frame, limits: Thresholds):
        fut = asyncio.get_running_loop().create_future()
        await self.queue.put((frame, limits, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = [await self.queue.get()]
            deadline = loop.time() + self.opts.wait_ms / 1000
            while len(items) < self.opts.batch:
                if not self.queue.empty():  # what queued while the model was busy
                    items.append(self.queue.get_nowait())
                    continue
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            items = [it for it in items if not it[2].done()]  # timed-out requests are gone
            for limits, group in _groups(items).items():
                try:
                    results = await loop.run_in_executor(
                        self.pool, lambda g=group, t=limits: self._batch(g, t)
                    )
                except Exception as e:  # noqa: BLE001 - every waiting request gets the error
                    for it in group:
                        if not it[2].done():
                            it[2].set_exception(e)
                    continue
                for it, r in zip(group, results):
                    if not it[2].done():
                        it[2].set_result(r)

    def _batch(self, group, limits: Thresholds):
        self.opts.stats["batches"] += 1
        self.opts.stats["images"] += len(group)
        return self.det.run([it[0] for it in group], limits)


def _groups(items) -> dict:
    """Requests that share their thresholds run as one batch."""
    out: dict = {}
    for it in items:
        out.setdefault(it[1], []).append(it)
    return out


def model_info(det, weights: Path) -> dict:

    digest = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {
        "task": det.task,
        "classes": list(det.classes),
        "imgsz": det.imgsz,
        "conf": det.conf,
        "weights": Path(weights).name,
        "sha256": digest.hexdigest(),
        "detforge": __version__,
    }


def _error(status: int, message: str):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


def _authorized(request, key: str | None) -> bool:
    if not key:
        return True
    given = request.headers.get("x-api-key") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:]
    return hmac.compare_digest(given.encode(), key.encode())


async def _read_body(request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes without reading the rest."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooBig(int(declared))
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooBig(size)
        chunks.append(chunk)
    return b"".join(chunks)


class _TooBig(Exception):
    def __init__(self, size: int):
        self.size = size


async def _images(request, body: bytes) -> list[tuple[str, bytes]]:
    """(name, bytes) of the request's images: multipart files, or the body itself."""
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        from starlette.datastructures import UploadFile
        from starlette.requests import Request

        async def replay():
            yield {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay().__anext__).form()
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        return [(f.filename or f"file{k}", await f.read()) for k, f in enumerate(files)]
    return [("body", body)] if body else []


def _decode(name: str, data: bytes) -> Frame:
    try:
        return Frame(decode(data, name), name)
    except ImageError as e:
        raise _BadImage(e) from None


class _BadImage(Exception):
    def __init__(self, e: ImageError):
        self.e = e
        self.status = 413 if isinstance(e, TooManyPixelsError) else 400


def _params(request) -> Thresholds:
    """The request's ``conf`` and ``max_det`` (at most MAX_DET); NMS at the default IoU."""
    q = request.query_params
    conf, max_det = q.get("conf"), q.get("max_det", str(Thresholds.max_det))
    try:
        limits = Thresholds(None if conf in (None, "") else float(conf), max_det=int(max_det))
        if limits.max_det > MAX_DET:
            raise ValueError
    except (ValueError, DetforgeError):
        raise DetforgeError(f"conf={conf!r}, max_det={max_det!r}: conf is a number in [0, 1], "
                            f"max_det a whole number in [1, {MAX_DET}]") from None  # fmt: skip
    return limits


def build_app(det, weights, opts: ServeOptions | None = None):
    """The FastAPI app serving Predictor ``det`` (loaded from ``weights``)."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse

    opts = opts or ServeOptions()
    info = model_info(det, Path(weights))
    batcher = MicroBatcher(det, opts)

    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="detforge", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher, app.state.opts = batcher, opts

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return PAGE.read_text(encoding="utf-8")

    @app.get("/health")
    async def health():
        return {"status": "ok", "pid": os.getpid(), **opts.stats}

    @app.get("/model")
    async def model(request: Request):
        if not _authorized(request, opts.api_key):
            return _error(401, "missing or wrong API key (send it as X-API-Key)")
        return info

    @app.post("/predict")
    async def predict(request: Request):
        if not _authorized(request, opts.api_key):
            return _error(401, "missing or wrong API key (send it as X-API-Key)")
        t0 = time.perf_counter()
        try:
            limits = _params(request)
            body = await _read_body(request, opts.max_body)
            files = await _images(request, body)
            if not files:
                return _error(400, "no image: send one as the body or as multipart files")
            frames = [_decode(n, d) for n, d in files]
            opts.stats["requests"] += 1
            waits = [batcher.predict(f, limits) for f in frames]
            results = await asyncio.wait_for(asyncio.gather(*waits), opts.timeout)
        except _TooBig as e:
            return _error(413, f"request body of {e.size} bytes is over the {opts.max_body} "
                               "byte limit (--max-body-mb)")  # fmt: skip
        except _BadImage as e:
            return _error(e.status, str(e.e))
        except DetforgeError as e:
            return _error(422, str(e))
        except asyncio.TimeoutError:
            return _error(504, f"no answer within {opts.timeout:g} s (--timeout)")
        ms = round((time.perf_counter() - t0) * 1000, 2)
        out = []
        for (name, _), f, r in zip(files, frames, results):
            d = r.to_dict()
            d["source"] = name
            d["width"], d["height"] = int(f.hw[1]), int(f.hw[0])
            out.append(d)
        return {"results": out, "ms": ms, "conf": det.conf if limits.conf is None else limits.conf}

    return app


def check_bind(host: str, api_key: str | None, insecure: bool) -> str | None:
    """None when binding ``host`` is safe as asked; else what to do (a non-loopback address
    needs an API key or ``--insecure``). With ``insecure``, the warning to print."""
    if host in LOOPBACK:
        return None
    if api_key:
        return None
    if insecure:
        return f"serving on {host} without an API key: anyone who reaches it can use the model"
    raise DetforgeError(
        f"--host {host} opens the model to the network without an API key",
        "pass --api-key KEY (or set DETFORGE_API_KEY), or --insecure to serve without one",
    )


def serve(weights, *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
          precision: str = "f32", insecure: bool = False, say=print,
          **options) -> None:  # fmt: skip
    """Load ``weights`` once and serve it until SIGTERM or Ctrl-C (finishing requests in
    flight, then exiting). ``precision``: an OpenVINO model's (f32, bf16, f16)."""
    import uvicorn

    opts = ServeOptions(**options)
    warning = check_bind(host, opts.api_key, insecure)
    # as many threads as cores, as by default, but named: onnxruntime's then wait without
    # spinning, leaving the cores to the event loop's decoding (1.2-1.7x the images/s at 4
    # and 16 connections on 2 cores; benchmarks/bench_serve.py)
    det = load(weights, device=device, threads=cpu_cores(), precision=precision)
    app = build_app(det, weights, opts)
    if warning:
        say(f"warning: {warning}")
    what = f"{Path(weights).name} ({det.task}, {len(det.classes)} classes, conf {det.conf:g})"
    say(f"serving {what} on http://{host}:{port}/ ; POST /predict, GET /model, GET /health")
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=30)


def _replica_app(files, device: str, precision: str, threads: int, options: dict):
    """On a Ray Serve replica: the model from the object store, loaded once, and its app."""
    import ray

    with unpacked(ray.get(files)) as path:  # removed once loaded and hashed
        det = load(path, device=device, threads=threads, precision=precision)
        return build_app(det, path, ServeOptions(**options))


def _builder(files, device: str, precision: str, threads: int, options: dict):
    """The app builder Ray Serve calls on each replica (a plain function, as it requires;
    the model's files come as a reference into Ray's object store)."""

    def build():
        return _replica_app(files, device, precision, threads, options)

    return build


def serve_on_ray(weights, *, address: str | None = None, replicas: int = 1,
                 host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
                 precision: str = "f32", insecure: bool = False, say=print,
                 **options) -> None:  # fmt: skip
    """Deploy the app of :func:`serve` on Ray Serve (a local Ray, or the cluster at
    ``address``): ``replicas`` copies, each loading the model once from Ray's object store,
    behind Ray's HTTP proxy on ``host:port``; until SIGTERM or Ctrl-C, then Serve shuts down,
    finishing the requests in flight."""
    import logging
    import signal
    import threading

    message = "--ray needs Ray Serve, which is not installed"
    install = "pip install 'detforge[ray]' (or: pip install 'ray[serve]')"
    ray = require("ray", message, install)
    serve = require("ray.serve", message, install)

    check = ServeOptions(**options)
    warning = check_bind(host, check.api_key, insecure)
    det = load(weights, device="cpu", precision=precision)  # checked here, with a clear error
    started = not ray.is_initialized()
    if started:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR,
                 log_to_driver=False)  # fmt: skip
    stop = threading.Event()
    before = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        per = cpus / replicas if cpus < replicas else float(cpus // replicas)
        files = ray.put(model_files(Path(weights)))  # held here while Serve runs
        builder = _builder(files, device, precision, max(1, int(per)), options)
        deployment = serve.deployment(
            serve.ingress(builder)(), name="detforge", num_replicas=replicas,
            ray_actor_options={"num_cpus": per},
            max_ongoing_requests=4 * check.batch,  # room for the replica's batcher to fill
        )  # fmt: skip
        serve.start(http_options={"host": host, "port": port})
        serve.run(deployment.bind(), name="detforge", route_prefix="/",
                  logging_config={"log_level": "WARNING"})  # fmt: skip
        if warning:
            say(f"warning: {warning}")
        what = f"{Path(weights).name} ({det.task}, {len(det.classes)} classes, conf {det.conf:g})"
        say(f"serving {what} on Ray Serve, {replicas} replica(s) of {per:g} CPU, at "
            f"http://{host}:{port}/ ; POST /predict, GET /model, GET /health")  # fmt: skip
        while not stop.wait(0.5):
            pass
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
        for s, handler in before.items():
            signal.signal(s, handler)
