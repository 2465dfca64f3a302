"""TensorFlow V2 checkpoints (tensor bundles) read with NumPy alone, no TensorFlow.

A checkpoint ``PREFIX`` is ``PREFIX.index``, a LevelDB table (github.com/google/leveldb,
doc/table_format.md; parsed in :mod:`._sstable`) mapping each tensor name to a
``BundleEntryProto`` (the empty key: a ``BundleHeaderProto``), and the data files
``PREFIX.data-SSSSS-of-NNNNN`` holding each tensor's raw little-endian C-order bytes at
``[offset, offset + size)`` (tensorflow/core/util/tensor_bundle/tensor_bundle.{h,cc},
tensorflow/core/protobuf/tensor_bundle.proto). The protobuf messages are decoded by hand in
:mod:`._protobuf`: some 100 lines, no dependency on ``protobuf`` or on generated code that
must match its version.

Every block of the index and every tensor is checked against its masked CRC-32C
(``google-crc32c``, hardware CRC32 instructions: ~13 GB/s, so verifying costs next to nothing).
bfloat16 tensors are returned as float32 (a bfloat16 is the top half of a float32, so the
16-bit shift is exact); every other supported dtype as itself. Strings, quantized types and
partitioned (sliced) variables are refused with the tensor's name.

``path`` is the prefix (``.../model.ckpt``, ``.../model.ckpt-30000``), its ``.index`` or a
``.data-*`` file, a folder holding one checkpoint, or a ``.tar.gz``/``.tgz``/``.tar`` as the
TF model zoo ships them (a file with another name is read as a tarball when its first bytes
are gzip's or tar's: a download's ``.partial``). Tarballs are read in one pass, their checkpoint members into memory,
never unpacked to disk (:mod:`._tarball`: only plain files and folders with relative names,
at most ``max_tar_bytes`` unpacked in all).
"""

from __future__ import annotations

import math
import os
import re
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ._protobuf import BundleEntry, BundleHeader, ProtoError, decode_entry, decode_header
from ._sstable import TableError, masked_crc32c, table_entries
from ._tarball import read_members
from .errors import CheckpointError

DEFAULT_MAX_TAR_BYTES = 4 << 30  # unpacked bytes a tarball may hold (the zoo's are < 1 GiB)
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar")
TENSOR_BUNDLE_VERSION = 1  # kTensorBundleVersion: what a reader of this format can consume

# TF DataType enum (tensorflow/core/framework/types.proto) -> (name, stored numpy dtype).
DTYPES: dict[int, tuple[str, str]] = {
    1: ("float32", "<f4"),
    2: ("float64", "<f8"),
    3: ("int32", "<i4"),
    4: ("uint8", "u1"),
    5: ("int16", "<i2"),
    6: ("int8", "i1"),
    8: ("complex64", "<c8"),
    9: ("int64", "<i8"),
    10: ("bool", "?"),
    14: ("bfloat16", "<u2"),  # returned as float32
    17: ("uint16", "<u2"),
    18: ("complex128", "<c16"),
    19: ("float16", "<f2"),
    22: ("uint32", "<u4"),
    23: ("uint64", "<u8"),
}
UNSUPPORTED_DTYPES = {
    7: "string",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
}

# Optimizer slots (TF1 optimizers name them after themselves, numbered when there are
# several), exponential moving averages, and training state: not model weights.
_SLOT = re.compile(
    r"/(Momentum|Adam|RMSProp|Adagrad|Adadelta|Ftrl|ExponentialMovingAverage)(_\d+)?$"
)
_TRAINING_STATE = {"global_step", "beta1_power", "beta2_power", "_CHECKPOINTABLE_OBJECT_GRAPH"}
_DATA_FILE = re.compile(r"\.data-\d{5}-of-\d{5}$")


def is_model_tensor(name: str) -> bool:
    """False for optimizer slots (``.../Momentum``, ``.../Adam_1``, ...), moving averages
    (``.../ExponentialMovingAverage``), ``global_step`` and other training state."""
    if name in _TRAINING_STATE or _SLOT.search(name) or "/.OPTIMIZER_SLOT/" in name:
        return False
    return not name.startswith(("optimizer/", "save_counter/"))


def dtype_name(dtype: int) -> str:
    """The TF name of a DataType enum value (``float32``, ``bfloat16``, ``string``, ...)."""
    if dtype in DTYPES:
        return DTYPES[dtype][0]
    return UNSUPPORTED_DTYPES.get(dtype, f"DataType {dtype}")


def list_tf_checkpoint(
    path: str | os.PathLike, *, model_only: bool = True, max_tar_bytes: int = DEFAULT_MAX_TAR_BYTES
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Each tensor's TF dtype name and shape, from the index alone (no tensor data is read).

    ``model_only`` drops what :func:`is_model_tensor` rejects, as :func:`read_tf_checkpoint`.
    """
    bundle = _open_bundle(Path(path), want_data=False, max_tar_bytes=max_tar_bytes)
    _, entries = _parse_index(bundle)
    return {
        name: (dtype_name(e.dtype), e.shape)
        for name, e in entries.items()
        if is_model_tensor(name) or not model_only
    }


def read_tf_checkpoint(
    path: str | os.PathLike, *, model_only: bool = True, max_tar_bytes: int = DEFAULT_MAX_TAR_BYTES
) -> dict[str, np.ndarray]:
    """The tensors of a TF V2 checkpoint, by name (index order), as writable NumPy arrays.

    ``model_only`` drops optimizer slots, moving averages and ``global_step`` (see
    :func:`is_model_tensor`); ``False`` returns every tensor. A tarball may unpack to at most
    ``max_tar_bytes`` (4 GiB by default). Raises :class:`CheckpointError` naming the file and
    the problem for anything damaged or unsupported (:class:`FileNotFoundError` for no file).
    """
    bundle = _open_bundle(Path(path), want_data=True, max_tar_bytes=max_tar_bytes)
    header, entries = _parse_index(bundle)
    wanted = {n: e for n, e in entries.items() if is_model_tensor(n) or not model_only}
    out: dict[str, np.ndarray] = {}
    with ExitStack() as stack:
        shards: dict[int, _Shard] = {}
        for name, entry in sorted(wanted.items(), key=lambda t: (t[1].shard_id, t[1].offset)):
            dtype = _check_entry(bundle.label, header, name, entry)
            if entry.shard_id not in shards:
                shards[entry.shard_id] = bundle.open_shard(entry, header.num_shards, stack)
            out[name] = _read_tensor(shards[entry.shard_id], name, entry, dtype)
    return {name: out[name] for name in wanted}


@dataclass
class _Shard:
    """A data file: on disk (``file``) or a tarball member in memory (``data``)."""

    label: str  # as messages name it
    size: int
    file: BinaryIO | None = None
    data: memoryview | None = None

    def read(self, offset: int, size: int) -> bytes:
        if self.data is not None:
            return bytes(self.data[offset : offset + size])
        assert self.file is not None
        self.file.seek(offset)
        return self.file.read(size)


@dataclass
class _Bundle:
    """A checkpoint's index and the way to its data files (on disk, or tarball members)."""

    label: str  # the index, as messages name it
    index: bytes
    prefix: str
    tarball: Path | None = None
    members: dict[str, bytearray] = field(default_factory=dict)

    def open_shard(self, entry: BundleEntry, num_shards: int, stack: ExitStack) -> _Shard:
        name = f"{self.prefix}.data-{entry.shard_id:05d}-of-{num_shards:05d}"
        which = f"shard {entry.shard_id + 1} of {num_shards}"
        if self.tarball is not None:
            if name not in self.members:
                raise CheckpointError(f"{self.tarball}: no member {name} ({which}): incomplete")
            data = self.members[name]
            return _Shard(f"{self.tarball}, member {name}", len(data), data=memoryview(data))
        try:
            file = stack.enter_context(open(name, "rb"))  # noqa: SIM115
        except FileNotFoundError:
            raise CheckpointError(
                f"{self.label}: its data file {name} is missing ({which})"
            ) from None
        except OSError as e:
            raise CheckpointError(f"{name}: cannot be read ({e.strerror})") from None
        return _Shard(name, os.fstat(file.fileno()).st_size, file=file)


def _parse_index(bundle: _Bundle) -> tuple[BundleHeader, dict[str, BundleEntry]]:
    header, entries = None, {}
    try:
        for key, value in table_entries(bundle.index):
            if not key:
                try:
                    header = decode_header(value)
                except ProtoError as e:
                    raise TableError(f"a bad BundleHeaderProto ({e})") from None
            elif key[0] != 0:  # keys from byte 0 are the slices of a partitioned variable
                name = key.decode("utf-8", errors="backslashreplace")
                try:
                    entries[name] = decode_entry(value)
                except ProtoError as e:
                    raise TableError(f"tensor {name!r}: a bad BundleEntryProto ({e})") from None
    except TableError as e:
        raise CheckpointError(f"{bundle.label}: {e}") from None
    if header is None:
        raise CheckpointError(
            f"{bundle.label}: no bundle header (the empty key): a LevelDB table, "
            "but not a TensorFlow V2 checkpoint index"
        )
    if header.big_endian:
        raise CheckpointError(f"{bundle.label}: a big-endian checkpoint: not supported")
    if header.min_consumer > TENSOR_BUNDLE_VERSION:
        raise CheckpointError(
            f"{bundle.label}: written in tensor-bundle format version {header.min_consumer}, "
            f"newer than the version {TENSOR_BUNDLE_VERSION} this reader knows"
        )
    if header.num_shards < 1:
        raise CheckpointError(f"{bundle.label}: the header says {header.num_shards} data shards")
    return header, entries


def _check_entry(label: str, header: BundleHeader, name: str, e: BundleEntry) -> np.dtype:
    """The stored dtype of a tensor the reader can return, or a CheckpointError why not."""
    what = f"{label}: tensor {name!r}"
    if e.num_slices:
        raise CheckpointError(f"{what} is partitioned into {e.num_slices} slices: not supported")
    if e.dtype not in DTYPES:
        raise CheckpointError(f"{what} has dtype {dtype_name(e.dtype)}: not supported")
    if any(d < 0 for d in e.shape):
        raise CheckpointError(f"{what} has a shape with an unknown size {list(e.shape)}")
    if not 0 <= e.shard_id < header.num_shards or e.offset < 0:
        raise CheckpointError(
            f"{what} is in shard {e.shard_id} at offset {e.offset}, but the header counts "
            f"{header.num_shards} shard{'s' if header.num_shards != 1 else ''} from 0"
        )
    dtype = np.dtype(DTYPES[e.dtype][1])
    expected = math.prod(e.shape) * dtype.itemsize
    if e.size != expected:
        raise CheckpointError(
            f"{what} has {e.size} bytes, but its shape {list(e.shape)} of "
            f"{dtype_name(e.dtype)} needs {expected}"
        )
    return dtype


def _read_tensor(shard: _Shard, name: str, e: BundleEntry, dtype: np.dtype) -> np.ndarray:
    end = e.offset + e.size
    data = b""
    if end <= shard.size:
        data = shard.read(e.offset, e.size)
    if len(data) != e.size:
        raise CheckpointError(
            f"{shard.label}: truncated: tensor {name!r} is at bytes [{e.offset}, {end}), "
            f"the file has {shard.size}"
        )
    crc = masked_crc32c(data)
    if crc != e.crc32c:
        raise CheckpointError(
            f"{shard.label}: tensor {name!r} is damaged: the crc32c of its {e.size} bytes is "
            f"{crc:#010x}, the index says {e.crc32c:#010x}"
        )
    if e.dtype == 14:  # bfloat16: the top 16 bits of a float32
        bits = np.frombuffer(data, dtype).astype(np.uint32) << np.uint32(16)
        return bits.view(np.float32).reshape(e.shape)
    return np.frombuffer(data, dtype).reshape(e.shape).copy()


def _open_bundle(path: Path, *, want_data: bool, max_tar_bytes: int) -> _Bundle:
    """The checkpoint at ``path``, in any of the forms :func:`read_tf_checkpoint` takes."""
    if path.is_file() and _is_tarball(path):
        return _open_tarball(path, want_data=want_data, max_bytes=max_tar_bytes)
    prefix = _prefix(path)
    index = Path(f"{prefix}.index")
    try:
        data = index.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{index}: cannot be read ({e.strerror})") from None
    return _Bundle(str(index), data, str(prefix))


def is_tf_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a TensorFlow checkpoint in a form :func:`read_tf_checkpoint` reads:
    a prefix with a ``.index`` beside it, the ``.index`` or a ``.data-*`` file, a folder
    holding a ``.index``, or a ``.tar.gz``/``.tgz``/``.tar``."""
    p = Path(path)
    name = p.name.lower()
    if name.endswith(TAR_SUFFIXES) or name.endswith(".index") or _DATA_FILE.search(name):
        return True
    if p.is_dir():
        return any(p.glob("*.index"))
    return Path(f"{p}.index").is_file()


def _is_tarball(path: Path) -> bool:
    """A tarball by its name, or, for a file not named as an index or data file (a download's
    ``.partial``), by its first bytes: gzip's magic or tar's ``ustar``."""
    name = path.name.lower()
    if name.endswith(TAR_SUFFIXES):
        return True
    if name.endswith(".index") or _DATA_FILE.search(name):
        return False
    with open(path, "rb") as f:
        head = f.read(262)
    return head[:2] == b"\x1f\x8b" or head[257:262] == b"ustar"


def _prefix(path: Path) -> Path:
    """The checkpoint prefix that ``path`` (a prefix, an index or data file, a folder) names."""
    if path.is_dir():
        indexes = sorted(p for p in path.glob("*.index") if p.is_file())
        if len(indexes) != 1:
            names = [p.name for p in indexes]
            raise CheckpointError(
                f"{path}: {_count_indexes(names, 'file', 'give the prefix of one')}"
            )
        return indexes[0].with_name(indexes[0].name[: -len(".index")])
    if path.name.endswith(".index"):
        return path.with_name(path.name[: -len(".index")])
    if _DATA_FILE.search(path.name):
        return path.with_name(_DATA_FILE.sub("", path.name))
    if Path(f"{path}.index").is_file():
        return path
    if path.exists():
        raise CheckpointError(
            f"{path}: not a TensorFlow checkpoint: give its prefix (model.ckpt), its .index, "
            "the folder holding it, or a .tar.gz/.tgz/.tar"
        )
    raise FileNotFoundError(f"{path}: no such file, and no {path.name}.index beside it")


def _count_indexes(names: list[str], kind: str, fix: str) -> str:
    if not names:
        return f"no .index {kind}: not a TensorFlow checkpoint"
    return f"{len(names)} checkpoints (.index {kind}s: {', '.join(names)}): {fix}"


def _open_tarball(path: Path, *, want_data: bool, max_bytes: int) -> _Bundle:
    """The one checkpoint in a tarball, its index (and data files) read into memory."""

    def wanted(name: str) -> bool:
        return name.endswith(".index") or (want_data and bool(_DATA_FILE.search(name)))

    members = read_members(path, wanted, max_bytes=max_bytes)
    indexes = [name for name in members if name.endswith(".index")]
    if len(indexes) != 1:
        raise CheckpointError(
            f"{path}: {_count_indexes(indexes, 'member', 'unpack it and give the prefix of one')}"
        )
    index = indexes[0]
    label, prefix = f"{path}, member {index}", index[: -len(".index")]
    return _Bundle(label, bytes(members[index]), prefix, path, members)
