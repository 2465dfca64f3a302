"""Running the service under uvicorn: localhost by default, graceful shutdown on SIGTERM or
Ctrl-C (stop accepting, finish the requests in flight, exit 0)."""

from __future__ import annotations

import signal
from typing import Any

from atrous.serve.options import ServerSettings

__all__ = ["run"]


def run(
    model: Any,
    settings: ServerSettings,
    crf: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    graceful_timeout: float = 30.0,
    on_start: Any = None,
) -> None:
    """Serve ``model`` until SIGTERM/SIGINT; returns once the requests in flight are answered
    (at most ``graceful_timeout`` seconds). ``on_start(server)`` is called once listening."""
    import uvicorn

    from atrous.serve.app import create_app

    app = create_app(model, settings, crf)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="on",
        timeout_graceful_shutdown=graceful_timeout, access_log=log_level == "debug",
    )  # fmt: skip
    server = uvicorn.Server(config)
    # uvicorn re-raises a captured SIGTERM/SIGINT once it has shut down, to let the previous
    # handler act; ours does nothing, so a graceful stop ends the process with status 0.
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if on_start is not None:
            import threading

            def watch() -> None:
                import time

                while not server.started and not server.should_exit:
                    time.sleep(0.05)
                if server.started:
                    on_start(server)

            threading.Thread(target=watch, daemon=True).start()
        server.run()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
