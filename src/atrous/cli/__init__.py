"""The ``atrous`` command: one sub-command per module of this package.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its parser and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Sub-command modules, in the order `atrous --help` lists them.
COMMANDS: tuple[str, ...] = (
    "atrous.cli.models_cmd",
    "atrous.cli.convert_cmd",
    "atrous.cli.demo_cmd",
    "atrous.cli.data_cmd",
    "atrous.cli.eval_cmd",
    "atrous.cli.crf_search_cmd",
    "atrous.cli.predict_cmd",
    "atrous.cli.train_cmd",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atrous", description="DeepLab semantic segmentation: models, CRF, evaluation."
    )
    from atrous import __version__

    parser.add_argument("--version", action="version", version=f"atrous {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"atrous {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
