"""A minimal TensorFlow V2 checkpoint writer, for tests of the reader (not part of atrous).

It writes the index the way TensorFlow's ``BundleWriter`` does (a LevelDB table: restart
points every 16 entries, an empty metaindex block, the index block's last key shortened to a
successor; proto3 fields in field order, zeros omitted), so that it reproduces the bytes of
``tests/fixtures/tf_small``'s index (a test checks it), and lets tests build what the fixtures
lack: every dtype, several data blocks, and entries TensorFlow would never write.
"""

from __future__ import annotations

import io
import struct
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from atrous.weights._sstable import MAGIC, masked_crc32c


@dataclass
class Entry:
    """A tensor's ``BundleEntryProto``; ``extra`` is appended raw (e.g. a slices field)."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0
    extra: bytes = b""


@dataclass
class Header:
    num_shards: int = 1
    endianness: int = 0
    producer: int = 1
    min_consumer: int = 0
    extra: bytes = b""


def varint(n: int) -> bytes:
    n &= 0xFFFFFFFFFFFFFFFF  # negative numbers as two's-complement int64, as protobuf does
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value) if value else b""


def _message(number: int, body: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(body)) + body


def encode_header(h: Header) -> bytes:
    version = _field(1, h.producer) + _field(2, h.min_consumer)
    body = _field(1, h.num_shards) + _field(2, h.endianness)
    return body + (_message(3, version) if version else b"") + h.extra


def encode_entry(e: Entry) -> bytes:
    shape = b"".join(_message(2, _field(1, d)) for d in e.shape)
    body = _field(1, e.dtype) + _message(2, shape)
    body += _field(3, e.shard_id) + _field(4, e.offset) + _field(5, e.size)
    return body + varint(6 << 3 | 5) + struct.pack("<I", e.crc32c) + e.extra


def _block(entries: list[tuple[bytes, bytes]], restart_interval: int) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts) + 1}I", *restarts, len(restarts))


def _successor(key: bytes) -> bytes:
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


@dataclass
class Table:
    """Builds a LevelDB table from sorted (key, value) pairs."""

    block_size: int = 262144  # TensorFlow's table_options.h default
    compression: int = 0  # written in the trailers as is: only 0 is valid here
    out: bytearray = field(default_factory=bytearray)

    def _write_block(self, block: bytes) -> bytes:
        handle = varint(len(self.out)) + varint(len(block))
        trailer = bytes([self.compression])
        self.out += block + trailer + struct.pack("<I", masked_crc32c(block + trailer))
        return handle

    def build(self, entries: list[tuple[bytes, bytes]]) -> bytes:
        index: list[tuple[bytes, bytes]] = []
        pending: list[tuple[bytes, bytes]] = []
        size = 0
        for i, (key, value) in enumerate(entries):
            pending.append((key, value))
            size += len(key) + len(value) + 3
            if size >= self.block_size or i == len(entries) - 1:
                last = i == len(entries) - 1
                handle = self._write_block(_block(pending, 16))
                index.append((_successor(key) if last else key, handle))
                pending, size = [], 0
        meta = self._write_block(_block([], 16))
        idx = self._write_block(_block(index, 1))
        footer = (meta + idx).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
        return bytes(self.out + footer)


def write_checkpoint(
    prefix: Path,
    tensors: dict[str, tuple[int, tuple[int, ...], bytes]],
    *,
    num_shards: int = 1,
    block_size: int = 262144,
    header: Header | None = None,
) -> dict[str, Entry]:
    """Write ``prefix.index`` and its data files; ``tensors``: name -> (dtype, shape, bytes).

    Tensor ``i`` (in name order) goes to shard ``i % num_shards``. Returns the entries.
    """
    datas = [bytearray() for _ in range(num_shards)]
    entries = {}
    for i, name in enumerate(sorted(tensors)):
        dtype, shape, data = tensors[name]
        shard = datas[i % num_shards]
        entries[name] = Entry(
            dtype, shape, i % num_shards, len(shard), len(data), masked_crc32c(bytes(data))
        )
        shard += data
    for i, data in enumerate(datas):
        Path(f"{prefix}.data-{i:05d}-of-{num_shards:05d}").write_bytes(bytes(data))
    header = header or Header(num_shards=num_shards)
    write_index(prefix, header, entries, block_size=block_size)
    return entries


def write_index(
    prefix: Path, header: Header, entries: dict[str, Entry], *, block_size: int = 262144
) -> None:
    """Write ``prefix.index`` for ``entries`` (name -> Entry)."""
    items = [(b"", encode_header(header))]
    items += sorted((name.encode(), encode_entry(e)) for name, e in entries.items())
    Path(f"{prefix}.index").write_bytes(Table(block_size=block_size).build(items))


def write_tarball(path: Path, members: dict[str, bytes | None]) -> Path:
    """A tarball (compression from the suffix: .tar.gz/.tgz or .tar) of ``members``, by
    name: bytes for a file, None for a folder."""
    mode = "w" if path.name.endswith(".tar") else "w:gz"
    with tarfile.open(path, mode) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
