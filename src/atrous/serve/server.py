"""Running the service under uvicorn: localhost by default, graceful shutdown on SIGTERM or
Ctrl-C (stop accepting, finish the requests in flight, exit 0)."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import Any

from atrous.serve.options import ServerSettings

__all__ = ["ENV_SPEC", "app_from_env", "load_service", "run", "run_workers"]

ENV_SPEC = "ATROUS_SERVE_SPEC"  # what each worker process of run_workers loads (JSON)


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
    previous = _quiet_signals()
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
            "atrous.serve.server:app_from_env", factory=True, host=host, port=port,
            workers=int(workers), log_level=log_level, lifespan="on",
            timeout_graceful_shutdown=graceful_timeout, access_log=log_level == "debug",
        )  # fmt: skip
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def load_service(spec: Mapping[str, Any]) -> tuple[Any, ServerSettings, Any]:
    """(model, settings, dense-CRF hook) from ``spec``: ``model`` (a file), ``settings``
    (:class:`ServerSettings` fields; ``scales`` None takes the weights' own, else 1),
    ``crf`` and ``crf_params``, ``precision`` and ``calib`` (:func:`atrous.inference.optimize`
    of the network, a learned CRF-as-RNN layer left out) and ``threads``. The one recipe of
    ``atrous serve`` and of each :func:`run_workers` process."""
    import torch

    from atrous.weights import load

    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    model = load(spec["model"])
    if spec.get("precision"):
        from atrous.crf.rnn_model import split_crf
        from atrous.inference import optimize

        net, _ = split_crf(model)
        model = optimize(net, spec["precision"], calibration=spec.get("calib"))
    crf = None
    if spec.get("crf"):
        from atrous.crf import DenseCRF

        crf = DenseCRF.from_params(spec.get("crf_params"), where="--crf-params")
    settings = dict(spec["settings"])
    if settings.get("scales") is None:
        settings["scales"] = (getattr(model, "metadata", {}) or {}).get("inference_scales") or (
            1.0,
        )
    for key in ("scales", "warmup_size"):
        if key in settings:
            settings[key] = tuple(settings[key])
    return model, ServerSettings(**settings), crf


def app_from_env() -> Any:
    """The app of one worker process of :func:`run_workers`: :func:`load_service` of the JSON
    in ``$ATROUS_SERVE_SPEC``."""
    import json
    import os

    from atrous.serve.app import create_app

    return create_app(*load_service(json.loads(os.environ[ENV_SPEC])))
