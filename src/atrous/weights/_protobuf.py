"""The few protobuf messages of a TensorFlow checkpoint index, decoded by hand.

``BundleHeaderProto`` and ``BundleEntryProto`` (tensorflow/core/protobuf/tensor_bundle.proto)
with ``TensorShapeProto`` (tensor_shape.proto) and ``VersionDef`` (versions.proto). Hand-written
(the wire format is four wire types and a varint): some 100 lines instead of a dependency on
``protobuf`` and on generated code that must match its version. Unknown fields are skipped,
as protobuf does. Errors are :class:`ProtoError`, a :class:`~._sstable.TableError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from ._sstable import TableError, varint

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class ProtoError(TableError):
    """A message that does not decode; the message names the field."""


@dataclass(frozen=True)
class BundleHeader:
    """``BundleHeaderProto``: how many data shards, their byte order, the format version."""

    num_shards: int = 0
    big_endian: bool = False
    producer: int = 0
    min_consumer: int = 0


@dataclass(frozen=True)
class BundleEntry:
    """``BundleEntryProto``: where a tensor's bytes are and what they are."""

    dtype: int = 0  # the DataType enum (types.proto)
    shape: tuple[int, ...] = ()
    shard_id: int = 0
    offset: int = 0
    size: int = 0
    crc32c: int = 0  # masked, of the tensor's bytes
    num_slices: int = 0  # > 0 for a partitioned variable, whose slices are other entries


def fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field: an int, or bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            value, pos = varint(buf, pos)
        elif wire in (FIXED64, FIXED32):
            width = 8 if wire == FIXED64 else 4
            if pos + width > len(buf):
                raise ProtoError(f"field {number} runs past the end of the message")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == LENGTH:
            size, pos = varint(buf, pos)
            if pos + size > len(buf):
                raise ProtoError(f"field {number} runs past the end of the message")
            value, pos = buf[pos : pos + size], pos + size
        else:
            raise ProtoError(f"field {number} has wire type {wire} (groups are not supported)")
        yield number, wire, value


def _int64(value: int) -> int:
    """A varint read as a two's-complement int64 (as protobuf encodes negative numbers)."""
    return struct.unpack("<q", struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF))[0]


def _expect(number: int, wire: int, want: int, message: str) -> None:
    if wire != want:
        raise ProtoError(f"{message} field {number} has wire type {wire}, expected {want}")


def decode_header(buf: bytes) -> BundleHeader:
    """The ``BundleHeaderProto`` stored under the empty key."""
    values: dict[str, int] = {}
    names = {1: "num_shards", 2: "endianness"}
    for number, wire, value in fields(buf):
        if number in names:
            _expect(number, wire, VARINT, "BundleHeaderProto")
            values[names[number]] = _int64(value)
        elif number == 3:
            _expect(number, wire, LENGTH, "BundleHeaderProto")
            for n, w, v in fields(value):
                if n in (1, 2) and w == VARINT:
                    values["producer" if n == 1 else "min_consumer"] = _int64(v)
    endianness = values.pop("endianness", 0)
    return BundleHeader(big_endian=endianness != 0, **values)


def decode_shape(buf: bytes) -> tuple[int, ...]:
    """A ``TensorShapeProto``'s dimensions (-1 for an unknown size)."""
    dims: list[int] = []
    for number, wire, value in fields(buf):
        if number == 2:
            _expect(number, wire, LENGTH, "TensorShapeProto")
            size = 0
            for n, w, v in fields(value):
                if n == 1:
                    _expect(n, w, VARINT, "TensorShapeProto.Dim")
                    size = _int64(v)
            dims.append(size)
        elif number == 3 and value:
            raise ProtoError("the shape has an unknown rank")
    return tuple(dims)


def decode_entry(buf: bytes) -> BundleEntry:
    """A tensor's ``BundleEntryProto``."""
    values: dict[str, int | tuple[int, ...]] = {}
    names = {1: "dtype", 3: "shard_id", 4: "offset", 5: "size"}
    slices = 0
    for number, wire, value in fields(buf):
        if number in names:
            _expect(number, wire, VARINT, "BundleEntryProto")
            values[names[number]] = _int64(value)
        elif number == 2:
            _expect(number, wire, LENGTH, "BundleEntryProto")
            values["shape"] = decode_shape(value)
        elif number == 6:
            _expect(number, wire, FIXED32, "BundleEntryProto")
            values["crc32c"] = value
        elif number == 7:
            slices += 1
    return BundleEntry(num_slices=slices, **values)  # type: ignore[arg-type]
