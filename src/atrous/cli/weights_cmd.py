"""``atrous weights``: the registry of published weights and its cache.

``list`` (the table, with each entry's headline number and whether it is cached), ``info NAME``
(every recorded fact, its source and the commands that reproduce the reported numbers),
``fetch NAME...`` (download and check), ``verify [NAME...]`` (re-check cached copies; exit 1
when one fails) and ``import FILE [--name NAME]`` (a file downloaded by hand: checked, then
placed in the cache).
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "weights",
        help="published weights: list, info, fetch, verify, import",
        description="The registry of published weights (torchvision, the TF DeepLab model "
        "zoo) with their reported metrics and protocols, and the download cache "
        "($ATROUS_HOME, else $XDG_CACHE_HOME/atrous; ATROUS_OFFLINE=1 never downloads; "
        "ATROUS_MIRROR=URL/ fetches URL/<file name>). Any command that takes weights takes "
        "a registry name too: atrous predict tf:xception65_coco_voc_trainaug photo.jpg -o out/",
    )
    cmds = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    ls = cmds.add_parser("list", help="the registry, with headline metrics")
    ls.add_argument("--kind", choices=("segmentation", "backbone"), help="only this kind")
    ls.add_argument("--json", action="store_true", help="print JSON (each entry's meta)")
    ls.set_defaults(func=run_list)
    info = cmds.add_parser("info", help="everything recorded about one entry")
    info.add_argument("name", help="registry name, e.g. tf:xception65_coco_voc_trainaug")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=run_info)
    fetch = cmds.add_parser("fetch", help="download and check entries (once)")
    fetch.add_argument("names", nargs="+", metavar="NAME")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    fetch.set_defaults(func=run_fetch)
    verify = cmds.add_parser("verify", help="check the cached copies (all, or NAME...)")
    verify.add_argument("names", nargs="*", metavar="NAME")
    verify.set_defaults(func=run_verify)
    imp = cmds.add_parser("import", help="check a hand-downloaded file and place it in the cache")
    imp.add_argument("file", help="the downloaded file")
    imp.add_argument("--name", help="its registry name (default: found from the file name)")
    imp.set_defaults(func=run_import)


def _errors_as_cli():
    """The errors a user can cause here, for ``except``: printed as one line (exit 2)."""
    from atrous.weights import CheckpointError

    return (CheckpointError, FileNotFoundError, OSError)


def run_list(args: argparse.Namespace) -> int:
    from atrous.weights import registry
    from atrous.weights.cache import weights_dir

    entries = [e for e in registry.ENTRIES if args.kind in (None, e.kind)]
    if args.json:
        print(json.dumps([{"name": e.name, **e.meta} for e in entries], indent=1, default=str))
        return 0
    print(f"{'name':44} {'model / backbone':28} {'headline (as reported)':58} cached")
    for e in entries:
        cached = "yes" if (weights_dir() / e.file_name).is_file() else "-"
        top = e.headline
        split = top.split.split(" (")[0] if top else ""
        headline = f"{top.value:g}% {top.name}, {split}" if top else "(none reported)"
        print(f"{e.name:44} {e.arch:28} {headline:58} {cached}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from atrous.cli import CLIError
    from atrous.weights import get_weights

    try:
        entry = get_weights(args.name)
    except _errors_as_cli() as e:
        raise CLIError(str(e)) from None
    if args.json:
        print(json.dumps({"name": entry.name, **entry.meta}, indent=1, default=str))
        return 0
    for key, value in info_rows(entry):
        print(f"{key:12} {value}")
    return 0


def info_rows(entry: Any) -> list[tuple[str, str]]:
    """(label, text) lines of ``atrous weights info``."""
    from atrous.weights.cache import weights_dir
    from atrous.weights.entry import FORMATS

    build = ", ".join(f"{k}={v}" for k, v in entry.build.items()) or "the source's own"
    pre = entry.preprocessing
    rows = [
        ("name", entry.name),
        ("kind", entry.kind),
        ("model", f"{entry.arch} (build options: {build})"),
        (
            "file",
            f"{entry.file_name} ({FORMATS[entry.format]}"
            + (f", {entry.size_mb:g} MB)" if entry.size_mb else ")"),
        ),
        *(("url", u) for u in entry.urls),
        *(("published", u) for u in entry.published_urls),
        ("integrity", entry.integrity),
        ("trained on", entry.dataset),
        ("classes", entry.classes),
        (
            "preprocess",
            f"mean {list(pre.mean)}, std {list(pre.std)}"
            + (f", shorter side resized to {pre.resize_shorter}" if pre.resize_shorter else ""),
        ),
    ]
    if entry.num_params:
        rows.append(("parameters", f"{entry.num_params:,}"))
    rows += [("metric", str(m)) for m in entry.metrics]
    rows += [("reproduce", c) for c in reproduce_commands(entry)]
    rows += [("licence", entry.license), ("source", entry.source)]
    rows += [(k, v) for k, v in (("unknown", entry.unknown), ("notes", entry.notes)) if v]
    cached = weights_dir() / entry.file_name
    rows.append(("cached", str(cached) if cached.is_file() else "no (atrous weights fetch)"))
    return rows


def reproduce_commands(entry: Any) -> list[str]:
    """``atrous eval`` lines with each metric's inference settings (segmentation entries)."""
    if entry.kind != "segmentation":
        return []
    lines = []
    for m in entry.metrics:
        if m.name != "mIoU":
            continue
        if " test" in m.split:
            lines.append(f"{m.split}: scored by the benchmark's evaluation server  # {m.value:g}%")
            continue
        flags = ""
        if m.output_stride and m.output_stride != entry.build.get("output_stride"):
            flags += f" --output-stride {m.output_stride}"
        if tuple(m.scales) != (1.0,):
            flags += " --scales " + ",".join(f"{s:g}" for s in m.scales)
        flags += " --flip" if m.flip else ""
        if entry.format == "tf_zoo_tarball":  # the zoo's eval.py: padded to its eval crop
            flags += " --protocol tf-zoo"
        lines.append(f"atrous eval {entry.name} --data ROOT --split val{flags}  # {m.value:g}%")
    return lines


def run_fetch(args: argparse.Namespace) -> int:
    from atrous.cli import CLIError
    from atrous.weights import fetch

    for name in args.names:
        try:
            path = fetch(name, progress=False if args.no_progress else None)
        except _errors_as_cli() as e:
            raise CLIError(str(e)) from None
        print(f"{name}: {path}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from atrous.cli import CLIError
    from atrous.failures import EXIT_ITEMS_FAILED, EXIT_OK
    from atrous.weights.hub import verify

    try:
        states = verify(args.names or None)
    except _errors_as_cli() as e:
        raise CLIError(str(e)) from None
    if not states:
        print("no cached weights (atrous weights fetch NAME)")
    for s in states:
        print(f"{'ok  ' if s.ok else 'FAIL'} {s.entry.name}: {s.path or '-'}: {s.message}")
    return EXIT_OK if all(s.ok for s in states) else EXIT_ITEMS_FAILED


def run_import(args: argparse.Namespace) -> int:
    from atrous.cli import CLIError
    from atrous.weights.hub import import_file

    try:
        entry, path, checks = import_file(args.file, args.name)
    except _errors_as_cli() as e:
        raise CLIError(f"{e} (not imported)") from None
    print(f"{entry.name}: {path} ({checks})")
    return 0
