"""The camera stream (``/v1/stream``) through Starlette's TestClient: a frame gets what POST
gives for the same image, a bad frame the same error JSON, and frames faster than the model
are dropped (the newest answered), never queued; the metrics count them."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from conftest import app_client, encode, frame, rgb, slow_down
from PIL import Image
from starlette.websockets import WebSocketDisconnect

import atrous.weights as W
from atrous.inference import Segmenter
from atrous.serve import ServerSettings, create_app


@pytest.fixture(scope="module")
def model(weights_file):
    return W.load(weights_file)


def _reply(ws) -> tuple[dict, bytes | None]:
    """One reply: the JSON header and, when it announces one, the binary body after it."""
    header = ws.receive_json()
    body = ws.receive_bytes() if header.get("bytes") is not None else None
    if body is not None:
        assert len(body) == header["bytes"]
    return header, body


def _metric(text: str, name: str) -> float:
    line = next(ln for ln in text.splitlines() if ln.startswith(name + " "))
    return float(line.split()[1])


@pytest.mark.parametrize("fmt", ["png", "raw", "overlay", "json"])
def test_a_frame_gets_what_post_gives_the_same_image(model, fmt) -> None:
    image = rgb(1, 60, 80)
    data = encode(image)
    reference = Segmenter.from_model(model).predict(image)
    app = create_app(model, ServerSettings(warmup_size=(64, 64)))
    with app_client(app) as client:
        post = client.post(f"/v1/segment?format={fmt}", content=data)
        with client.websocket_connect(f"/v1/stream?format={fmt}") as ws:
            ws.send_bytes(data)
            header, body = _reply(ws)
            ws.send_bytes(data)
            second, _ = _reply(ws)
    assert post.status_code == 200
    assert (header["frame"], header["status"], header["format"]) == (0, "ok", fmt)
    assert (header["width"], header["height"], second["frame"]) == (80, 60, 1)
    assert header["seconds"] > 0 and header["batch_size"] == 1
    assert set(header["timing"]) == {"wait", "decode", "queue", "model", "encode"}
    if fmt == "json":
        assert body is None and header["result"]["classes"] == post.json()["classes"]
        return
    assert body == post.content and header["media"] == post.headers["content-type"]
    if fmt == "png":
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(body))), reference)
    elif fmt == "raw":
        assert header["dtype"] == "uint8"
        assert np.array_equal(np.frombuffer(body, np.uint8).reshape(60, 80), reference)


def test_a_bad_frame_gets_the_error_post_gives_and_the_stream_goes_on(model) -> None:
    good = encode(rgb(2, 40, 50))
    noise = np.random.default_rng(0).integers(0, 256, (70, 70, 3), dtype=np.uint8)
    bad = {
        "empty": b"",
        "not_an_image": b"just some text, not an image",
        "truncated": good[:200],
        "gif": encode(rgb(3, 20, 20), "GIF"),
        "too_many_pixels": encode(np.zeros((80, 80, 3), np.uint8)),
        "too_large": encode(noise),  # ~15 KB of noise, over the 0.01 MB limit
    }
    settings = ServerSettings(warmup_size=(64, 64), max_pixels=5000, max_upload_mb=0.01)
    app = create_app(model, settings)
    with app_client(app) as client:
        with client.websocket_connect("/v1/stream") as ws:
            got = []
            for data in bad.values():
                ws.send_bytes(data)
                got.append(_reply(ws)[0])
            ws.send_text("a text message")
            text_reply = ws.receive_json()
            ws.send_bytes(good)
            after, body = _reply(ws)
        posted = [client.post("/v1/segment", content=data).json() for data in bad.values()]
        metrics = client.get("/metrics").text
    for i, (reply, post) in enumerate(zip(got, posted)):
        assert (reply["frame"], reply["status"]) == (i, "error")
        assert reply["error"] == post["error"]
    codes = [r["error"]["code"] for r in got]
    assert codes == [
        "empty_upload",
        "not_an_image",
        "unreadable_image",
        "unsupported_image_type",
        "too_many_pixels",
        "upload_too_large",
    ]
    assert text_reply["frame"] is None and text_reply["error"]["code"] == "not_a_frame"
    assert (after["frame"], after["status"]) == (len(bad), "ok") and body
    assert _metric(metrics, "atrous_stream_frames_received_total") == len(bad) + 1
    assert _metric(metrics, "atrous_stream_frames_failed_total") == len(bad)
    assert _metric(metrics, "atrous_stream_frames_answered_total") == 1


def test_a_bad_option_or_a_cold_model_closes_the_stream_with_the_reason(model) -> None:
    app = create_app(model, ServerSettings(warmup_size=(64, 64)))
    with app_client(app) as client, client.websocket_connect("/v1/stream?format=gif") as ws:
        refused = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert refused["frame"] is None and refused["status"] == "error"
    assert refused["error"]["status"] == 422 and "'format'" in refused["error"]["message"]
    assert closed.value.code == 1008

    cold = create_app(model, ServerSettings(warmup_size=(64, 64)))
    slow_down(cold, 1.0)  # the warm-up forward takes a second
    with app_client(cold, ready=False) as client, client.websocket_connect("/v1/stream") as ws:
        refused = ws.receive_json()
        with pytest.raises(WebSocketDisconnect) as closed:
            ws.receive_json()
    assert refused["error"]["code"] == "not_ready" and closed.value.code == 1013


def test_frames_faster_than_the_model_are_dropped_and_the_newest_answered(model) -> None:
    app = create_app(model, ServerSettings(warmup_size=(64, 64)))
    slow = slow_down(app, 0.4)
    with app_client(app) as client:
        calls = slow.calls  # the warm-up's
        with client.websocket_connect("/v1/stream") as ws:
            t0 = time.perf_counter()
            for k in range(8):
                ws.send_bytes(frame(k))
            replies = {}
            while len(replies) < 8:
                header, body = _reply(ws)
                assert header["frame"] not in replies, "a frame got two replies"
                replies[header["frame"]] = (header["status"], body)
            seconds = time.perf_counter() - t0
        metrics = client.get("/metrics").text
    answered = [k for k in sorted(replies) if replies[k][0] == "ok"]
    dropped = [k for k in sorted(replies) if replies[k][0] == "dropped"]
    assert sorted(answered + dropped) == list(range(8))
    # at most the frame at the model when the others came, and the newest one
    assert 1 <= len(answered) <= 2 and answered[-1] == 7, replies
    for k in answered:  # each reply is its own frame's labels
        assert set(np.unique(np.asarray(Image.open(io.BytesIO(replies[k][1]))))) == {k}
    assert slow.calls - calls == len(answered)  # the dropped frames never reached the model
    assert seconds < 0.4 * len(answered) + 1.5, f"8 frames took {seconds:.2f} s: queued?"
    assert _metric(metrics, "atrous_stream_frames_received_total") == 8
    assert _metric(metrics, "atrous_stream_frames_answered_total") == len(answered)
    assert _metric(metrics, "atrous_stream_frames_dropped_total") == len(dropped)
    assert _metric(metrics, "atrous_stream_clients") == 0


def test_a_frame_waiting_in_the_queue_is_replaced_by_the_newer_one(model) -> None:
    """Two clients share the model: while A's frame runs, B's first frame waits in the
    batcher's queue; B's next frame takes it back (dropped) and is answered instead."""
    app = create_app(model, ServerSettings(warmup_size=(64, 64)))
    slow = slow_down(app, 0.5)
    batcher = app.state.service.batcher

    def until(condition) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, "the batcher never got there"
            time.sleep(0.005)

    with app_client(app) as client:
        calls = slow.calls
        with (
            client.websocket_connect("/v1/stream") as a,
            client.websocket_connect("/v1/stream") as b,
        ):
            a.send_bytes(frame(1))
            until(lambda: batcher.running == 1)
            b.send_bytes(frame(2))
            until(lambda: batcher.depth == 1)
            b.send_bytes(frame(3))
            first, second = _reply(b), _reply(b)
            from_a = _reply(a)
    assert from_a[0]["status"] == "ok"
    assert first[0] == {"frame": 0, "status": "dropped"}
    assert (second[0]["frame"], second[0]["status"]) == (1, "ok")
    assert set(np.unique(np.asarray(Image.open(io.BytesIO(second[1]))))) == {3}
    assert slow.calls - calls == 2  # A's frame and B's newest


def test_a_client_that_leaves_mid_stream_has_its_frames_counted(model) -> None:
    app = create_app(model, ServerSettings(warmup_size=(64, 64)))
    slow_down(app, 0.3)
    with app_client(app) as client:
        with client.websocket_connect("/v1/stream") as ws:
            for k in range(3):
                ws.send_bytes(frame(k))
            first = ws.receive_json()  # a frame replaced while another ran: dropped
        deadline = time.monotonic() + 10
        while _metric(metrics := client.get("/metrics").text, "atrous_stream_clients") != 0:
            assert time.monotonic() < deadline, "the stream was never closed"
            time.sleep(0.02)
    assert first["status"] == "dropped"
    received = _metric(metrics, "atrous_stream_frames_received_total")
    answered = _metric(metrics, "atrous_stream_frames_answered_total")
    dropped = _metric(metrics, "atrous_stream_frames_dropped_total")
    assert received == 3 and answered + dropped == 3 and dropped >= 2
