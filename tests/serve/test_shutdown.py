"""``atrous serve`` as a user runs it: a subprocess that comes up, answers, and on SIGTERM stops
accepting, finishes the request in flight and exits 0."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import encode, free_port, rgb
from PIL import Image


def _wait_ready(url: str, proc: subprocess.Popen, limit: float = 120) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not get ready")


def test_sigterm_finishes_the_request_in_flight_and_exits_0(weights_file) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    serve = [sys.executable, "-m", "atrous", "serve", str(weights_file), "--port", str(port)]
    proc = subprocess.Popen(
        [*serve, "--threads", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        _wait_ready(url, proc)
        card = httpx.get(url + "/v1/model").json()
        assert card["arch"] == "deeplabv3plus_mobilenetv2"
        # a request that keeps the model busy for a moment: two scales, flipped
        big = encode(rgb(7, 480, 640))
        result: dict = {}

        def slow() -> None:
            result["r"] = httpx.post(
                url + "/v1/segment",
                params={"scales": "1,2", "flip": "true"},
                content=big,
                timeout=120,
            )

        t = threading.Thread(target=slow)
        t.start()
        deadline = time.monotonic() + 30
        while "atrous_requests_in_flight 1.0" not in httpx.get(url + "/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        t.join(120)
        rc = proc.wait(60)
        r = result["r"]
        assert r.status_code == 200
        assert np.asarray(Image.open(io.BytesIO(r.content))).shape == (480, 640)
        assert rc == 0, proc.stderr.read()
        try:
            httpx.get(url + "/healthz", timeout=2)
            raise AssertionError("the server still accepts connections")
        except httpx.TransportError:
            pass
        err = proc.stderr.read()
        assert "Traceback" not in err
        assert f"on http://127.0.0.1:{port}/" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_refuses_a_bad_model_file_in_one_line(tmp_path) -> None:
    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a checkpoint")
    out = subprocess.run(
        [sys.executable, "-m", "atrous", "serve", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "Traceback" not in out.stderr


def test_workers_serve_on_one_port_and_stop_with_status_0(weights_file) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = [sys.executable, "-m", "atrous", "serve", str(weights_file), "--port", str(port)]
    proc = subprocess.Popen(
        [*serve, "--workers", "2", "--threads", "1", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_ready(url, proc)
        # /readyz answered by one worker; the other may still be warming up and answer 503
        # with Retry-After, which a client honours
        deadline = time.monotonic() + 60
        while True:
            r = httpx.post(url + "/v1/segment", content=encode(rgb(9, 60, 80)), timeout=30)
            if r.status_code != 503 or time.monotonic() > deadline:
                break
            assert r.json()["error"]["code"] == "not_ready"
            time.sleep(float(r.headers["retry-after"]) / 4)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:  # failed: kill the supervisor and its workers (one session)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _start(weights_file, port: int) -> subprocess.Popen:
    serve = [sys.executable, "-m", "atrous", "serve", str(weights_file), "--port", str(port)]
    return subprocess.Popen(
        [*serve, "--threads", "1", "--log-level", "warning"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
    )


def _wait_for_sigterm_handler(proc: subprocess.Popen, limit: float = 30) -> None:
    """Until the process catches SIGTERM (Linux: its /proc status' caught-signal mask)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        with open(f"/proc/{proc.pid}/status") as f:
            caught = next(line for line in f if line.startswith("SigCgt:"))
        if int(caught.split()[1], 16) >> (signal.SIGTERM - 1) & 1:
            return
        time.sleep(0.002)
    raise AssertionError("atrous serve never caught SIGTERM")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc (Linux)")
def test_sigterm_at_any_moment_stops_cleanly(weights_file) -> None:
    # SIGTERM right after the command has its handler (Python itself starts first), while torch imports, while the
    # model loads, while uvicorn starts, and once serving: every run exits 0 and says it
    # stopped (a SIGTERM before uvicorn's handler once killed the server with 143, no word).
    delays = [0.0, 0.05, 0.15, 0.3, 0.6, 1.0, 1.6, 2.4, None, None]  # None: once ready
    t0 = time.monotonic()
    for i, delay in enumerate(delays):
        port = free_port()
        proc = _start(weights_file, port)
        try:
            _wait_for_sigterm_handler(proc)
            if delay is None:
                _wait_ready(f"http://127.0.0.1:{port}", proc)
                time.sleep(0.05 * i)
            else:
                time.sleep(delay)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(60)
            err = proc.stderr.read()
            assert rc == 0, f"run {i} (SIGTERM after {delay} s): status {rc}\n{err}"
            assert "atrous serve: stopped by SIGTERM" in err, f"run {i}: {err}"
            assert "Traceback" not in err, err
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    assert time.monotonic() - t0 < 120
