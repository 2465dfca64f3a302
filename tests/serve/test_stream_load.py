"""The server under a camera stream for a bounded time: a real uvicorn server (WebSocket through
the serve extra's wsproto) and a simulated client sending frames at 15 frames/s for 10 s to a
model made slower than the camera (the tiny model plus 0.1 s a call). Every frame must be
answered or dropped, never lost, and the latency must stay bounded: the last quarter's median
at most twice the first quarter's plus 0.2 s (a queue would grow by about half a second every
second)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
from conftest import encode, rgb, running, slow_down

import atrous.weights as W
from atrous.serve import ServerSettings, create_app

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
FPS, SECONDS, MODEL_DELAY = 15, 10.0, 0.1


def _stream(url: str, frames: list[bytes], fps: float, seconds: float) -> dict:
    """Send ``frames`` round and round at ``fps`` for ``seconds`` and read every reply;
    returns the frames sent, their statuses and the latencies of the answered ones (send to
    reply, in order of sending)."""
    import websocket  # websocket-client

    ws = websocket.create_connection(url.replace("http", "ws") + "/v1/stream", timeout=60)
    n = int(fps * seconds)
    sent_at: list[float] = []
    settled: dict[int, tuple[str, float]] = {}

    def send() -> None:
        t0 = time.perf_counter()
        for i in range(n):
            time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
            sent_at.append(time.perf_counter())
            ws.send_binary(frames[i % len(frames)])

    sender = threading.Thread(target=send)
    sender.start()
    try:
        while len(settled) < n:
            header = json.loads(ws.recv())
            if header.get("bytes") is not None:
                ws.recv()  # the labels
            settled[header["frame"]] = (header["status"], time.perf_counter())
    finally:
        sender.join()
        ws.close()
    answered = sorted(k for k, (status, _) in settled.items() if status == "ok")
    return {
        "sent": n,
        "answered": len(answered),
        "dropped": sum(status == "dropped" for status, _ in settled.values()),
        "latency": [settled[k][1] - sent_at[k] for k in answered],
    }


def test_a_camera_faster_than_the_model_gets_bounded_latency(weights_file) -> None:
    app = create_app(W.load(weights_file), ServerSettings(warmup_size=(120, 160)))
    slow_down(app, MODEL_DELAY, real=True)
    frames = [encode(rgb(k, 120, 160), "JPEG", quality=80) for k in range(5)]
    with running(app) as url:
        got = _stream(url, frames, FPS, SECONDS)
    latency = np.asarray(got["latency"])
    quarter = max(1, len(latency) // 4)
    first, last = np.median(latency[:quarter]), np.median(latency[-quarter:])
    report = (
        f"{got['sent']} frames sent at {FPS}/s for {SECONDS:g} s: {got['answered']} answered, "
        f"{got['dropped']} dropped; latency median {np.median(latency):.3f} s, worst "
        f"{latency.max():.3f} s; first quarter's median {first:.3f} s, last's {last:.3f} s"
    )
    print(report)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "stream_load.txt").write_text(report + "\n")
    assert got["answered"] > 0, report
    assert got["dropped"] + got["answered"] == got["sent"], report
    assert got["dropped"] > 0, report  # the camera was faster than the model
    assert last <= 2 * first + 0.2, report  # no growing queue
    assert latency.max() < 10 * MODEL_DELAY + 2.0, report
