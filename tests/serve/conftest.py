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
