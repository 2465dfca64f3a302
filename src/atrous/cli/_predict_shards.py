"""``atrous predict`` under torchrun and resumed runs: the flags (``--skip-existing``,
``--threads``), this process's share of the files, and the one summary over all processes.
The mechanics are :mod:`atrous.inference.shards`'.

Exit status under torchrun: the last process to finish prints the summary over every process
and exits 1 when any had a failure; the others exit 0 (a worker that exits non-zero makes
torchrun stop the rest at once, which would cut their shares short). A process that dies
(``kill -9``) makes torchrun stop the others on its machine and exit non-zero; nothing waits
on it. Started otherwise (``RANK`` and ``WORLD_SIZE`` set by hand), the processes share the
files alike, and each prints its own summary and exits with its own status.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atrous.cli import CLIError
from atrous.cli._common import positive_int, resolve_device

if TYPE_CHECKING:
    from atrous.failures import FailureLog
    from atrous.inference.settings import InferenceSettings
    from atrous.inference.shards import Meeting, Shard

__all__ = ["Share", "add_shard_args", "finish", "join_job", "on_share", "take_share"]


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


@dataclass(frozen=True)
class Share:
    """This process's part of the job: its shard (files, device, threads) and the meeting of
    the processes' reports, or why they cannot meet (``problem``)."""

    shard: Shard
    meeting: Meeting
    problem: str | None

    @property
    def rank(self) -> int:
        return self.shard.rank


def join_job(args: argparse.Namespace) -> Share:
    """This process's :class:`Share` of the job torchrun's environment describes, torch's CPU
    threads set for it (:meth:`~atrous.inference.shards.Shard.threads`)."""
    import torch

    from atrous.inference.shards import Meeting, Shard

    try:
        shard = Shard.from_env()
    except ValueError as e:
        raise CLIError(str(e)) from None
    threads = shard.threads(args.threads)
    if threads is not None:
        torch.set_num_threads(threads)
    return Share(shard, *Meeting.open(shard, args.out))


def on_share(settings: InferenceSettings, share: Share) -> InferenceSettings:
    """``settings`` on this process's device: its ``LOCAL_RANK``'s GPU for ``--device cuda``
    under torchrun (one line if this machine has no such GPU)."""
    device = share.shard.device(str(settings.device))
    if device != settings.device:
        device = str(resolve_device(device))
    return settings.replace(device=device)


def take_share(
    share: Share, files: list[Path], out: Path, args: argparse.Namespace
) -> tuple[list[Path], list[str], int]:
    """This process's files to segment and their output names (named over all the files),
    and how many of its files ``--skip-existing`` skipped. The temporary files a killed run
    left for its outputs are removed first."""
    from atrous.inference.io import output_names
    from atrous.inference.shards import remove_stale_temps, skip_done

    mine, names = share.shard.take(files, output_names(files))
    remove_stale_temps(out, names, args.probs)
    if not args.skip_existing:
        return mine, names, 0
    return skip_done(mine, names, out, args.probs)


def finish(
    share: Share, log: FailureLog, done: int, skipped: int, out: Path, args: argparse.Namespace
) -> int:
    """Print the summary and return the exit status. One process: its summary. Several
    under torchrun: each says on stderr that it finished, the last to finish prints the
    summary over all and returns 1 if any had a failure, the others return 0. Several
    whose reports cannot meet: each prints its own summary and returns its own status."""
    from atrous.failures import Failure
    from atrous.failures import FailureLog as Log
    from atrous.inference.shards import RankReport

    shown = skipped if args.skip_existing else None
    wording: dict[str, Any] = {"skipped": shown, "skipped_as": "skipped (outputs already there)"}
    rank, world = share.shard.rank, share.shard.world
    if world == 1:
        print(log.summary(done, "input", done_as=f"segmented into {out}", **wording))
        return log.exit_status
    who = f"rank {rank} of {world}"
    n = len(log.failures)
    print(
        f"atrous predict: {who} finished: {done} segmented, {skipped} skipped, {n} failed",
        file=sys.stderr,
        flush=True,
    )
    report = RankReport(rank, done, skipped, [(f.item, f.problem) for f in log.failures])
    reports, why = (None, share.problem) if share.problem else share.meeting.post(report)
    if why is not None:
        print(f"atrous predict: note: {why}: this summary covers {who} only", file=sys.stderr)
        own = Log(f"predict: {who}", failures=list(log.failures))
        print(own.summary(done, "input", done_as=f"segmented into {out}", **wording))
        return log.exit_status
    if reports is None:  # another process finishes last and summarizes
        return 0
    merged = Log("predict", failures=[Failure(*f) for r in reports for f in r.failures])
    if shown is not None:
        wording["skipped"] = sum(r.skipped for r in reports)
    keep = len(merged.failures) > 3  # more than the summary lists: the reports keep them
    share.meeting.tidy(keep)
    listed_in = f"{share.meeting.folder}/rank-*.json" if keep else None
    done_as = f"segmented into {out} by {world} processes"
    total = sum(r.done for r in reports)
    print(merged.summary(total, "input", done_as=done_as, listed_in=listed_in, **wording))
    return merged.exit_status
