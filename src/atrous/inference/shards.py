"""Segmenting a very large set of files with several processes, on one machine or many, and
resuming after a crash: the parts of ``atrous predict`` under ``torchrun``.

- :class:`Shard`: this process's place (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``LOCAL_WORLD_SIZE``, as torchrun sets them) and its share of the files (:meth:`Shard.take`:
  the list sorted by output name, every ``world``-th file from ``rank``), its GPU and its CPU
  threads. No process group: the shards follow from the environment alone.
- :func:`skip_done`: the files whose outputs all exist are skipped (``--skip-existing``); the
  outputs are written atomically (:mod:`atrous.inference.io`), so one that exists is whole.
- :func:`remove_stale_temps`: the temporary files a killed process left beside this shard's
  outputs.
- :class:`RankReport`, :class:`Meeting`: each rank posts its counts and failures to torchrun's
  own key-value store (and to a file in OUT) and leaves; the last rank to post gets every
  rank's report. Nothing waits on another rank, so a rank that dies hangs no other (torchrun
  then stops the job).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from atrous.fileio import atomic_write_bytes, temp_target
from atrous.inference.io import output_paths

__all__ = [
    "REPORTS_FOLDER",
    "Meeting",
    "RankReport",
    "Shard",
    "launcher_store",
    "remove_stale_temps",
    "skip_done",
]

# Where the ranks' reports go in torchrun's store (beside the rendezvous' own keys) and in OUT.
_KEY_PREFIX = "atrous/predict"
REPORTS_FOLDER = ".atrous-predict"


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"environment variable {name}={text!r} is not an integer") from None


@dataclass(frozen=True)
class Shard:
    """This process's rank among ``world`` processes (``local_rank`` among the
    ``local_world`` on this machine). ``Shard()`` is the whole job in one process."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    def __post_init__(self) -> None:
        if self.world < 1 or not 0 <= self.rank < self.world:
            raise ValueError(f"RANK={self.rank} must be in [0, WORLD_SIZE={self.world})")
        if self.local_world < 1 or not 0 <= self.local_rank < self.local_world:
            raise ValueError(
                f"LOCAL_RANK={self.local_rank} must be in [0, LOCAL_WORLD_SIZE={self.local_world})"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Shard:
        """The shard torchrun's environment describes (``RANK``, ``WORLD_SIZE``,
        ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; without the last two, all on this machine);
        one process when ``WORLD_SIZE`` is unset or 1. ValueError (one line) for a value that
        is not an integer or out of range."""
        env = os.environ if env is None else env
        world = _env_int(env, "WORLD_SIZE", 1)
        if world == 1:
            return cls()
        rank = _env_int(env, "RANK", 0)
        local = _env_int(env, "LOCAL_RANK", rank), _env_int(env, "LOCAL_WORLD_SIZE", world)
        return cls(rank, world, *local)

    def take(self, files: Sequence[Path], names: Sequence[str]) -> tuple[list[Path], list[str]]:
        """This rank's files and their output names: the files sorted by name (then path),
        every ``world``-th from ``rank``. Every rank that lists the same inputs gets a part of
        one partition, the parts differing in size by one at most; one process keeps the
        files in their order. ``names`` come from :func:`~atrous.inference.io.output_names`
        of *all* the files, so that they are the same whichever rank writes them."""
        if len(files) != len(names):
            raise ValueError(f"{len(files)} files but {len(names)} names")
        if self.world == 1:
            return list(files), list(names)
        order = sorted(range(len(files)), key=lambda i: (names[i], str(files[i])))
        mine = order[self.rank :: self.world]
        return [files[i] for i in mine], [names[i] for i in mine]

    def device(self, device: str) -> str:
        """``device`` for this process: plain ``cuda`` becomes the GPU of its
        ``LOCAL_RANK`` when there are several processes; others (``cpu``, ``cuda:1``) stay."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world > 1 else device

    def threads(self, requested: int | None, env: Mapping[str, str] | None = None) -> int | None:
        """CPU threads for this process (``torch.set_num_threads``), None to leave torch's:
        ``requested`` (``--threads``); else, with several processes on this machine, its
        cores divided among them, unless ``OMP_NUM_THREADS`` says otherwise (torchrun sets it
        to 1 itself when it is unset, so 1 does not count)."""
        env = os.environ if env is None else env
        if requested is not None:
            return requested
        if self.local_world == 1 or env.get("OMP_NUM_THREADS", "1").strip() not in ("", "1"):
            return None
        return max(1, _cores() // self.local_world)


def _cores() -> int:
    """The cores this process may run on (its affinity: taskset, cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def skip_done(
    files: Sequence[Path], names: Sequence[str], out_dir: str | os.PathLike, probs: bool
) -> tuple[list[Path], list[str], int]:
    """The files with an output missing (of those :func:`~atrous.inference.io.output_paths`
    names), their names, and how many were skipped because all theirs exist. An existing
    output is whole: every output is written atomically."""
    todo: list[Path] = []
    todo_names: list[str] = []
    for path, name in zip(files, names, strict=True):
        if not all(p.exists() for p in output_paths(out_dir, name, probs)):
            todo.append(path)
            todo_names.append(name)
    return todo, todo_names, len(files) - len(todo)


def remove_stale_temps(out_dir: str | os.PathLike, names: Sequence[str], probs: bool) -> int:
    """Remove the temporary files (:func:`atrous.fileio.temp_target`) that a killed process
    left for the outputs of ``names``; returns how many. Only these outputs' temporaries
    are touched, so ranks working beside this one on other files keep theirs."""
    mine: set[Path] = set()
    for name in names:
        mine.update(output_paths(out_dir, name, probs))
    removed = 0
    for folder in {p.parent for p in mine}:
        try:
            entries = list(os.scandir(folder))
        except OSError:  # not created yet
            continue
        for entry in entries:
            if ".tmp" in entry.name and temp_target(entry.path) in mine:
                try:
                    os.unlink(entry.path)
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


@dataclass
class RankReport:
    """What one rank did: files segmented, skipped (outputs there), and its failures as
    ``(item, problem)`` pairs."""

    rank: int
    done: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> bytes:
        d = {"rank": self.rank, "done": self.done, "skipped": self.skipped}
        return json.dumps({**d, "failures": self.failures}).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes) -> RankReport:
        d = json.loads(data)
        return cls(d["rank"], d["done"], d["skipped"], [(a, b) for a, b in d["failures"]])


def launcher_store(env: Mapping[str, str] | None = None, timeout: float = 60.0) -> Any | None:
    """A client of the key-value store that torchrun's agent serves (``MASTER_ADDR``,
    ``MASTER_PORT``; ``TORCHELASTIC_USE_AGENT_STORE=True``), or None when the processes were
    not started by torchrun. The agent outlives its workers, so a report posted there stays
    readable whichever rank exits first. Raises (e.g. ``DistNetworkError``) when it cannot
    be reached within ``timeout`` seconds."""
    env = os.environ if env is None else env
    if env.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or not env.get("MASTER_ADDR"):
        return None
    from torch.distributed import TCPStore

    return TCPStore(
        env["MASTER_ADDR"],
        int(env["MASTER_PORT"]),
        is_master=False,
        timeout=timedelta(seconds=timeout),
    )


class Meeting:
    """Where the ranks' reports meet at the end, no rank waiting for another.

    Each rank posts its report to torchrun's store and counts itself in; the rank that
    completes the count gets every report. Each also writes its report to
    ``OUT/.atrous-predict/<run>/rank-<K>.json`` (``run``: an id the ranks agree on through
    the store when they start), for when the store has gone: torchrun's first agent, which
    serves it, exits at most 5 minutes (its exit barrier) after its own processes end, so a
    process on another machine that finishes later reads the others' reports from there
    (OUT being one folder that every machine sees).
    """

    def __init__(self, world: int, store: Any | None, out_dir: str | os.PathLike, attempt: str):
        self.world, self.store = world, store
        self.prefix = f"{_KEY_PREFIX}/{attempt}"
        self.folder: Path | None = None
        if store is not None:  # the first rank here names the run
            run = store.compare_set(f"{self.prefix}/run", "", uuid.uuid4().hex).decode()
            self.folder = Path(out_dir) / REPORTS_FOLDER / run

    @classmethod
    def open(
        cls,
        shard: Shard,
        out_dir: str | os.PathLike,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[Meeting, str | None]:
        """The meeting of ``shard``'s job, and why its reports cannot meet (None when they
        can): one process, or processes not started by torchrun, or its store unreachable
        (within ``timeout`` seconds)."""
        env = os.environ if env is None else env
        attempt = env.get("TORCHELASTIC_RESTART_COUNT", "0")
        if shard.world == 1:
            return cls(1, None, out_dir, attempt), "one process"
        try:
            store = launcher_store(env, timeout)
            if store is None:
                return cls(shard.world, None, out_dir, attempt), "not started by torchrun"
            return cls(shard.world, store, out_dir, attempt), None
        except RuntimeError as e:  # DistNetworkError, DistStoreError
            problem = f"cannot reach torchrun's store ({type(e).__name__}: {e})"
            return cls(shard.world, None, out_dir, attempt), problem

    def post(self, report: RankReport) -> tuple[list[RankReport] | None, str | None]:
        """Post ``report``. Returns every rank's reports, in rank order, to the last rank to
        post; ``(None, None)`` to the others; ``(None, why)`` when this rank cannot tell."""
        if self.store is None or self.folder is None:
            return None, "not started by torchrun"
        try:  # before the store: the file must be there whenever the count is complete
            atomic_write_bytes(self._file(report.rank), report.to_json())
        except OSError as e:
            return None, f"cannot write {self.folder} ({e})"
        try:
            self.store.set(f"{self.prefix}/rank/{report.rank}", report.to_json())
            if self.store.add(f"{self.prefix}/posted", 1) < self.world:
                return None, None
            keys = [f"{self.prefix}/rank/{r}" for r in range(self.world)]
            return [RankReport.from_json(self.store.get(k)) for k in keys], None
        except RuntimeError as e:  # the store has gone: the files
            gone = f"torchrun's store has gone ({type(e).__name__})"
        missing = [r for r in range(self.world) if not self._file(r).exists()]
        if missing:
            return None, f"{gone} and {self.folder} holds no report of rank(s) {missing} yet"
        try:  # the last ranks may see all the files together: one of them summarizes
            os.close(os.open(self.folder / "summarized", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return None, None
        return [RankReport.from_json(self._file(r).read_bytes()) for r in range(self.world)], None

    def _file(self, rank: int) -> Path:
        assert self.folder is not None
        return self.folder / f"rank-{rank}.json"

    def tidy(self, keep: bool) -> None:
        """Once summarized: remove the reports of earlier runs (killed before they met), and
        this run's unless ``keep`` (they list failures the summary does not)."""
        if self.folder is None or not self.folder.parent.is_dir():
            return
        for run in self.folder.parent.iterdir():
            if run != self.folder or not keep:
                shutil.rmtree(run, ignore_errors=True)
        with contextlib.suppress(OSError):  # not empty: reports kept
            self.folder.parent.rmdir()
