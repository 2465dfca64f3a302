"""Dynamic batching: concurrent requests whose images have the same size and the same
inference settings run as one model batch, up to ``max_batch`` images, the first of them
waiting at most ``max_wait_ms`` for company. It waits only while company can come: requests
announced by :meth:`DynamicBatcher.incoming` (being received or decoded) that have not been
submitted yet; alone, a request runs at once, so batching costs a lone client no latency.
The model runs on one worker thread, off the event loop, so health checks and uploads are
answered while it works; the queue is bounded, and a full queue refuses at once (the app
answers 503 with ``Retry-After``).

A batch is run with ``errors="return"`` (:meth:`atrous.inference.Segmenter.predict_many`):
an image that fails yields its own exception, and its batch-mates get their results. A job
still waiting can be taken back (:meth:`DynamicBatcher.withdraw`): the camera stream replaces a
stale frame by the newest one this way.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DynamicBatcher", "Job", "QueueFull", "Withdrawn"]


class QueueFull(RuntimeError):
    """The batcher's queue holds ``max_queue`` requests already."""


class Withdrawn(RuntimeError):
    """The job was taken back from the queue before the model saw it
    (:meth:`DynamicBatcher.withdraw`)."""


@dataclass
class Job:
    """One image waiting for the model. ``key``: jobs with equal keys may share a batch."""

    image: Any
    key: Hashable
    payload: Any = None
    future: asyncio.Future = field(default=None)  # type: ignore[assignment]
    enqueued: float = field(default_factory=time.perf_counter)
    started: float | None = None  # when its batch went to the model
    finished: float | None = None  # when the model returned
    batch_size: int = 0  # the size of the batch it ran in

    @property
    def queued_seconds(self) -> float:
        return (self.started or self.enqueued) - self.enqueued

    @property
    def model_seconds(self) -> float:
        return (self.finished or 0.0) - (self.started or 0.0) if self.finished else 0.0


RunBatch = Callable[[Sequence[Job]], Sequence[Any]]


class DynamicBatcher:
    """Collects :class:`Job` s and runs ``run_batch(jobs) -> results`` (one result or
    exception per job, in order) on a single worker thread.

    Args:
        run_batch: the model call; results that are exceptions fail their own job only.
        max_batch: at most this many jobs per call.
        max_wait_ms: how long the first job of a batch waits for compatible ones.
        max_queue: jobs waiting (not yet running) beyond which :meth:`submit` raises
            :class:`QueueFull`.
        on_batch: called with (batch size, seconds) after each call (metrics).
    """

    def __init__(
        self,
        run_batch: RunBatch,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run_batch = run_batch
        self.max_batch = int(max_batch)
        self.max_wait = float(max_wait_ms) / 1000.0
        self.max_queue = int(max_queue)
        self.on_batch = on_batch
        self._waiting: collections.deque[Job] = collections.deque()
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="atrous-model")
        self.batches = 0
        self.running = 0
        self._incoming = 0

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Start the collecting task on the running event loop."""
        self._arrived = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="atrous-batcher")

    async def stop(self) -> None:
        """Finish the jobs already queued, then stop."""
        while self._waiting or self.running:
            await asyncio.sleep(0.005)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(*args)`` on the model thread (e.g. a warm-up forward)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- requests --------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        """Jobs waiting for the model (not counting the batch that runs)."""
        return len(self._waiting)

    @property
    def incoming(self) -> int:
        """Requests announced (:meth:`expect`) and not yet submitted."""
        return self._incoming

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Announce a request for the time it is received and decoded: a batch waits for
        company only while some are announced. Leave the block before :meth:`submit`."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1
            if self._arrived is not None:
                self._arrived.set()  # a waiting batch re-checks whether company can come

    async def submit(self, image: Any, key: Hashable, payload: Any = None) -> Any:
        """Queue one image and wait for its result (raises its exception)."""
        return await self.submit_job(Job(image, key, payload))

    async def submit_job(self, job: Job) -> Any:
        """:meth:`submit` of a :class:`Job`, whose timing fields are filled in."""
        if self._task is None or self._arrived is None:
            raise RuntimeError("the batcher is not started")
        if len(self._waiting) >= self.max_queue:
            raise QueueFull(f"{len(self._waiting)} requests are waiting (--max-queue)")
        job.future = asyncio.get_running_loop().create_future()
        job.enqueued = time.perf_counter()
        self._waiting.append(job)
        self._arrived.set()
        return await job.future

    def withdraw(self, job: Job) -> bool:
        """Take ``job`` back if it is still waiting: its submitter gets :class:`Withdrawn`,
        and True is returned. False once the job is in a batch (being formed or running) or
        done: it is then answered as usual."""
        if job.future is None or job.future.done() or not any(j is job for j in self._waiting):
            return False
        self._waiting = collections.deque(j for j in self._waiting if j is not job)
        job.future.set_exception(Withdrawn("replaced by a newer job before the model saw it"))
        return True

    # --- the collecting loop ---------------------------------------------------------------
    def _take(self, key: Hashable, room: int) -> list[Job]:
        """Up to ``room`` waiting jobs with ``key``, oldest first, removed from the queue."""
        taken: list[Job] = []
        if room <= 0:
            return taken
        keep: collections.deque[Job] = collections.deque()
        while self._waiting:
            j = self._waiting.popleft()
            if len(taken) < room and j.key == key and not j.future.cancelled():
                taken.append(j)
            elif not j.future.cancelled():
                keep.append(j)
        self._waiting = keep
        return taken

    async def _loop(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._waiting:
                self._arrived.clear()
                await self._arrived.wait()
            first = self._waiting[0]
            batch = self._take(first.key, self.max_batch)
            if not batch:
                continue
            deadline = first.enqueued + self.max_wait
            while len(batch) < self.max_batch and self._incoming > 0:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._arrived.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._arrived.wait(), left)
                batch += self._take(first.key, self.max_batch - len(batch))
            self.running = len(batch)
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self.run_batch, batch)
            except Exception as e:  # the whole call failed: every job gets the error
                results = [e] * len(batch)
            finally:
                self.running = 0
            t1 = time.perf_counter()
            self.batches += 1
            if self.on_batch is not None:
                self.on_batch(len(batch), t1 - t0)
            for job, result in zip(batch, results):
                job.started, job.finished, job.batch_size = t0, t1, len(batch)
                if job.future.done():
                    continue
                if isinstance(result, BaseException):
                    job.future.set_exception(result)
                else:
                    job.future.set_result(result)
