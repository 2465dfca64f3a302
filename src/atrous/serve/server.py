"""Running the service under uvicorn: localhost by default, graceful shutdown on SIGTERM or
Ctrl-C (stop accepting, finish the requests in flight, exit 0)."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from atrous.serve.options import ServerSettings

__all__ = [
    "ENV_SPEC",
    "Stopped",
    "Stopper",
    "app_from_env",
    "load_service",
    "run",
    "run_workers",
    "ws_max_size",
]

ENV_SPEC = "ATROUS_SERVE_SPEC"  # what each worker process of run_workers loads (JSON)


class Stopped(BaseException):
    """A stop signal came before the server existed (raised by :class:`Stopper`)."""


class Stopper:
    """SIGTERM (and, once serving, SIGINT) as a clean stop whatever phase ``atrous serve`` is
    in, so that the process never dies with status 143. Install it first, before torch is
    imported and the model loaded: a SIGTERM before the server exists raises :class:`Stopped`;
    once :func:`run` has made the server, it asks it to stop (uvicorn's own handler takes over
    while it serves, and hands the signal back when it is done); after :meth:`finish`, a
    further signal is ignored."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.server: Any = None
        self.finished = False
        self._previous: dict[int, Any] = {}

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> Stopper:
        for s in signals:
            previous = signal.signal(s, self._handle)
            self._previous.setdefault(s, previous)
        return self

    def restore(self) -> None:
        """The handlers from before :meth:`install`."""
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def finish(self) -> None:
        """The server is done: ignore what comes now."""
        self.finished = True

    @property
    def name(self) -> str | None:
        """The first stop signal's name (``"SIGTERM"``), or None."""
        return None if self.received is None else signal.Signals(self.received).name

    def _handle(self, sig: int, frame: Any) -> None:
        if self.received is None:
            self.received = sig
        if self.finished:
            return
        if self.server is None:
            self.finished = True  # a second signal while unwinding is ignored
            raise Stopped(sig)
        self.server.handle_exit(sig, frame)


def run(
    model: Any,
    settings: ServerSettings,
    crf: Any = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    graceful_timeout: float = 30.0,
    on_start: Any = None,
    stopper: Stopper | None = None,
) -> None:
    """Serve ``model`` until SIGTERM/SIGINT; returns once the requests in flight are answered
    (at most ``graceful_timeout`` seconds). ``on_start(server)`` is called once listening.
    ``stopper``: the caller's :class:`Stopper`, installed before the model was loaded (left
    installed and finished on return, so a late signal cannot kill the process)."""
    import uvicorn

    from atrous.serve.app import create_app

    app = create_app(model, settings, crf)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=graceful_timeout,
        access_log=log_level == "debug",
        ws_max_size=ws_max_size(settings),
    )
    server = uvicorn.Server(config)
    # A signal from here until uvicorn installs its handler (and after it restores ours) asks
    # the server to stop; uvicorn re-raises the signals it caught once it has shut down, and
    # the stopper takes them, so a graceful stop ends the process with status 0.
    own = stopper is None
    stopper = stopper or Stopper()
    stopper.server = server
    stopper.install((signal.SIGTERM, signal.SIGINT))
    try:
        if on_start is not None:
            _watch(server, on_start)
        server.run()
    finally:
        stopper.finish()
        if own:
            stopper.restore()


def ws_max_size(settings: ServerSettings) -> int:
    """uvicorn's limit on one WebSocket message: a camera frame over ``--max-upload-mb`` by up
    to 1 MiB gets the 413 error reply (:mod:`atrous.serve.stream`); a larger one closes the
    connection (1009, message too big) before it is buffered whole. uvicorn speaks WebSocket
    through ``websockets`` when it is installed, else ``wsproto`` (the serve extra's)."""
    return settings.max_upload_bytes + 2**20


def _watch(server: Any, on_start: Any) -> None:
    """Call ``on_start(server)`` from a thread once ``server`` listens."""
    import threading
    import time

    def watch() -> None:
        while not server.started and not server.should_exit:
            time.sleep(0.05)
        if server.started:
            on_start(server)

    threading.Thread(target=watch, daemon=True).start()


def _quiet_signals() -> dict:
    """No-op SIGTERM/SIGINT handlers (see :func:`run`); returns the previous ones."""
    return {s: signal.signal(s, lambda *_: None) for s in (signal.SIGTERM, signal.SIGINT)}


def run_workers(
    spec: dict[str, Any],
    workers: int,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    graceful_timeout: float = 30.0,
) -> None:
    """Serve with ``workers`` processes on one socket (uvicorn's supervisor), each loading the
    model itself from ``spec`` (:func:`app_from_env`): throughput for a machine with more
    cores than one model uses, at ``workers`` times the memory. SIGTERM stops every worker
    gracefully; returns when they are done."""
    import json
    import os

    import uvicorn

    os.environ[ENV_SPEC] = json.dumps(spec)
    previous = _quiet_signals()
    try:
        uvicorn.run(
            "atrous.serve.server:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=int(workers),
            log_level=log_level,
            lifespan="on",
            timeout_graceful_shutdown=graceful_timeout,
            access_log=log_level == "debug",
            ws_max_size=ws_max_size(ServerSettings.from_dict(_settings_of(spec))),
        )
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def load_service(spec: Mapping[str, Any]) -> tuple[Any, ServerSettings, Any]:
    """(model, settings, dense-CRF hook) from ``spec``: ``model`` (a file), ``settings``
    (:meth:`ServerSettings.to_dict`) and ``threads`` (torch's CPU threads). The model is
    prepared at the settings' precision (:func:`atrous.inference.pipeline.prepare_model`: a
    learned CRF-as-RNN layer is kept, as in ``atrous predict``); the dense CRF is built when
    the settings allow it. The one recipe of ``atrous serve`` and of each :func:`run_workers`
    process."""
    import torch

    from atrous.inference.pipeline import prepare_model

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    settings = ServerSettings.from_dict(_settings_of(spec))
    model = prepare_model(spec["model"], settings.inference)
    crf = None
    if settings.crf_allowed:
        from atrous.crf import DenseCRF

        crf = DenseCRF.from_params(settings.crf_params, where="--crf-params")
    return model, settings, crf


def _settings_of(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec["settings"]``, with the keys that earlier specs kept beside it (``precision``,
    ``calib``, ``crf_params``) moved in."""
    settings = dict(spec.get("settings") or {})
    legacy = {"precision": "precision", "calib": "calibration"}
    inference = {new: spec[old] for old, new in legacy.items() if spec.get(old) is not None}
    if inference:
        settings["inference"] = {**settings.get("inference", {}), **inference}
    if spec.get("crf_params") is not None:
        settings.setdefault("crf_params", spec["crf_params"])
    return settings


def app_from_env() -> Any:
    """The app of one worker process of :func:`run_workers`: :func:`load_service` of the JSON
    in ``$ATROUS_SERVE_SPEC``."""
    import json
    import os

    from atrous.serve.app import create_app

    return create_app(*load_service(json.loads(os.environ[ENV_SPEC])))
