"""``atrous train``: train a DeepLab model from a config file (see ``configs/``)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a config (DeepLab's poly-LR recipe)",
        description="Train a DeepLab model. Writes last.pt/best.pt (resumable), "
        "model.safetensors, metrics.jsonl, config.json and summary.json into --out. A bad "
        "sample is reported, skipped and listed in summary.json, and the exit status is 1 "
        "(--set on_error=raise stops at it instead, exit 2). Ctrl-C finishes the iteration, "
        "saves last.pt and exits 130; a second Ctrl-C aborts without saving.",
    )
    p.add_argument("--config", help="a JSON (or YAML) config, e.g. configs/synthetic_demo.json")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting (JSON value), e.g. --set lr=0.01 "
        "--set model_options.norm=gn; repeatable",
    )
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="CHECKPOINT",
        help="continue from --out/last.pt (or the given checkpoint)",
    )
    p.add_argument("--iterations", type=int, help="total iterations (overrides the config)")
    p.add_argument(
        "--time-limit",
        type=float,
        metavar="MINUTES",
        help="wall-clock budget: the run length is fitted to it (poly LR ends on time)",
    )
    p.add_argument(
        "--weights",
        help="fine-tune from this checkpoint or registry name (atrous weights list; head "
        "re-initialized)",
    )
    p.add_argument(
        "--pretrained-backbone",
        help="ImageNet backbone weights: 'imagenet' (the registry's for the model's backbone), "
        "a registry name or a file",
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: the config's, auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The config settings the command line overrides (--set and the shortcut flags)."""
    overrides = list(args.overrides)
    if args.iterations is not None:
        overrides.append(f"iterations={args.iterations}")
    if args.time_limit is not None:
        overrides.append(f"time_limit={args.time_limit}")
    for key, value in (
        ("weights", args.weights),
        ("pretrained_backbone", args.pretrained_backbone),
        ("device", args.device),
    ):
        if value:
            overrides.append(f"{key}={value}")
    return overrides


def run(args: argparse.Namespace) -> int:
    """Train (or resume); exit 130 after a Ctrl-C (what was saved is said)."""
    from atrous.cli import STARTED, CLIError
    from atrous.failures import EXIT_ITEMS_FAILED, EXIT_OK
    from atrous.training import (
        TrainConfig,
        Trainer,
        TrainingError,
        apply_overrides,
        distributed_session,
        load_config,
    )
    from atrous.training.checkpoint import load_checkpoint
    from atrous.training.interrupt import EXIT_INTERRUPTED

    overrides = _overrides(args)
    try:
        if args.config:
            cfg = load_config(args.config, overrides)
            out = Path(args.out or Path("runs") / Path(args.config).stem)
        elif args.resume:
            out = Path(args.out) if args.out else None
            ckpt = Path(args.resume) if args.resume is not True else (out or Path()) / "last.pt"
            if args.resume is True and out is None:
                raise CLIError("--resume without --config needs --out (the run folder)")
            state = load_checkpoint(ckpt)
            cfg = apply_overrides(TrainConfig.from_dict(state["config"], str(ckpt)), overrides)
            out = out or ckpt.parent
        else:
            raise CLIError("give --config FILE (or --resume with --out to continue a run)")
        if not args.resume and (out / "last.pt").exists():
            raise CLIError(f"{out} already holds a run (last.pt); pass --resume or another --out")
        with distributed_session(cfg.device):
            trainer = Trainer(
                cfg, out, resume=args.resume, progress=not args.no_progress, started=STARTED
            )
            trainer.resume_hint = f"atrous train --resume --out {shlex.quote(str(out))}"
            try:
                record = trainer.train()
            except KeyboardInterrupt:
                if not trainer.interrupted:
                    raise
                return EXIT_INTERRUPTED  # a second Ctrl-C, said by the trainer
    except (ValueError, TypeError, FileNotFoundError, TrainingError) as e:
        raise CLIError(str(e)) from None
    if trainer.interrupted:  # the trainer said what it saved
        return EXIT_INTERRUPTED
    if trainer.rank != 0:
        return EXIT_OK
    print(f"done: {trainer.iteration} iterations; {out}/model.safetensors; last {record}")
    # the skipped samples were reported one by one and summed up by the trainer
    return EXIT_ITEMS_FAILED if trainer.skips else EXIT_OK
