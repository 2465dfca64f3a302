"""A real server on a free local port, for the service tests."""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import atrous.models as M
import atrous.weights as W

NAMES = ["background", "road", "car", "tree", "sky"]
PALETTE = [[0, 0, 0], [128, 64, 128], [0, 0, 142], [107, 142, 35], [70, 130, 180]]


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = M.build("deeplabv3plus_mobilenetv2", num_classes=5, width_mult=0.25).eval()
    with torch.no_grad():  # well-separated logits: no argmax ties between runs
        m.head.classifier.weight.mul_(50.0)
    m.metadata.update(class_names=NAMES, palette=PALETTE)
    return m


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    return W.save(tiny_model(), tmp_path_factory.mktemp("serve") / "tiny.safetensors")


def rgb(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(base).resize((w, h), Image.BILINEAR))


def encode(image: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(app, ready: bool = True) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a thread; yields the base URL; stops it on exit."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    while ready and httpx.get(url + "/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the server did not get ready"
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(30)


class SlowSegmenter:
    """A Segmenter stand-in for the stream tests: each model call sleeps ``delay`` seconds,
    then answers ``inner``'s labels or, without ``inner``, each image's red channel // 30
    (so a solid frame of red 30k+5 is labelled k: the reply says which frame it was)."""

    def __init__(self, delay: float, inner=None) -> None:
        self.delay, self.inner, self.calls = delay, inner, 0

    def predict(self, image: np.ndarray) -> np.ndarray:
        return self.predict_many([image], "labels", errors="return")[0]

    def predict_many(self, images, output: str = "labels", errors: str = "raise") -> list:
        self.calls += 1
        time.sleep(self.delay)
        if self.inner is not None:
            return list(self.inner.predict_many(images, output, errors=errors))
        return [(np.asarray(im)[..., 0] // 30).astype(np.uint8) for im in images]


def slow_down(app, delay: float, real: bool = False) -> SlowSegmenter:
    """Make ``app``'s model calls take ``delay`` seconds more: with ``real``, answering the
    real Segmenter's labels (default options only), else :class:`SlowSegmenter`'s frame
    numbers. Call before the app starts."""
    service = app.state.service
    inner = service.segmenter(service.settings.defaults().inference_key) if real else None
    slow = SlowSegmenter(delay, inner)
    service.segmenter = lambda key: slow
    return slow


def frame(k: int, h: int = 48, w: int = 64) -> bytes:
    """Frame ``k`` for :class:`SlowSegmenter`: a solid PNG of red 30k+5."""
    return encode(np.full((h, w, 3), (30 * k + 5, 90, 140), np.uint8))


@contextlib.contextmanager
def app_client(app, ready: bool = True) -> Iterator:
    """Starlette's TestClient on ``app`` (lifespan run), once it is ready if ``ready``."""
    import warnings

    with warnings.catch_warnings():  # Starlette asks for httpx2; httpx does the job here
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from starlette.testclient import TestClient

    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while ready and client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app did not get ready"
            time.sleep(0.02)
        yield client


def chromium_driver(*args: str):
    """Headless Chromium under Selenium (Debian's chromium and chromium-driver) with
    ``args`` added; skips, saying what to install, without them."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip(
            "BROWSER TEST NOT RUN: headless Chromium is not installed (apt-get install "
            "chromium chromium-driver; .ci/run does this)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,900",
        "--force-color-profile=srgb",
        *args,
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)
