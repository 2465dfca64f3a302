"""``atrous serve``: one loaded model behind HTTP, with dynamic batching, a web page, health
and Prometheus endpoints, and clear 4xx errors for bad uploads.

Built on Starlette + uvicorn (the ``serve`` extra): Starlette is the ASGI toolkit FastAPI
itself is built on, and all this service needs (routing, streaming bodies, multipart, a
lifespan) without pydantic or an OpenAPI layer; uvicorn is its standard server and gives
graceful shutdown on SIGTERM. Start with :func:`create_app` or :func:`run`.

Names load on first access (PEP 562): the settings (:mod:`atrous.serve.options`, which the
command line's flags come from) import neither Starlette nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the module that defines it.
_NAMES = {
    "HTTPProblem": "problems",
    "SegmentService": "app",
    "create_app": "app",
    "DynamicBatcher": "batcher",
    "QueueFull": "batcher",
    "OptionError": "options",
    "RequestOptions": "options",
    "ServerSettings": "options",
    "parse_options": "options",
    "run": "server",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_NAMES])
