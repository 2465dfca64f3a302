"""Reading checkpoint files: the tensors of a ``.safetensors`` or ``.pth`` file and its
metadata, with the wrappers of training scripts removed.

``.pth`` files are read with ``torch.load(weights_only=True)``: no code in them runs. When
torch refuses a file, :func:`describe_torch_failure` says what the file is instead (empty,
truncated, not a checkpoint, a pickle of Python objects) without unpickling anything.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import pickletools
import re
import shlex
import warnings
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import CheckpointError

StateDict = dict[str, Tensor]
Checkpoint = str | os.PathLike | Mapping[str, Tensor]

# Keys under which training scripts store the state dict, looked up in this order: an
# atrous checkpoint of a run with ema_decay holds the averaged weights (the ones validated
# and exported) as "model_ema" next to the live "model" it resumes from.
WRAPPER_KEYS = ("model_ema", "model_state", "state_dict", "model")


def read_state_dict(path: str | os.PathLike) -> tuple[StateDict, dict[str, str]]:
    """The tensors of a ``.safetensors`` or ``.pth``/``.pt``/``.bin`` file, and its metadata.

    Wrappers used by training scripts (``model_state`` as VainF, ``state_dict``, ``model``)
    are unwrapped, and DataParallel's ``module.`` prefix is removed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with warnings.catch_warnings():  # its pickle-protocol remark: our error says it all
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(f"{path}: {describe_torch_failure(path, e)}") from None
    try:
        return unwrap(obj), {}
    except CheckpointError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = dict(f.metadata() or {})
            return {k: f.get_tensor(k) for k in f.keys()}, meta  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).removeprefix("Error while deserializing header: ")
        hint = _torch_format_hint(path)
        raise CheckpointError(
            f"{path}: not a safetensors file, or a damaged one ({reason}){hint}"
        ) from None


def _head(path: Path, n: int = 16) -> bytes:
    with path.open("rb") as f:
        return f.read(n)


def _torch_format_hint(path: Path) -> str:
    head = _head(path)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "; it looks like a PyTorch checkpoint: rename it to .pth"
    return ""


def _looks_like_safetensors(head: bytes) -> bool:
    """An 8-byte little-endian header length, then the JSON header."""
    return len(head) > 8 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1e8


def describe_torch_failure(path: Path, error: Exception) -> str:
    """Why ``torch.load(path, weights_only=True)`` failed with ``error``, in one line that
    never repeats torch's advice to load with ``weights_only=False``."""
    head = _head(path)
    if not head:
        return "the file is empty (0 bytes)"
    if _looks_like_safetensors(head):
        return "a safetensors file: rename it to .safetensors"
    if head.startswith(b"PK"):
        return _describe_zip(path, error)
    if head[:1] == b"\x80":  # pickle protocol 2 or later
        return _describe_pickle(path, path.read_bytes(), error, zipped=False)
    return (
        "not a PyTorch checkpoint: neither a zip archive nor a pickle "
        f"(it starts with {head[:12]!r})"
    )


def _describe_zip(path: Path, error: Exception) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next((n for n in z.namelist() if n.rsplit("/", 1)[-1] == "data.pkl"), None)
            if pkl is None:
                return "a zip archive but not a PyTorch checkpoint (it has no data.pkl)"
            data = z.read(pkl)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError) as e:
        reason = _first_sentence(str(error)) if isinstance(error, RuntimeError) else str(e)
        return (
            "a truncated or corrupt zip archive (PyTorch's checkpoint format): "
            f"{reason}; download or save it again"
        )
    return _describe_pickle(path, data, error, zipped=True)


def _first_sentence(text: str, limit: int = 160) -> str:
    first = text.strip().split("\n")[0].split(". ")[0].rstrip(".")
    return first if len(first) <= limit else first[: limit - 3] + "..."


@dataclass
class PickleScan:
    """What a pickle stream holds, read from its opcodes (nothing is unpickled)."""

    globals: list[str] = field(default_factory=list)  # "module.name", in order
    strings: set[str] = field(default_factory=set)
    top_is_dict: list[bool] = field(default_factory=list)  # per pickle in the stream
    first_long: int | None = None  # the first pickle's integer (torch's legacy magic)


def scan_pickles(data: bytes, limit: int = 8) -> PickleScan:
    """The globals, strings and top-level kinds of up to ``limit`` pickles in ``data``.

    :func:`pickletools.genops` only decodes opcodes, so no code in ``data`` runs. Scanning
    stops quietly at the first bytes that are not a pickle (legacy torch files end with
    raw storage bytes)."""
    scan = PickleScan()
    stream = io.BytesIO(data)
    for _ in range(limit):
        if stream.tell() >= len(data):
            break
        recent: list[str] = []
        memo: dict[int, str] = {}
        first = None
        try:
            for op, arg, _ in pickletools.genops(stream):
                name = op.name
                if first is None and name not in ("PROTO", "FRAME"):
                    first = name
                if isinstance(arg, str) and ("UNICODE" in name or "STRING" in name):
                    recent.append(arg)
                    scan.strings.add(arg)
                elif name == "GLOBAL":
                    scan.globals.append(str(arg).replace(" ", "."))
                elif name == "STACK_GLOBAL" and len(recent) >= 2:
                    scan.globals.append(".".join(recent[-2:]))
                elif name == "MEMOIZE" and recent:
                    memo[len(memo)] = recent[-1]
                elif name in ("BINPUT", "LONG_BINPUT", "PUT") and recent:
                    memo[int(arg)] = recent[-1]
                elif name in ("BINGET", "LONG_BINGET", "GET") and int(arg) in memo:
                    recent.append(memo[int(arg)])
                elif name in ("LONG1", "LONG4", "LONG", "INT") and scan.first_long is None:
                    scan.first_long = int(arg)
        except Exception:
            break
        scan.top_is_dict.append(first == "EMPTY_DICT")
    return scan


def _allowed_globals() -> set[str]:
    """The globals ``weights_only=True`` accepts (torch's tensor rebuilders and the like)."""
    try:
        from torch import _weights_only_unpickler as wou

        allowed = set(wou._get_allowed_globals())
    except (ImportError, AttributeError):
        allowed = set()
    for g in torch.serialization.get_safe_globals():
        obj = g[0] if isinstance(g, tuple) else g
        allowed.add(f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', obj)}")
    return allowed


_TORCH_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _describe_pickle(path: Path, data: bytes, error: Exception, zipped: bool) -> str:
    scan = scan_pickles(data)
    legacy = not zipped and scan.first_long == torch.serialization.MAGIC_NUMBER
    complete = bool(scan.top_is_dict)  # at least one pickle ran to its STOP opcode
    if isinstance(error, EOFError) or "unexpected EOF" in str(error) or not complete:
        return "a pickle that ends early: the file is truncated; download or save it again"
    allowed = _allowed_globals()
    named = _TORCH_GLOBAL.findall(str(error)) + [g for g in scan.globals if g not in allowed]
    names = list(dict.fromkeys(named))
    if not isinstance(error, pickle.UnpicklingError) and not names:
        return f"cannot be read as a PyTorch checkpoint ({_first_sentence(str(error))})"
    what = "a PyTorch pickle" if zipped or legacy else "a plain Python pickle (not torch.save's)"
    objects = f" ({', '.join(names[:3])})" if names else ""
    main = 0 if zipped or not legacy else 3
    top_is_dict = len(scan.top_is_dict) > main and scan.top_is_dict[main]
    return (
        f"{what} holding Python objects beyond tensors{objects}; atrous never executes code "
        "from a checkpoint, so it reads tensors only. If you trust the file, save its "
        f"weights alone, then convert them: {_recipe(path, scan, top_is_dict, zipped or legacy)}"
    )


def _recipe(path: Path, scan: PickleScan, top_is_dict: bool, torch_format: bool) -> str:
    """Shell commands that turn a trusted pickled checkpoint into a weights-only file."""
    out = path.with_name(f"{path.stem}_weights.pth")
    if torch_format:
        loader = f"c = torch.load({json.dumps(str(path))}, weights_only=False)"
    else:
        loader = f'import pickle; c = pickle.load(open({json.dumps(str(path))}, "rb"))'
    key = next((k for k in WRAPPER_KEYS if k in scan.strings), None)
    if not top_is_dict:
        pick = "m = c"
    elif key is not None:
        pick = f"m = c[{json.dumps(key)}]"
    else:
        pick = "m = {k: v for k, v in c.items() if isinstance(v, torch.Tensor)}"
    code = (
        f"import torch; {loader}; {pick}; "
        f'torch.save(m.state_dict() if hasattr(m, "state_dict") else m, {json.dumps(str(out))})'
    )
    converted = shlex.quote(str(path.with_name(f"{path.stem}.safetensors")))
    return f"python -c {shlex.quote(code)} && atrous convert {shlex.quote(str(out))} {converted}"


def unwrap(obj: Any) -> StateDict:
    """The state dict inside a checkpoint object (see :func:`read_state_dict`)."""
    if isinstance(obj, Mapping):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError("holds no state dict (expected a mapping of names to tensors)")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, Tensor)}
    if not sd:
        raise CheckpointError("holds no tensors")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """How errors and ``model.metadata["weights"]`` name a checkpoint: its path, or
    ``"state dict"`` for one in memory."""
    return str(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else "state dict"


def read_checkpoint(checkpoint: Checkpoint) -> tuple[StateDict, dict[str, str]]:
    """Tensors and metadata of a file (:func:`read_state_dict`) or of an in-memory state
    dict (:func:`unwrap`; no metadata)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return read_state_dict(checkpoint)
    return unwrap(checkpoint), {}
