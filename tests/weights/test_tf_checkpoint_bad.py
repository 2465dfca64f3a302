"""Damaged, unsupported and hostile TF checkpoints, each made in the test from the good fixture:
every one gives a one-line :class:`CheckpointError` that names the file and the problem."""

from __future__ import annotations

import io
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from tf_writer import (
    Entry,
    Header,
    Table,
    encode_entry,
    encode_header,
    write_index,
    write_tarball,
)

from atrous.weights import CheckpointError
from atrous.weights._sstable import varint
from atrous.weights.tf_checkpoint import _open_bundle, _parse_index, read_tf_checkpoint

# A case: the fixture copy -> (path to read, file the message must name, what it must say).
Case = Callable[[Path], tuple[Path, Path, list[str]]]
CASES: dict[str, Case] = {}


def case(fn: Case) -> Case:
    CASES[fn.__name__] = fn
    return fn


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def _rewrite(folder: Path, **changes: dict) -> Path:
    """Rewrite ``folder``'s index with some entries' fields changed (name -> {field: value})."""
    header, entries = _parse_index(_open_bundle(folder, want_data=False, max_tar_bytes=0))
    ours = {
        n: Entry(e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c)
        for n, e in entries.items()
    }
    for name, fields in changes.items():
        for key, value in fields.items():
            setattr(ours[name.replace("__", "/")], key, value)
    write_index(folder / "model.ckpt", Header(num_shards=header.num_shards), ours)
    return folder / "model.ckpt.index"


@case
def truncated_index(d: Path):
    index = d / "one_shard/model.ckpt.index"
    index.write_bytes(index.read_bytes()[:400])
    return index, index, ["truncated", "magic"]


@case
def index_shorter_than_footer(d: Path):
    index = d / "one_shard/model.ckpt.index"
    index.write_bytes(index.read_bytes()[:20])
    return d / "one_shard", index, ["truncated: 20 bytes", "footer"]


@case
def wrong_magic(d: Path):
    index = d / "one_shard/model.ckpt.index"
    _flip(index, index.stat().st_size - 1)
    return index, index, ["magic"]


@case
def flipped_byte_in_data_block(d: Path):
    index = d / "one_shard/model.ckpt.index"
    _flip(index, 20)  # inside the key "conv1/BatchNorm/beta"
    return index, index, ["data block at offset 0 is damaged", "crc32c"]


@case
def flipped_byte_in_index_block(d: Path):
    index = d / "one_shard/model.ckpt.index"
    footer = index.read_bytes()[-48:]
    pos = varint(footer, varint(footer, 0)[1])[1]
    _flip(index, varint(footer, pos)[0])
    return index, index, ["index block", "damaged", "crc32c"]


@case
def flipped_byte_in_tensor(d: Path):
    data = d / "one_shard/model.ckpt.data-00000-of-00001"
    _flip(data, 100)  # conv1/weights: bytes 48..480
    return d / "one_shard/model.ckpt", data, ["tensor 'conv1/weights' is damaged", "crc32c"]


@case
def truncated_shard(d: Path):
    data = d / "two_shards/model.ckpt.data-00001-of-00002"
    data.write_bytes(data.read_bytes()[:600])
    return d / "two_shards", data, ["truncated", "'sep/depthwise_weights'", "[572, 716)", "600"]


@case
def missing_shard(d: Path):
    data = d / "two_shards/model.ckpt.data-00001-of-00002"
    data.unlink()
    return d / "two_shards", d / "two_shards/model.ckpt.index", [str(data), "missing", "2 of 2"]


@case
def unknown_dtype(d: Path):
    index = _rewrite(d / "one_shard", conv1__weights={"dtype": 99})
    return index, index, ["'conv1/weights'", "DataType 99", "not supported"]


@case
def string_dtype(d: Path):
    index = _rewrite(d / "one_shard", lr__scalar={"dtype": 7})
    return index, index, ["'lr/scalar'", "string", "not supported"]


@case
def size_not_shape(d: Path):
    index = _rewrite(d / "one_shard", conv1__weights={"shape": (3, 3, 3, 5)})
    return index, index, ["'conv1/weights'", "432 bytes", "[3, 3, 3, 5]", "needs 540"]


@case
def shard_out_of_range(d: Path):
    index = _rewrite(d / "one_shard", conv1__weights={"shard_id": 3})
    return index, index, ["'conv1/weights'", "shard 3", "counts 1 shard from 0"]


@case
def partitioned_variable(d: Path):
    index = _rewrite(d / "one_shard", conv1__weights={"extra": b"\x3a\x00\x3a\x00"})
    return index, index, ["'conv1/weights'", "partitioned into 2 slices"]


def _header_only(d: Path, header: Header | None, compression: int = 0) -> Path:
    """``one_shard``'s index rewritten with another header (None: none at all)."""
    _, entries = _parse_index(_open_bundle(d / "one_shard", want_data=False, max_tar_bytes=0))
    items = [] if header is None else [(b"", encode_header(header))]
    for name, e in entries.items():
        entry = Entry(e.dtype, e.shape, e.shard_id, e.offset, e.size, e.crc32c)
        items.append((name.encode(), encode_entry(entry)))
    index = d / "one_shard/model.ckpt.index"
    index.write_bytes(Table(compression=compression).build(items))
    return index


@case
def no_header(d: Path):
    index = _header_only(d, None)
    return index, index, ["no bundle header", "not a TensorFlow V2 checkpoint"]


@case
def big_endian(d: Path):
    index = _header_only(d, Header(endianness=1))
    return index, index, ["big-endian", "not supported"]


@case
def newer_format(d: Path):
    index = _header_only(d, Header(min_consumer=2))
    return index, index, ["format version 2", "newer"]


@case
def snappy_block(d: Path):
    index = _header_only(d, Header(), compression=1)
    return index, index, ["compressed (snappy)", "not supported"]


@case
def not_a_checkpoint(d: Path):
    path = d / "weights.bin"
    path.write_bytes(b"\x80\x02 not a checkpoint")
    return path, path, ["not a TensorFlow checkpoint"]


@case
def folder_without_index(d: Path):
    folder = d / "empty"
    folder.mkdir()
    return folder, folder, ["no .index file", "not a TensorFlow checkpoint"]


@case
def folder_with_two_indexes(d: Path):
    folder = d / "one_shard"
    (folder / "model.ckpt.index").rename(folder / "model.ckpt-100.index")
    (folder / "model.ckpt-200.index").write_bytes(b"")
    return (
        folder,
        folder,
        ["2 checkpoints (.index files: model.ckpt-100.index, model.ckpt-200.index)", "prefix"],
    )


def _zoo_members(d: Path) -> dict[str, bytes | None]:
    return {f"ckpt/{f.name}": f.read_bytes() for f in sorted((d / "one_shard").iterdir())}


def _hostile_tar(d: Path, info: tarfile.TarInfo) -> Path:
    path = d / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in _zoo_members(d).items():
            good = tarfile.TarInfo(name)
            good.size = len(data)
            tar.addfile(good, io.BytesIO(data))
        tar.addfile(info, io.BytesIO(b"evil") if info.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, target, 4 if kind == tarfile.REGTYPE else 0
    return info


@case
def tar_dotdot_member(d: Path):
    path = _hostile_tar(d, _member("../evil"))
    return path, path, ["member ../evil", "unsafe path"]


@case
def tar_absolute_member(d: Path):
    path = _hostile_tar(d, _member("/tmp/evil"))
    return path, path, ["member /tmp/evil", "unsafe path"]


@case
def tar_member_name_with_newline(d: Path):
    path = _hostile_tar(d, _member("/ckpt/x\n/evil"))
    return path, path, ["member '/ckpt/x\\n/evil'", "unsafe path"]


@case
def tar_symlink(d: Path):
    path = _hostile_tar(d, _member("ckpt/link", tarfile.SYMTYPE, "/etc/passwd"))
    return path, path, ["member ckpt/link", "symbolic link (to '/etc/passwd')"]


@case
def tar_hardlink(d: Path):
    path = _hostile_tar(d, _member("ckpt/hard", tarfile.LNKTYPE, "ckpt/model.ckpt.index"))
    return path, path, ["member ckpt/hard", "hard link"]


@case
def tar_device(d: Path):
    path = _hostile_tar(d, _member("ckpt/dev", tarfile.CHRTYPE))
    return path, path, ["member ckpt/dev", "device"]


@case
def tar_over_size_limit(d: Path):
    path = write_tarball(d / "model.tgz", _zoo_members(d))
    return path, path, ["member ckpt/model.ckpt.index", "limit of 1500 bytes", "max_tar_bytes"]


@case
def tar_without_index(d: Path):
    members = {k: v for k, v in _zoo_members(d).items() if not k.endswith(".index")}
    path = write_tarball(d / "model.tar", members)
    return path, path, ["no .index member", "not a TensorFlow checkpoint"]


@case
def tar_with_two_indexes(d: Path):
    members = _zoo_members(d) | {"other/model.ckpt.index": b""}
    path = write_tarball(d / "model.tar.gz", members)
    return (
        path,
        path,
        ["2 checkpoints (.index members: ckpt/model.ckpt.index, other/model.ckpt.index)"],
    )


@case
def tar_missing_shard(d: Path):
    members = {f"ckpt/{f.name}": f.read_bytes() for f in (d / "two_shards").iterdir()}
    del members["ckpt/model.ckpt.data-00001-of-00002"]
    path = write_tarball(d / "model.tar.gz", members)
    return path, path, ["no member ckpt/model.ckpt.data-00001-of-00002", "2 of 2"]


@case
def tar_truncated(d: Path):
    path = write_tarball(d / "model.tar.gz", _zoo_members(d))
    path.write_bytes(path.read_bytes()[:300])
    return path, path, ["damaged or truncated"]


@case
def tar_not_gzip(d: Path):
    path = d / "model.tar.gz"
    path.write_bytes(struct.pack("<Q", 12345) * 100)
    return path, path, ["not a tarball"]


@pytest.mark.parametrize("name", CASES)
def test_bad_checkpoint(name: str, small: Path) -> None:
    path, named, problems = CASES[name](small)
    limit = 1500 if name == "tar_over_size_limit" else 1 << 30
    with pytest.raises(CheckpointError) as info:
        read_tf_checkpoint(path, model_only=False, max_tar_bytes=limit)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{named}"), message
    for problem in problems:
        assert problem in message, (problem, message)


def test_missing_path_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"model\.ckpt: no such file, and no"):
        read_tf_checkpoint(tmp_path / "model.ckpt")


def test_model_only_skips_what_it_does_not_return(small: Path) -> None:
    """A damaged optimizer slot does not stop reading the model's weights."""
    folder = small / "one_shard"
    _rewrite(folder, conv1__weights__Momentum={"dtype": 7})
    assert "conv1/weights" in read_tf_checkpoint(folder)
    with pytest.raises(CheckpointError, match="'conv1/weights/Momentum' has dtype string"):
        read_tf_checkpoint(folder, model_only=False)
