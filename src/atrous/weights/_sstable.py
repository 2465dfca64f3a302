"""The entries of a LevelDB table (SSTable), as TensorFlow writes a checkpoint's ``.index``.

Format (github.com/google/leveldb, doc/table_format.md; TensorFlow's copy is
tensorflow/core/lib/io/table*): a 48-byte footer (metaindex and index BlockHandles, zero
padding, magic 0xdb4775248b80fb57 little-endian); an index block whose values are the
BlockHandles (varint64 offset, varint64 size) of the data blocks; each block followed by a
5-byte trailer (compression type, masked crc32c of the block and that byte). A block holds
prefix-compressed entries (varint32 shared, non-shared and value lengths, the key's non-shared
bytes, the value), then a uint32 restart array and its count.

Errors are :class:`TableError` with a message naming the problem, not the file: the caller
(:mod:`.tf_checkpoint`) adds the file's name.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from functools import cache

MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c
_MASK_DELTA = 0xA282EAD8
_COMPRESSION = {1: "snappy", 2: "zlib", 3: "lz4", 4: "zstd"}


class TableError(ValueError):
    """A damaged or unsupported table; the message names the problem (not the file)."""


@cache
def _crc32c():
    """google-crc32c's function, imported on first use (only the TF reader needs it)."""
    try:
        import google_crc32c
    except ImportError:
        raise ImportError(
            "reading TensorFlow checkpoints needs google-crc32c: pip install google-crc32c"
        ) from None
    return google_crc32c.value


def masked_crc32c(data: bytes) -> int:
    """LevelDB's masked CRC-32C (Castagnoli) of ``data``, as TensorFlow stores it."""
    crc = _crc32c()(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def varint(buf: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    """The unsigned varint at ``buf[pos]`` (at most 10 bytes) and the position after it."""
    end = len(buf) if limit is None else limit
    result = shift = 0
    while shift < 70:
        if pos >= end:
            raise TableError("a varint runs past the end of its data")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
    raise TableError("a varint longer than 10 bytes")


def table_entries(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of the table held in ``data``, in key order, across all data blocks."""
    if len(data) < FOOTER_SIZE:
        raise TableError(f"truncated: {len(data)} bytes, shorter than the 48-byte table footer")
    footer = data[-FOOTER_SIZE:]
    (magic,) = struct.unpack("<Q", footer[-8:])
    if magic != MAGIC:
        raise TableError(
            "no LevelDB table magic at the end (truncated, or not a TensorFlow checkpoint "
            f"index: its last 8 bytes are {footer[-8:].hex()})"
        )
    _, pos = varint(footer, 0, 40)  # metaindex offset, size: no filters are needed
    _, pos = varint(footer, pos, 40)
    index_offset, pos = varint(footer, pos, 40)
    index_size, _ = varint(footer, pos, 40)
    index = read_block(data, index_offset, index_size, "index block")
    for _, handle in block_entries(index, "index block"):
        offset, pos = varint(handle, 0)
        size, _ = varint(handle, pos)
        yield from block_entries(read_block(data, offset, size, "data block"), "data block")


def read_block(data: bytes, offset: int, size: int, what: str) -> bytes:
    """The contents of the block at ``offset`` (``size`` bytes), its trailer checked."""
    end = offset + size + TRAILER_SIZE
    if end > len(data) - FOOTER_SIZE:
        raise TableError(
            f"truncated: the {what} at offset {offset} ({size} bytes + trailer) ends past "
            f"the table's data ({len(data)} bytes with the footer)"
        )
    block = data[offset : offset + size]
    kind = data[offset + size]
    if kind != 0:
        name = _COMPRESSION.get(kind, f"unknown type {kind}")
        raise TableError(f"the {what} at offset {offset} is compressed ({name}): not supported")
    (stored,) = struct.unpack("<I", data[offset + size + 1 : end])
    actual = masked_crc32c(data[offset : offset + size + 1])
    if actual != stored:
        raise TableError(
            f"the {what} at offset {offset} is damaged: its crc32c is {actual:#010x}, "
            f"the trailer says {stored:#010x}"
        )
    return block


def block_entries(block: bytes, what: str) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) entries of one block, the prefix compression undone."""
    if len(block) < 4:
        raise TableError(f"a {what} of {len(block)} bytes, too short for its restart count")
    (restarts,) = struct.unpack("<I", block[-4:])
    limit = len(block) - 4 - 4 * restarts
    if restarts == 0 or limit < 0:
        raise TableError(f"a {what} with a bad restart count ({restarts})")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = varint(block, pos, limit)
        unshared, pos = varint(block, pos, limit)
        size, pos = varint(block, pos, limit)
        if shared > len(key) or pos + unshared + size > limit:
            raise TableError(f"a corrupt entry at offset {pos} of a {what}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + size]
        pos += size
