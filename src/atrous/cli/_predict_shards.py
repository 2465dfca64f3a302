"""``atrous predict`` under torchrun and resumed runs: the flags (``--skip-existing``,
``--threads``), this process's share of the files, and the one summary over all processes.
The mechanics are :mod:`atrous.inference.shards`'.

Exit status under torchrun: the last process to finish prints the summary over every process
and exits 1 when any had a failure; the others exit 0 (a worker that exits non-zero makes
torchrun stop the rest at once, which would cut their shares short). A process that dies
(``kill -9``) makes torchrun stop the others and exit non-zero; nothing waits on it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.cli import CLIError
from atrous.cli._common import positive_int, resolve_device

if TYPE_CHECKING:
    from atrous.failures import FailureLog
    from atrous.inference.settings import InferenceSettings
    from atrous.inference.shards import Shard

__all__ = ["add_shard_args", "finish", "join_shard", "on_shard", "take_share"]


def add_shard_args(p: argparse.ArgumentParser) -> None:
    """``--skip-existing`` and ``--threads``."""
    p.add_argument(
        "--skip-existing",
        action="store_true",
        help="skip an input whose outputs all exist, and write only the missing outputs of the "
        "others (resume a killed run: outputs are written atomically, so one that exists is "
        "whole; see docs/large_inputs.md)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        metavar="N",
        help="CPU threads of each process (default: torch's; under torchrun, the machine's "
        "cores divided among its processes unless OMP_NUM_THREADS is set above 1)",
    )


def join_shard(args: argparse.Namespace) -> Shard:
    """This process's :class:`~atrous.inference.shards.Shard` (torchrun's environment), with
    torch's CPU threads set for it."""
    import torch

    from atrous.inference.shards import Shard

    try:
        shard = Shard.from_env()
    except ValueError as e:
        raise CLIError(str(e)) from None
    threads = shard.threads(args.threads)
    if threads is not None:
        torch.set_num_threads(threads)
    return shard


def on_shard(settings: InferenceSettings, shard: Shard) -> InferenceSettings:
    """``settings`` on this process's device: its ``LOCAL_RANK``'s GPU for ``--device cuda``
    under torchrun (one line if this machine has no such GPU)."""
    device = shard.device(str(settings.device))
    if device != settings.device:
        device = str(resolve_device(device))
    return settings.replace(device=device)


def take_share(
    shard: Shard, files: list[Path], out: Path, args: argparse.Namespace
) -> tuple[list[Path], list[str], int]:
    """This process's files to segment and their output names (named over all the files),
    and how many of its files ``--skip-existing`` skipped. The temporary files a killed run
    left for its outputs are removed first."""
    from atrous.inference.io import output_names
    from atrous.inference.shards import remove_stale_temps, skip_done

    mine, names = shard.take(files, output_names(files))
    remove_stale_temps(out, names, args.probs)
    if not args.skip_existing:
        return mine, names, 0
    return skip_done(mine, names, out, args.probs)


def finish(
    shard: Shard, log: FailureLog, done: int, skipped: int, out: Path, args: argparse.Namespace
) -> int:
    """Print the summary and return the exit status. One process: its summary. Several
    under torchrun: each says on stderr that it finished, the last to finish prints the
    summary over all and returns 1 if any had a failure, the others return 0. Several
    without torchrun's store (another launcher): each prints its own summary and status."""
    from atrous.failures import Failure
    from atrous.failures import FailureLog as Log
    from atrous.inference.shards import RankReport, launcher_store, post_report

    shown = skipped if args.skip_existing else None
    wording: dict[str, Any] = {"skipped": shown, "skipped_as": "skipped (outputs already there)"}
    if shard.world == 1:
        print(log.summary(done, "input", done_as=f"segmented into {out}", **wording))
        return log.exit_status
    who = f"rank {shard.rank} of {shard.world}"
    n = len(log.failures)
    print(
        f"atrous predict: {who} finished: {done} segmented, {skipped} skipped, {n} failed",
        file=sys.stderr,
        flush=True,
    )
    report = RankReport(shard.rank, done, skipped, [(f.item, f.problem) for f in log.failures])
    reports: list[RankReport] | None = None
    reason = "not started by torchrun"
    try:
        store = launcher_store()
        if store is not None:
            attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
            reports = post_report(store, report, shard.world, attempt)
    except Exception as e:  # the store unreachable: DistNetworkError, DistStoreError...
        store, reason = None, f"cannot reach torchrun's store ({type(e).__name__}: {e})"
    if store is None:
        print(f"atrous predict: note: {reason}: this summary covers {who} only", file=sys.stderr)
        own = Log(f"predict: {who}", failures=list(log.failures))
        print(own.summary(done, "input", done_as=f"segmented into {out}", **wording))
        return log.exit_status
    if reports is None:  # another process finishes last and summarizes
        return 0
    merged = Log("predict", failures=[Failure(*f) for r in reports for f in r.failures])
    if shown is not None:
        wording["skipped"] = sum(r.skipped for r in reports)
    done_as = f"segmented into {out} by {shard.world} processes"
    print(merged.summary(sum(r.done for r in reports), "input", done_as=done_as, **wording))
    return merged.exit_status
