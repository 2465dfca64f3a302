"""The live camera's transport: ``/v1/stream``, a WebSocket over which a client sends frames and
gets one reply per frame, through the same decoder, options, limits, batcher and error JSON as
``POST /v1/segment``.

The protocol:

- Connect to ``/v1/stream?format=...&scales=...&flip=...&crf=...``: the options of
  ``POST /v1/segment`` (:func:`~atrous.serve.options.parse_options`), fixed for the
  connection. A bad option, or a server still warming up, gets one error message
  (``"frame": null``) and the connection is closed (1008, or 1013: try again later).
- Each binary message is one frame: a JPEG, PNG or WebP image, within ``--max-upload-mb``
  and ``--max-pixels``. Frames are numbered from 0 in the order they arrive.
- Each frame gets exactly one text message (JSON) back, in the order they are settled:
  ``{"frame": n, "status": "ok", "format", "width", "height", "seconds", "timing",
  "batch_size", "warnings", ...}``, followed by one binary message of ``"bytes"`` bytes (the
  label PNG, the raw labels with their ``"dtype"``, or the overlay JPEG) or, for
  ``format=json``, with the JSON body in ``"result"``; ``{"frame": n, "status": "dropped"}``;
  or ``{"frame": n, "status": "error", "error": {"status", "code", "message"}}``, the error
  POST answers the same image with. A text message from the client gets an error with
  ``"frame": null``; the connection stays open.
- **Stale frames are dropped, not queued.** A client has at most one frame at the model and
  one waiting (and one being encoded and sent, which overlaps the next model call). A frame
  that arrives while another waits replaces it, and the one replaced (not yet decoded, or
  still in the batcher's queue) is answered ``dropped``: under a camera faster than the model
  a frame waits at most about one frame interval, never in a growing queue, and the newest
  frame is always the next one the model sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from atrous.imageio import label_dtype
from atrous.serve.batcher import DynamicBatcher, Job, QueueFull, Withdrawn
from atrous.serve.metrics import ServiceMetrics
from atrous.serve.options import OptionError, RequestOptions, ServerSettings, parse_options
from atrous.serve.problems import HTTPProblem, internal_error

__all__ = ["CLOSE_BAD_OPTION", "CLOSE_NOT_READY", "FrameStream", "StreamBackend", "serve_stream"]

log = logging.getLogger("atrous.serve")

CLOSE_BAD_OPTION = 1008  # policy violation: the connection's options are refused
CLOSE_NOT_READY = 1013  # try again later: the model is still warming up


class StreamBackend(Protocol):
    """What the stream needs of :class:`~atrous.serve.app.SegmentService`."""

    settings: ServerSettings
    metrics: ServiceMetrics
    batcher: DynamicBatcher
    ready: bool
    num_classes: int

    def decode(self, data: bytes, name: str, notes: list[str] | None = None) -> np.ndarray: ...

    def payload(
        self,
        image: np.ndarray,
        labels: np.ndarray,
        options: RequestOptions,
        info: dict[str, Any] | None = None,
    ) -> tuple[bytes | dict[str, Any], str]: ...


@dataclass
class Frame:
    """One received frame: its number, its bytes and when it arrived."""

    index: int
    data: bytes
    arrived: float


@dataclass
class Segmented:
    """A frame through the model: its image, labels, batcher job, reader notes and times."""

    image: np.ndarray
    labels: np.ndarray
    job: Job
    notes: list[str]
    started: float  # when the worker took the frame
    decoded: float
    labelled: float


class FrameStream:
    """One client's stream: a receiving loop that keeps only the newest waiting frame, and a
    worker that takes one frame at a time through the model; each result is encoded and sent
    while the next frame goes to the model."""

    def __init__(
        self, websocket: WebSocket, service: StreamBackend, options: RequestOptions
    ) -> None:
        self.ws, self.service, self.options = websocket, service, options
        self.waiting: Frame | None = None  # received, not yet taken by the worker
        self.job: Job | None = None  # the worker's frame at the batcher (queued or running)
        self.received = 0
        self.settled = 0  # frames whose reply was sent
        self._wake = asyncio.Event()
        self._send_lock = asyncio.Lock()

    async def run(self) -> None:
        """Serve the client until it disconnects; frames left unanswered count as dropped."""
        worker = asyncio.get_running_loop().create_task(self._work())
        try:
            await self._receive()
        finally:
            worker.cancel()
            # the worker ends cancelled, or earlier on a reply to a client already gone
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await worker
            if self.received > self.settled:
                self.service.metrics.frames_dropped.inc(self.received - self.settled)

    # --- receiving ------------------------------------------------------------------------
    async def _receive(self) -> None:
        metrics = self.service.metrics
        while True:
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                problem = HTTPProblem(
                    400,
                    "not_a_frame",
                    "send each frame as a binary message (a JPEG, PNG or WebP image); "
                    "text messages are not read",
                )
                await self._send({"frame": None, "status": "error", **problem.body()})
                continue
            frame = Frame(self.received, data, time.perf_counter())
            self.received += 1
            metrics.frames_received.inc()
            stale, self.waiting = self.waiting, frame
            if stale is not None:
                await self._dropped(stale.index)
            elif self.job is not None:
                self.service.batcher.withdraw(self.job)  # the worker answers it as dropped
            self._wake.set()

    # --- answering ------------------------------------------------------------------------
    async def _work(self) -> None:
        replies: set[asyncio.Task] = set()
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                frame, self.waiting = self.waiting, None
                if frame is None:
                    continue
                try:
                    done = await self._segment(frame)
                except Withdrawn:
                    await self._dropped(frame.index)
                    continue
                except HTTPProblem as p:
                    await self._fail(frame, p)
                    continue
                except Exception as e:  # never a traceback to the client
                    log.exception("stream frame failed")
                    await self._fail(frame, internal_error(e))
                    continue
                # the reply is encoded and sent while the next frame goes to the model
                task = asyncio.get_running_loop().create_task(self._reply(frame, done))
                replies.add(task)
                task.add_done_callback(replies.discard)
        finally:
            for task in replies:
                task.cancel()

    async def _segment(self, frame: Frame) -> Segmented:
        """Decode one frame and run the model on it; raises :class:`HTTPProblem` as POST
        would, or :class:`Withdrawn` when a newer frame replaced it in the queue."""
        service = self.service
        limit = service.settings.max_upload_bytes
        if len(frame.data) > limit:
            raise HTTPProblem(
                413,
                "upload_too_large",
                f"the upload is {len(frame.data)} bytes, over the limit of "
                f"{service.settings.max_upload_mb:g} MB (--max-upload-mb)",
            )
        notes: list[str] = []
        started = time.perf_counter()
        with service.batcher.expect():  # a batch being formed may wait for this frame
            image = await asyncio.to_thread(service.decode, frame.data, "frame", notes)
        decoded = time.perf_counter()
        job = Job(image, (image.shape[0], image.shape[1], self.options.inference_key))
        self.job = job
        try:
            labels = await service.batcher.submit_job(job)
        except QueueFull as e:
            service.metrics.rejected.inc()
            raise HTTPProblem(503, "busy", f"the server is busy: {e}; try again shortly") from None
        finally:
            self.job = None
        return Segmented(image, labels, job, notes, started, decoded, time.perf_counter())

    async def _reply(self, frame: Frame, done: Segmented) -> None:
        """Encode a segmented frame in the options' format and send it."""
        service, options = self.service, self.options
        try:
            body, media = await asyncio.to_thread(
                service.payload, done.image, done.labels, options, None
            )
        except Exception as e:
            log.exception("stream frame failed")
            await self._fail(frame, internal_error(e))
            return
        timing = {
            "wait": done.started - frame.arrived,
            "decode": done.decoded - done.started,
            "queue": done.job.queued_seconds,
            "model": done.job.model_seconds,
            "encode": time.perf_counter() - done.labelled,
        }
        seconds = time.perf_counter() - frame.arrived
        header: dict[str, Any] = {
            "frame": frame.index,
            "status": "ok",
            "format": options.format,
            "width": int(done.labels.shape[1]),
            "height": int(done.labels.shape[0]),
            "seconds": round(seconds, 4),
            "timing": {k: round(v, 4) for k, v in timing.items()},
            "batch_size": done.job.batch_size,
            "warnings": done.notes,
        }
        if isinstance(body, dict):
            header["result"], body = body, None
        else:
            header.update(media=media, bytes=len(body))
            if options.format == "raw":
                header["dtype"] = np.dtype(label_dtype(service.num_classes)).name
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):  # the client is gone
            await self._send(header, body)
            service.metrics.frames_answered.inc()
            service.metrics.frame_latency.observe(seconds)

    async def _fail(self, frame: Frame, problem: HTTPProblem) -> None:
        await self._send({"frame": frame.index, "status": "error", **problem.body()})
        self.service.metrics.frames_failed.inc()

    # --- sending ----------------------------------------------------------------------------
    async def _dropped(self, index: int) -> None:
        await self._send({"frame": index, "status": "dropped"})
        self.service.metrics.frames_dropped.inc()

    async def _send(self, header: dict[str, Any], body: bytes | None = None) -> None:
        """One reply: the JSON header and, when there is one, the binary body right after it
        (the lock keeps another reply from coming between them)."""
        async with self._send_lock:
            await self.ws.send_json(header)
            if body is not None:
                await self.ws.send_bytes(body)
            if header["frame"] is not None:
                self.settled += 1


async def serve_stream(websocket: WebSocket, service: StreamBackend) -> None:
    """The ``/v1/stream`` endpoint: check readiness and options, then a :class:`FrameStream`
    until the client goes away."""
    await websocket.accept()
    metrics = service.metrics
    metrics.stream_clients.inc()
    try:
        if not service.ready:
            problem = HTTPProblem(503, "not_ready", "the model is still warming up")
            await websocket.send_json({"frame": None, "status": "error", **problem.body()})
            await websocket.close(CLOSE_NOT_READY)
            return
        try:
            options = parse_options(dict(websocket.query_params), service.settings)
        except OptionError as e:
            problem = HTTPProblem(422, "bad_option", str(e))
            await websocket.send_json({"frame": None, "status": "error", **problem.body()})
            await websocket.close(CLOSE_BAD_OPTION)
            return
        await FrameStream(websocket, service, options).run()
    except (WebSocketDisconnect, RuntimeError):  # the client went away while a reply was sent
        pass
    finally:
        metrics.stream_clients.dec()
