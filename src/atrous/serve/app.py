"""The HTTP service: a Starlette app around one loaded model.

- ``POST /v1/segment``: an image (raw body or multipart upload; JPEG, PNG or WebP, read by
  the same reader as ``atrous predict``, EXIF orientation applied) → the label map
  (``format=png``), a coloured overlay (``overlay``) or JSON (``json``, with ``masks=png|rle``
  for per-class masks). Options: :mod:`atrous.serve.options`.
- ``GET /v1/model``: the model card. ``GET /healthz``: alive. ``GET /readyz``: the model is
  loaded and a warm-up forward is done. ``GET /metrics``: Prometheus text.
- ``/v1/stream``: a WebSocket for the page's live camera, frames in and one reply each out,
  stale frames dropped rather than queued (:mod:`atrous.serve.stream`).
- ``GET /``: the web page (``static/index.html``, served by the package: no CDN).

Every refusal is a JSON ``{"error": {"status", "code", "message"}}`` with a 4xx status (503
when the queue is full, with ``Retry-After``); an unexpected failure is a 500 whose message
names the exception type, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.resources
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from atrous.imageio import (
    ImageReadError,
    ImageTooLarge,
    image_kind,
    label_dtype,
    read_image_bytes,
)
from atrous.serve.batcher import DynamicBatcher, Job, QueueFull
from atrous.serve.encode import json_body, label_png, label_raw, overlay_jpeg
from atrous.serve.memory import MemoryGuard, rss_bytes
from atrous.serve.metrics import CONTENT_TYPE_LATEST, ServiceMetrics
from atrous.serve.options import OptionError, RequestOptions, ServerSettings, parse_options
from atrous.serve.problems import HTTPProblem, internal_error
from atrous.serve.stream import serve_stream

__all__ = ["ACCEPTED", "HTTPProblem", "SegmentService", "create_app"]

log = logging.getLogger("atrous.serve")

ACCEPTED = {"JPEG": "image/jpeg", "PNG": "image/png", "WebP": "image/webp"}


class SegmentService:
    """The model, its Segmenters (one per inference setting, built on first use), the
    batcher and the metrics: everything the routes share."""

    def __init__(self, model: Any, settings: ServerSettings, crf: Any = None) -> None:
        from atrous.inference.io import model_palette
        from atrous.inference.pipeline import default_scales, prepare_model

        # The network (optimized at the settings' precision) and its learned CRF, if any.
        self.model = prepare_model(model, settings.inference)
        if settings.scales is None:  # the weights' own
            settings = dataclasses.replace(settings, scales=default_scales(self.model.metadata))
        self.settings = settings
        self.crf = crf  # the dense-CRF hook requests with crf=true get
        self.num_classes = int(self.model.config["num_classes"])
        names = self.model.metadata.get("class_names")
        names = names or [f"class_{i}" for i in range(self.num_classes)]
        self.class_names = [str(n) for n in names][: self.num_classes]
        self.palette = model_palette(self.model)
        self.metrics = ServiceMetrics(settings.max_batch)
        self.batcher = DynamicBatcher(
            self._run_batch,
            settings.max_batch,
            settings.max_wait_ms,
            settings.max_queue,
            on_batch=self._observe_batch,
        )
        self._segmenters: dict[tuple, Any] = {}
        self.memory = MemoryGuard(None, on_trim=lambda before, after: self.metrics.trims.inc())
        self.ready = False
        self.warmup_seconds: float | None = None
        self.startup_error: str | None = None

    # --- the model side (runs on the batcher's thread) -------------------------------------
    def segmenter(self, key: tuple[tuple[float, ...], bool, bool]) -> Any:
        """The Segmenter of one inference key (scales, flip, crf), built on first use: the
        dense CRF when asked, else the learned CRF-as-RNN layer if the model has one
        (``"auto"``, as ``atrous predict`` runs it); images above
        :data:`~atrous.constants.AUTO_TILE_PIXELS` are tiled."""
        seg = self._segmenters.get(key)
        if seg is None:
            from atrous.constants import AUTO_TILE_PIXELS
            from atrous.inference import build_segmenter

            scales, flip, crf = key
            settings = self.settings.inference.replace(
                scales=scales,
                flip=flip,
                auto_tile=AUTO_TILE_PIXELS,
                batch_size=self.settings.max_batch * (2 if flip else 1),
            )
            seg = build_segmenter(
                self.model,
                settings,
                crf=self.crf if crf else "auto",
                auto_tile_notice=False,  # the card says it; a warning filter is not thread-safe
            )
            self._segmenters[key] = seg
        return seg

    def _run_batch(self, jobs: Sequence[Job]) -> list[Any]:
        seg = self.segmenter(jobs[0].key[2])
        try:
            return list(seg.predict_many([j.image for j in jobs], "labels", errors="return"))
        finally:
            rss = self.memory.check()
            if rss is not None:
                self.metrics.rss.set(rss)

    def _observe_batch(self, size: int, seconds: float) -> None:
        self.metrics.batch_size.observe(size)
        self.metrics.batch_seconds.observe(seconds)

    def warm_up(self) -> None:
        """One forward at ``warmup_size``, then the memory limit: ``memory_limit_mb``, or 3x
        the RSS now (at least 1 GB)."""
        h, w = self.settings.warmup_size
        self.segmenter(self.settings.defaults().inference_key).predict(
            np.full((h, w, 3), 127, np.uint8)
        )
        limit = self.settings.memory_limit_mb
        if limit is None:
            rss = rss_bytes()
            self.memory.limit = max(2**30, 3 * rss) if rss else 0
        else:
            self.memory.limit = int(limit * 2**20)

    # --- the card ---------------------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        from pathlib import Path

        from atrous import __version__

        config, meta = self.model.config, self.model.metadata
        seg = self._segmenters.get(self.settings.defaults().inference_key)
        s = self.settings
        norm = seg.normalize.config() if seg is not None else {}
        return {
            "arch": config.get("arch"),
            "num_classes": self.num_classes,
            "output_stride": config.get("output_stride"),
            "class_names": self.class_names,
            "palette": [[int(c) for c in row] for row in self.palette[: self.num_classes]],
            "preprocessing": norm,
            "weights": Path(str(meta["weights"])).name if meta.get("weights") else None,
            "source": meta.get("source"),
            "precision": meta.get("precision", "fp32"),
            "inference": {
                "scales": list(s.scales),
                "flip": s.flip,
                "crf": s.crf,
                "crf_allowed": s.crf_allowed,
                "tile_size": s.tile_size,
            },
            "batching": {
                "max_batch": s.max_batch,
                "max_wait_ms": s.max_wait_ms,
                "max_queue": s.max_queue,
            },
            "memory_limit_mb": round(self.memory.limit / 2**20) if self.memory.active else None,
            "limits": {
                "max_upload_mb": s.max_upload_mb,
                "max_pixels": s.max_pixels,
                "formats": sorted(ACCEPTED),
            },
            "ready": self.ready,
            "atrous_version": __version__,
        }

    # --- one request --------------------------------------------------------------------------
    async def read_upload(self, request: Request) -> tuple[bytes, dict[str, str]]:
        """The image bytes and the form fields of a raw or multipart body, within the upload
        limit (413 beyond it, checked on Content-Length and while reading)."""
        limit = self.settings.max_upload_bytes
        mb = f"{self.settings.max_upload_mb:g} MB"
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPProblem(
                413,
                "upload_too_large",
                f"the upload is {int(declared)} bytes, over the limit of {mb} (--max-upload-mb)",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPProblem(
                    413,
                    "upload_too_large",
                    f"the upload is over the limit of {mb} (--max-upload-mb)",
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            return await self._multipart(request, body)
        # Any other type is judged by its bytes (:meth:`decode`): curl --data-binary sends
        # form-urlencoded, and a text file is "not an image" whatever its declared type.
        return body, {}

    async def _multipart(self, request: Request, body: bytes) -> tuple[bytes, dict[str, str]]:
        from starlette.datastructures import UploadFile
        from starlette.formparsers import MultiPartException, MultiPartParser

        async def stream() -> AsyncIterator[bytes]:
            yield body

        try:
            form = await MultiPartParser(
                request.headers, stream(), max_files=1, max_fields=16
            ).parse()
        except MultiPartException as e:
            raise HTTPProblem(400, "bad_multipart", f"malformed multipart body: {e}") from None
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        if not files:
            raise HTTPProblem(
                400,
                "no_file",
                "the multipart body has no file field: send the image as a file "
                "(e.g. curl -F image=@photo.jpg)",
            )
        data = await files[0].read()
        return data, fields

    def decode(self, data: bytes, name: str, notes: list[str] | None = None) -> np.ndarray:
        """The upload as HxWx3 uint8 RGB (the reader of ``atrous predict``), or the 4xx that
        says why not. The reader's warnings (first frame only, dark 16-bit...) go to
        ``notes``."""
        if not data:
            raise HTTPProblem(400, "empty_upload", "the upload is empty (0 bytes)")
        kind = image_kind(data[:16])
        if kind is not None and kind not in ACCEPTED:
            raise HTTPProblem(
                415,
                "unsupported_image_type",
                f"{kind} images are not supported: send JPEG, PNG or WebP",
            )
        if kind is None:
            raise HTTPProblem(
                400,
                "not_an_image",
                "the upload is not an image "
                "(its first bytes are not those of a JPEG, PNG or WebP file)",
            )
        try:
            return read_image_bytes(
                data,
                name,
                max_pixels=self.settings.max_pixels,
                on_warning=None if notes is None else notes.append,
            )
        except ImageTooLarge as e:
            raise HTTPProblem(
                413,
                "too_many_pixels",
                e.problem.replace("max_pixels; CLI: --max-pixels", "the server's --max-pixels"),
            ) from None
        except ImageReadError as e:
            raise HTTPProblem(400, "unreadable_image", e.problem) from None

    async def segment(self, request: Request) -> Response:
        t0 = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            response = await self._segment(request, t0)
        except HTTPProblem as p:
            response = p.response()
        except Exception as e:  # never a traceback to the client
            log.exception("segment failed")
            response = internal_error(e).response()
        finally:
            self.metrics.in_flight.dec()
        self.metrics.requests.labels("/v1/segment", str(response.status_code)).inc()
        if response.status_code == 200:
            self.metrics.latency.observe(time.perf_counter() - t0)
        return response

    async def _segment(self, request: Request, t0: float) -> Response:
        if not self.ready:
            raise HTTPProblem(
                503, "not_ready", "the model is still warming up", {"Retry-After": "1"}
            )
        notes: list[str] = []
        with self.batcher.expect():  # a batch being formed may wait for this one
            data, fields = await self.read_upload(request)
            try:
                options = parse_options({**request.query_params, **fields}, self.settings)
            except OptionError as e:
                raise HTTPProblem(422, "bad_option", str(e)) from None
            t_read = time.perf_counter()
            image = await asyncio.to_thread(self.decode, data, "upload", notes)
            t_decode = time.perf_counter()
        job = Job(image, (image.shape[0], image.shape[1], options.inference_key))
        self.metrics.queue_depth.set(self.batcher.depth)
        try:
            labels = await self.batcher.submit_job(job)
        except QueueFull as e:
            self.metrics.rejected.inc()
            raise HTTPProblem(
                503, "busy", f"the server is busy: {e}; try again shortly", {"Retry-After": "1"}
            ) from None
        finally:
            self.metrics.queue_depth.set(self.batcher.depth)
        seconds = time.perf_counter() - t0
        timing = {
            "read": t_read - t0,
            "decode": t_decode - t_read,
            "queue": job.queued_seconds,
            "model": job.model_seconds,
        }
        return await asyncio.to_thread(
            self.respond, image, labels, options, seconds, timing, job.batch_size, notes
        )

    def payload(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        options: RequestOptions,
        info: dict[str, Any] | None = None,
    ) -> tuple[bytes | dict[str, Any], str]:
        """The result in ``options.format`` and its media type: the label PNG, the raw labels
        or the overlay JPEG as bytes; for ``json`` the body as a dict, ``info`` joined in."""
        if options.format == "png":
            return label_png(labels, self.num_classes), "image/png"
        if options.format == "raw":
            return label_raw(labels, self.num_classes), "application/octet-stream"
        if options.format == "overlay":
            return overlay_jpeg(image, labels, self.palette), "image/jpeg"
        content = json_body(labels, self.class_names, self.palette, options.masks, info)
        return content, "application/json"

    def respond(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        options: RequestOptions,
        seconds: float,
        timing: dict[str, float] | None = None,
        batch_size: int = 1,
        notes: Sequence[str] = (),
    ) -> Response:
        """The response in ``options.format``. Headers: ``X-Inference-Seconds`` (request
        received to labels), ``Server-Timing`` (read, decode, queue, model, encode, in ms:
        browsers' developer tools show it), ``X-Batch-Size`` and, when the reader had
        something to say, ``X-Image-Warnings``."""
        t0 = time.perf_counter()
        info = {
            "options": {"scales": list(options.scales), "flip": options.flip, "crf": options.crf},
            "seconds": round(seconds, 4),
            "warnings": list(notes),
        }
        body, media = self.payload(image, labels, options, info)
        if isinstance(body, dict):
            body = JSONResponse(body).body
        timing = {**(timing or {}), "encode": time.perf_counter() - t0}
        headers = {
            "X-Inference-Seconds": f"{seconds:.4f}",
            "X-Batch-Size": str(batch_size),
            "Server-Timing": ", ".join(f"{k};dur={1000 * v:.1f}" for k, v in timing.items()),
        }
        if options.format == "raw":
            headers["X-Label-Shape"] = f"{labels.shape[0]},{labels.shape[1]}"
            headers["X-Label-Dtype"] = np.dtype(label_dtype(self.num_classes)).name
        if notes:
            headers["X-Image-Warnings"] = _header_text(" | ".join(notes))
        return Response(body, media_type=media, headers=headers)


def _header_text(text: str, limit: int = 1000) -> str:
    """``text`` as a header value: ASCII (others escaped), one line, at most ``limit``."""
    flat = " ".join(text.split()).encode("ascii", "backslashreplace").decode("ascii")
    return flat[:limit]


def _page() -> str:
    return importlib.resources.files("atrous.serve").joinpath("static/index.html").read_text()


def create_app(model: Any, settings: ServerSettings | None = None, crf: Any = None) -> Starlette:
    """The service for a loaded ``model`` (:func:`atrous.weights.load`, an optimized or an
    exported model, or a :class:`~atrous.inference.pipeline.PreparedModel`); ``crf``: the
    dense-CRF hook for requests that ask for it."""
    service = SegmentService(model, settings or ServerSettings(), crf)
    app = Starlette(
        routes=_routes(service),
        lifespan=_lifespan(service),
        exception_handlers={404: _not_found, 405: _not_found},
    )
    app.state.service = service
    return app


def _lifespan(service: SegmentService) -> Callable[[Starlette], Any]:
    """Start the batcher and warm the model up in the background (``/readyz`` says when it is
    done); on shutdown, wait for both."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        service.batcher.start()
        warmup = asyncio.get_running_loop().create_task(_warm(service))
        try:
            yield
        finally:
            await warmup
            await service.batcher.stop()

    return lifespan


async def _warm(service: SegmentService) -> None:
    t0 = time.perf_counter()
    try:
        await service.batcher.run_sync(service.warm_up)
    except Exception as e:
        service.startup_error = f"{type(e).__name__}: {e}"
        log.error("warm-up failed: %s", service.startup_error)
        return
    service.warmup_seconds = time.perf_counter() - t0
    service.ready = True


def _routes(service: SegmentService) -> list[BaseRoute]:
    """The endpoints; each answer is counted in the metrics by endpoint and status."""

    def counted(endpoint: str, response: Response) -> Response:
        service.metrics.requests.labels(endpoint, str(response.status_code)).inc()
        return response

    async def index(request: Request) -> Response:
        return counted("/", HTMLResponse(_page()))

    async def healthz(request: Request) -> Response:
        return counted("/healthz", JSONResponse({"status": "alive"}))

    async def readyz(request: Request) -> Response:
        if service.ready:
            body = {"status": "ready", "warmup_seconds": round(service.warmup_seconds or 0, 3)}
            return counted("/readyz", JSONResponse(body))
        status = "failed: " + service.startup_error if service.startup_error else "warming up"
        return counted("/readyz", JSONResponse({"status": status}, status_code=503))

    async def model_card(request: Request) -> Response:
        return counted("/v1/model", JSONResponse(service.card()))

    async def metrics(request: Request) -> Response:
        service.metrics.queue_depth.set(service.batcher.depth)
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def stream(websocket: WebSocket) -> None:
        await serve_stream(websocket, service)

    return [
        Route("/", index),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/model", model_card),
        Route("/v1/segment", service.segment, methods=["POST"]),
        WebSocketRoute("/v1/stream", stream),
    ]


async def _not_found(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "status_code", 404)
    what = "no such endpoint" if code == 404 else "method not allowed"
    return HTTPProblem(
        code,
        "not_found" if code == 404 else "method_not_allowed",
        f"{request.method} {request.url.path}: {what}",
    ).response()
