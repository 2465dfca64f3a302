"""``atrous serve``: one loaded model behind HTTP, with dynamic batching, a web page, health
and Prometheus endpoints, and clear 4xx errors for bad uploads.

Built on Starlette + uvicorn (the ``serve`` extra): Starlette is the ASGI toolkit FastAPI
itself is built on, and all this service needs (routing, streaming bodies, multipart, a
lifespan) without pydantic or an OpenAPI layer; uvicorn is its standard server and gives
graceful shutdown on SIGTERM. Start with :func:`create_app` or :func:`run`.
"""

from __future__ import annotations

from atrous.serve.app import HTTPProblem, SegmentService, create_app
from atrous.serve.batcher import DynamicBatcher, QueueFull
from atrous.serve.options import OptionError, RequestOptions, ServerSettings, parse_options
from atrous.serve.server import run

__all__ = [
    "DynamicBatcher",
    "HTTPProblem",
    "OptionError",
    "QueueFull",
    "RequestOptions",
    "SegmentService",
    "ServerSettings",
    "create_app",
    "parse_options",
    "run",
]
