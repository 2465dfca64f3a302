"""``atrous serve MODEL``: the HTTP service (:mod:`atrous.serve`) with its web page."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from atrous.cli import CLIError
from atrous.cli._common import positive_int
from atrous.inference.settings import InferenceSettings

# The inference flags serve takes, said in its words: they are the defaults of the requests
# (which may choose scales and flip) and how the model is prepared.
_INFERENCE_HELP = {
    "scales": "test-time scales (default: the weights' own, else 1)",
    "tile_size": "sliding-window tile",
    "precision": "serve the fast CPU path (atrous.inference.optimize)",
    "calibration": "images for --precision int8",
}
_CRF_FLAGS = ("crf", "allow_crf", "crf_params")


def register(sub: argparse._SubParsersAction) -> None:
    from atrous.serve.options import ServerSettings

    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP, with a web page",
        description="Serve a model (atrous .safetensors, a torchvision/VainF .pth, or an "
        "exported .onnx/.pt2) over HTTP: POST /v1/segment (an image in; a label PNG, an "
        "overlay or JSON out), a WebSocket /v1/stream for live camera frames, GET /v1/model, "
        "/healthz, /readyz, /metrics, and a web page at / (with a live camera). Concurrent requests of the same size run as one batch. Binds to 127.0.0.1 unless "
        "--host says otherwise; SIGTERM or Ctrl-C finishes the requests in flight and exits "
        "0. Needs the serve extra: pip install 'atrous[serve]'.",
    )
    p.add_argument("model", help="model file: .safetensors, .pth, .onnx or .pt2")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    g = p.add_argument_group("inference (the defaults; requests may choose scales and flip)")
    add = InferenceSettings.add_arguments
    add(g, only=("scales", "flip", "tile_size"), help=_INFERENCE_HELP)
    ServerSettings.add_arguments(g, only=_CRF_FLAGS)
    add(g, only=("precision", "calibration"), help=_INFERENCE_HELP)
    g.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for the model (default: torch's)",
    )
    ServerSettings.add_arguments(p.add_argument_group("batching and limits"), skip=_CRF_FLAGS)
    _add_process_args(p)
    p.set_defaults(func=run)


def _add_process_args(p: argparse.ArgumentParser) -> None:
    """The server processes: how many, how they stop, what they log."""
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="server processes, each with its own model and batcher (default 1: one model "
        "uses every core it is given)",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM, seconds to let requests in flight finish (default %(default)s)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
    )


def run(args: argparse.Namespace) -> int:
    # First of all, before anything slow (torch, the model): a SIGTERM from now on stops the
    # server cleanly (status 0) whatever it is doing.
    from atrous.serve.server import Stopped, Stopper

    stopper = Stopper().install()
    try:
        _load_and_serve(args, stopper)
    except Stopped:
        print(
            f"atrous serve: stopped by {stopper.name} before serving", file=sys.stderr, flush=True
        )
        return 0
    if stopper.name:
        print(
            f"atrous serve: stopped by {stopper.name} (the requests in flight were answered)",
            file=sys.stderr,
            flush=True,
        )
    return 0


def _load_and_serve(args: argparse.Namespace, stopper: Any) -> None:
    """Load the model, then serve it until a stop signal."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CLIError("serving needs the serve extra: pip install 'atrous[serve]'") from None
    from atrous.serve.options import ServerSettings
    from atrous.serve.server import load_service

    try:
        settings = ServerSettings.from_args(args)
    except ValueError as e:  # e.g. --precision int8 without --calib
        raise CLIError(str(e)) from None
    spec = {"model": args.model, "settings": settings.to_dict(), "threads": args.threads}
    try:
        model, settings, crf = load_service(spec)
    except (FileNotFoundError, ValueError, TypeError) as e:  # CheckpointError, ExportError too
        raise CLIError(str(e)) from None
    if args.workers > 1:
        del model  # each worker loads the model again
        stopper.restore()  # the supervisor handles the signals of its workers
        _serve_workers(args, spec)
    else:
        _serve(args, model, settings, crf, stopper)


def _serve_workers(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    """``--workers N`` processes on one socket, the threads shared out between them."""
    import torch

    from atrous.serve.server import run_workers

    threads = args.threads or max(1, torch.get_num_threads() // args.workers)
    url = f"http://{args.host}:{args.port}/"
    print(f"atrous serve: {args.workers} workers on {url}", file=sys.stderr, flush=True)
    run_workers(
        {**spec, "threads": threads},
        args.workers,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        graceful_timeout=args.graceful_timeout,
    )


def _serve(args: argparse.Namespace, model: Any, settings: Any, crf: Any, stopper: Any) -> None:
    """One process serving ``model`` until SIGTERM or Ctrl-C."""
    from atrous.serve.server import run as serve

    def started(server: object) -> None:
        arch = model.config.get("arch")
        print(
            f"atrous serve: {arch} on http://{args.host}:{args.port}/ (Ctrl-C or SIGTERM stops it)",
            file=sys.stderr,
            flush=True,
        )

    try:
        serve(
            model,
            settings,
            crf,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            graceful_timeout=args.graceful_timeout,
            on_start=started,
            stopper=stopper,
        )
    except OSError as e:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
