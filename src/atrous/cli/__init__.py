"""The ``atrous`` command: one sub-command per module of this package.

Each module in :data:`COMMANDS` defines ``register(subparsers)``, which adds its parser and
sets ``func`` (a callable taking the parsed namespace and returning an exit code).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys
import time
from collections.abc import Sequence

# When the command started (perf_counter): a training time_limit counts from here.
STARTED = time.perf_counter()

# Sub-command modules, in the order `atrous --help` lists them.
COMMANDS: tuple[str, ...] = (
    "atrous.cli.models_cmd",
    "atrous.cli.convert_cmd",
    "atrous.cli.weights_cmd",
    "atrous.cli.export_cmd",
    "atrous.cli.demo_cmd",
    "atrous.cli.data_cmd",
    "atrous.cli.eval_cmd",
    "atrous.cli.crf_search_cmd",
    "atrous.cli.predict_cmd",
    "atrous.cli.serve_cmd",
    "atrous.cli.train_cmd",
)


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def _add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--debug`` on every command (and sub-command)."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if actions:
        for child in actions[0].choices.values():
            _add_common_flags(child)
        return
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an unexpected error"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atrous", description="DeepLab semantic segmentation: models, CRF, evaluation."
    )
    from atrous import __version__

    parser.add_argument("--version", action="version", version=f"atrous {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(sub)
    for child in sub.choices.values():
        _add_common_flags(child)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, except that an argument a subcommand does not know is refused by
    that subcommand (its usage, not the top-level one) with the flag it most likely meant."""
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    sub = _subparser(parser, getattr(args, "command", None))
    if sub is None:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    message = f"unrecognized arguments: {' '.join(extra)}"
    flags = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    for arg in extra:
        if arg.startswith("--"):
            close = difflib.get_close_matches(arg.split("=")[0], flags, n=1, cutoff=0.7)
            if close:
                message += f" (did you mean {close[0]}?)"
                break
    sub.error(message)


def _subparser(
    parser: argparse.ArgumentParser, command: str | None
) -> argparse.ArgumentParser | None:
    """The subcommand ``command``'s parser, or None."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            return action.choices[command]
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Exit status (:mod:`atrous.failures`): 0 all good, 1 some items
    failed (reported one line each), 2 the run could not start; 130 interrupted."""
    from atrous.failures import EXIT_CANNOT_START, EXIT_ITEMS_FAILED, FailFast

    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except CLIError as e:
        print(f"atrous {args.command}: error: {e}", file=sys.stderr)
        return EXIT_CANNOT_START
    except FailFast as e:
        print(
            f"atrous {args.command}: stopped at the first failure (--fail-fast): {e}",
            file=sys.stderr,
        )
        return EXIT_ITEMS_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an error no check caught: one line, the traceback on request
        if getattr(args, "debug", False):
            raise
        print(
            f"atrous {args.command}: error: {type(e).__name__}: {e} "
            "(this is unexpected: run again with --debug for the traceback and report it)",
            file=sys.stderr,
        )
        return EXIT_CANNOT_START


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
