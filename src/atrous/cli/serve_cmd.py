"""``atrous serve MODEL``: the HTTP service (:mod:`atrous.serve`) with its web page."""

from __future__ import annotations

import argparse
import sys

from atrous.cli import CLIError
from atrous.cli._common import parse_scales, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP, with a web page",
        description="Serve a model (atrous .safetensors, a torchvision/VainF .pth, or an "
        "exported .onnx/.pt2) over HTTP: POST /v1/segment (an image in; a label PNG, an "
        "overlay or JSON out), GET /v1/model, /healthz, /readyz, /metrics, and a web page at "
        "/. Concurrent requests of the same size run as one batch. Binds to 127.0.0.1 unless "
        "--host says otherwise; SIGTERM or Ctrl-C finishes the requests in flight and exits "
        "0. Needs the serve extra: pip install 'atrous[serve]'.",
    )
    p.add_argument("model", help="model file: .safetensors, .pth, .onnx or .pt2")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default %(default)s)")
    g = p.add_argument_group("inference (the defaults; requests may choose scales and flip)")
    g.add_argument("--scales", type=parse_scales, default=None,
                   help="test-time scales (default: the weights' own, else 1)")  # fmt: skip
    g.add_argument("--flip", action="store_true", help="also average the left-right flip")
    g.add_argument("--tile-size", type=positive_int, default=None, help="sliding-window tile")
    g.add_argument("--crf", action="store_true", help="run the dense CRF by default")
    g.add_argument("--allow-crf", action="store_true",
                   help="let requests turn the dense CRF on (crf=true)")  # fmt: skip
    g.add_argument("--crf-params", default=None, metavar="JSON",
                   help="dense-CRF parameters (e.g. best_crf.json of atrous crf-search)")  # fmt: skip
    g.add_argument("--precision", choices=("fp32", "bf16", "int8"), default=None,
                   help="serve the fast CPU path (atrous.inference.optimize)")  # fmt: skip
    g.add_argument("--calib", default=None, metavar="DATA", help="images for --precision int8")
    g.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for the model (default: torch's)")  # fmt: skip
    b = p.add_argument_group("batching and limits")
    b.add_argument("--max-batch", type=positive_int, default=8,
                   help="images per model batch (default %(default)s)")  # fmt: skip
    b.add_argument("--max-wait-ms", type=float, default=10.0,
                   help="how long a request waits for batch-mates (default %(default)s)")  # fmt: skip
    b.add_argument("--max-queue", type=positive_int, default=64,
                   help="waiting requests beyond which the server answers 503 (default "
                   "%(default)s)")  # fmt: skip
    b.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="largest upload, MB (413 beyond; default %(default)s)")  # fmt: skip
    b.add_argument("--max-pixels", type=float, default=40e6,
                   help="largest image, pixels, read from the header before decoding (413 "
                   "beyond; default %(default).0e)")  # fmt: skip
    b.add_argument("--memory-limit-mb", type=float, default=None,
                   help="RSS above which freed memory is given back to the OS after a batch "
                   "(default: 3x the RSS after the warm-up, at least 1024; 0: never)")  # fmt: skip
    p.add_argument("--workers", type=positive_int, default=1,
                   help="server processes, each with its own model and batcher (default 1: "
                   "one model uses every core it is given)")  # fmt: skip
    p.add_argument("--graceful-timeout", type=float, default=30.0,
                   help="on SIGTERM, seconds to let requests in flight finish (default "
                   "%(default)s)")  # fmt: skip
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CLIError("serving needs the serve extra: pip install 'atrous[serve]'") from None
    import dataclasses

    from atrous.serve.server import load_service
    from atrous.serve.server import run as serve

    if args.precision == "int8" and not args.calib:
        raise CLIError("--precision int8 needs --calib DATA (images of your data)")
    spec = {
        "model": args.model,
        "settings": dict(
            scales=args.scales,
            flip=args.flip,
            crf=args.crf or bool(args.crf_params),
            allow_crf=args.allow_crf,
            tile_size=args.tile_size,
            max_batch=args.max_batch,
            max_wait_ms=args.max_wait_ms,
            max_queue=args.max_queue,
            max_upload_mb=args.max_upload_mb,
            max_pixels=int(args.max_pixels),
            memory_limit_mb=args.memory_limit_mb,
            threads=args.threads,
        ),
        "crf": bool(args.crf or args.allow_crf or args.crf_params),
        "crf_params": args.crf_params,
        "precision": args.precision,
        "calib": args.calib,
        "threads": args.threads,
    }
    try:
        model, settings, crf = load_service(spec)
    except (FileNotFoundError, ValueError, TypeError) as e:  # CheckpointError, ExportError too
        raise CLIError(str(e)) from None

    if args.workers > 1:
        import torch

        from atrous.serve.server import run_workers

        threads = args.threads or max(1, torch.get_num_threads() // args.workers)
        # the scales resolved from the weights; each worker loads the model again
        spec = {**spec, "settings": dataclasses.asdict(settings), "threads": threads}
        del model
        print(f"atrous serve: {args.workers} workers on http://{args.host}:{args.port}/",
              file=sys.stderr, flush=True)  # fmt: skip
        run_workers(spec, args.workers, host=args.host, port=args.port,
                    log_level=args.log_level, graceful_timeout=args.graceful_timeout)  # fmt: skip
        return 0

    def started(server: object) -> None:
        print(f"atrous serve: {model.config.get('arch')} on http://{args.host}:{args.port}/ "
              "(Ctrl-C or SIGTERM stops it)", file=sys.stderr, flush=True)  # fmt: skip

    try:
        serve(model, settings, crf, host=args.host, port=args.port, log_level=args.log_level,
              graceful_timeout=args.graceful_timeout, on_start=started)  # fmt: skip
    except OSError as e:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0
