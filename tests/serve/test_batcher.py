"""The dynamic batcher on its own: grouping by key, the wait bound, the queue bound, one
failing image that does not fail its batch-mates, and taking a waiting job back."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from atrous.serve.batcher import DynamicBatcher, Job, QueueFull, Withdrawn


def _run(coro):
    return asyncio.run(coro)


def test_concurrent_jobs_of_one_key_share_a_batch_and_others_wait_their_turn() -> None:
    calls: list[list[str]] = []

    def run_batch(jobs):
        calls.append([j.image for j in jobs])
        return [f"{j.image}!" for j in jobs]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=3, max_wait_ms=200, max_queue=10)
        b.start()
        results = await asyncio.gather(
            b.submit("a1", "A"),
            b.submit("b1", "B"),
            b.submit("a2", "A"),
            b.submit("a3", "A"),
            b.submit("a4", "A"),
        )
        await b.stop()
        return results

    assert _run(main()) == ["a1!", "b1!", "a2!", "a3!", "a4!"]
    assert calls[0] == ["a1", "a2", "a3"]  # the first key, up to max_batch, oldest first
    assert sorted(map(tuple, calls[1:])) == [("a4",), ("b1",)]


def test_a_lone_job_runs_at_once_and_waits_only_for_announced_company() -> None:
    calls: list[list[str]] = []

    def run_batch(jobs):
        calls.append([j.image for j in jobs])
        return [1] * len(jobs)

    async def main():
        b = DynamicBatcher(run_batch, max_batch=8, max_wait_ms=300)
        b.start()
        t0 = time.perf_counter()
        await b.submit("alone", 0)  # nothing announced: no wait
        alone = time.perf_counter() - t0

        async def late_joiner():
            with b.expect():  # being received and decoded
                await asyncio.sleep(0.05)
            return await b.submit("joiner", 0)

        async def gives_up():
            with b.expect():  # announced, then refused (a bad upload): never submitted
                await asyncio.sleep(0.05)

        t0 = time.perf_counter()
        await asyncio.gather(b.submit("first", 0), late_joiner())
        joined = time.perf_counter() - t0
        t0 = time.perf_counter()
        await asyncio.gather(b.submit("lonely", 0), gives_up())
        gave_up = time.perf_counter() - t0
        await b.stop()
        return alone, joined, gave_up

    alone, joined, gave_up = _run(main())
    assert alone < 0.1  # far below max_wait
    assert calls[1] == ["first", "joiner"]  # the announced request joined the batch
    assert 0.04 <= joined < 0.28
    assert calls[2] == ["lonely"] and 0.04 <= gave_up < 0.28  # ran when the announcement ended


def test_the_wait_is_bounded_by_max_wait() -> None:
    async def main():
        b = DynamicBatcher(lambda jobs: [1] * len(jobs), max_batch=8, max_wait_ms=50)
        b.start()
        with b.expect():  # announced for longer than max_wait
            t0 = time.perf_counter()
            await b.submit("x", 0)
            waited = time.perf_counter() - t0
        await b.stop()
        return waited

    waited = _run(main())
    assert 0.04 <= waited < 1.0


def test_one_failing_image_fails_alone() -> None:
    def run_batch(jobs):
        return [ValueError("bad pixels") if j.image == "bad" else j.image for j in jobs]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=4, max_wait_ms=100)
        b.start()
        out = await asyncio.gather(
            b.submit("ok1", 0), b.submit("bad", 0), b.submit("ok2", 0), return_exceptions=True
        )
        await b.stop()
        return out, b.batches

    out, batches = _run(main())
    assert out[0] == "ok1" and out[2] == "ok2" and batches == 1
    assert isinstance(out[1], ValueError)


def test_a_full_queue_refuses_at_once() -> None:
    release = threading.Event()

    def run_batch(jobs):
        release.wait(10)
        return [j.image for j in jobs]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=1, max_wait_ms=0, max_queue=1)
        b.start()
        first = asyncio.ensure_future(b.submit(1, 0))
        await asyncio.sleep(0.05)  # running: the queue is empty again
        second = asyncio.ensure_future(b.submit(2, 0))
        await asyncio.sleep(0.05)
        assert b.depth == 1
        with pytest.raises(QueueFull, match="1 requests are waiting"):
            await b.submit(3, 0)
        release.set()
        out = await asyncio.gather(first, second)
        await b.stop()
        return out

    assert _run(main()) == [1, 2]


def test_the_event_loop_stays_free_while_the_model_runs() -> None:
    def run_batch(jobs):
        time.sleep(0.3)
        return [0] * len(jobs)

    async def main():
        b = DynamicBatcher(run_batch, max_batch=1, max_wait_ms=0)
        b.start()
        job = asyncio.ensure_future(b.submit(0, 0))
        ticks = 0
        while not job.done():
            await asyncio.sleep(0.01)
            ticks += 1
        await b.stop()
        return ticks

    assert _run(main()) > 10


def test_a_waiting_job_can_be_withdrawn_but_not_a_running_one() -> None:
    calls: list[list[str]] = []
    release = threading.Event()

    def run_batch(jobs):
        calls.append([j.image for j in jobs])
        release.wait(5)
        return [f"{j.image}!" for j in jobs]

    async def main():
        b = DynamicBatcher(run_batch, max_batch=4, max_wait_ms=0)
        b.start()
        running = Job("running", "A")
        first = asyncio.ensure_future(b.submit_job(running))
        while b.running == 0:
            await asyncio.sleep(0.005)
        stale, fresh = Job("stale", "A"), Job("fresh", "A")
        waiting = [asyncio.ensure_future(b.submit_job(j)) for j in (stale, fresh)]
        await asyncio.sleep(0.01)
        assert b.depth == 2
        took_running, took_stale = b.withdraw(running), b.withdraw(stale)
        again = b.withdraw(stale)
        assert b.depth == 1
        release.set()
        results = await asyncio.gather(first, *waiting, return_exceptions=True)
        await b.stop()
        return took_running, took_stale, again, results

    took_running, took_stale, again, results = _run(main())
    assert (took_running, took_stale, again) == (False, True, False)
    assert results[0] == "running!" and results[2] == "fresh!"
    assert isinstance(results[1], Withdrawn)
    assert calls == [["running"], ["fresh"]]  # the withdrawn job never reached the model
