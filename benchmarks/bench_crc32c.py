"""CRC-32C of a 100 MB buffer: google-crc32c against table-driven Python and NumPy (#25).

The TF checkpoint reader verifies every tensor's CRC-32C (165 MB for the zoo's Xception-65).
This measures the library it uses against the best pure-Python/NumPy alternatives:

* a byte-at-a-time table loop in Python (timed on 1 MB, scaled to 100 MB);
* NumPy, lane-parallel slicing-by-4: the buffer cut into 2**16 lanes whose raw CRCs advance
  together one 32-bit word per step, then combined pairwise with the GF(2) matrices that
  shift a CRC past n zero bytes (the zlib ``crc32_combine`` trick), all vectorized.

    PYTHONPATH=src python benchmarks/bench_crc32c.py
"""

from __future__ import annotations

import time

import google_crc32c
import numpy as np

POLY = 0x82F63B78  # CRC-32C, reflected


def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    return t


T0 = _byte_table()
# Slicing-by-4: T[k][b] = the CRC of byte b followed by k zero bytes.
TABLES = [T0]
for _ in range(3):
    prev = TABLES[-1]
    TABLES.append((prev >> np.uint32(8)) ^ T0[prev & np.uint32(0xFF)])


def crc32c_python(data: bytes) -> int:
    """Byte-at-a-time table loop."""
    table = T0.tolist()
    crc = 0xFFFFFFFF
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _shift_tables(n: int) -> np.ndarray:
    """4 x 256 tables applying "advance the raw CRC register past n zero bytes"."""
    result = np.array([1 << i for i in range(32)], dtype=np.uint32)  # the identity, by columns
    power = _bitwise_byte_step()
    while n:
        if n & 1:
            result = _compose(power, result)
        power = _compose(power, power)
        n >>= 1
    return _tables_of(result)


def _bitwise_byte_step() -> np.ndarray:
    """The matrix (by columns) of one zero byte through the register."""
    cols = np.array([1 << i for i in range(32)], dtype=np.uint32)
    return (cols >> np.uint32(8)) ^ T0[cols & np.uint32(0xFF)]


def _apply_cols(mat: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Matrix (32 column vectors) times each of ``vecs``."""
    out = np.zeros_like(vecs)
    for i in range(32):
        out ^= np.where((vecs >> np.uint32(i)) & 1, mat[i], np.uint32(0)).astype(np.uint32)
    return out


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The matrix a @ b (apply b, then a)."""
    return _apply_cols(a, b)


def _tables_of(mat: np.ndarray) -> np.ndarray:
    """Byte tables: tables[k][v] = mat applied to (v << 8k)."""
    v = np.arange(256, dtype=np.uint32)
    return np.stack([_apply_cols(mat, v << np.uint32(8 * k)) for k in range(4)])


def _apply_tables(tables: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (
        tables[0][x & 0xFF]
        ^ tables[1][(x >> np.uint32(8)) & 0xFF]
        ^ tables[2][(x >> np.uint32(16)) & 0xFF]
        ^ tables[3][x >> np.uint32(24)]
    )


def crc32c_numpy(data: bytes, lanes: int = 1 << 16) -> int:
    """Lane-parallel slicing-by-4 in NumPy, the lanes combined pairwise."""
    words_per_lane = len(data) // (4 * lanes)
    main = 4 * lanes * words_per_lane
    crc = np.uint32(0xFFFFFFFF)
    if words_per_lane:
        words = np.frombuffer(data, "<u4", main // 4).reshape(lanes, words_per_lane).T.copy()
        reg = np.zeros(lanes, dtype=np.uint32)  # raw CRCs (register from 0) of each lane
        for row in words:
            x = reg ^ row
            reg = TABLES[3][x & 0xFF] ^ TABLES[2][(x >> np.uint32(8)) & 0xFF]
            reg ^= TABLES[1][(x >> np.uint32(16)) & 0xFF] ^ TABLES[0][x >> np.uint32(24)]
        length = 4 * words_per_lane
        while len(reg) > 1:  # raw(A || B) = shift_|B|(raw(A)) ^ raw(B), |A| = |B| = length
            reg = _apply_tables(_shift_tables(length), reg[0::2]) ^ reg[1::2]
            length *= 2
        crc = _apply_tables(_shift_tables(main), np.array([crc]))[0] ^ reg[0]
    table = T0.tolist()
    crc = int(crc)
    for b in data[main:]:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFFFFFF


def _time(fn, *args) -> tuple[float, int]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def main() -> None:
    data = np.random.default_rng(0).integers(0, 256, 100_000_000 + 13, dtype=np.uint8).tobytes()
    assert crc32c_python(b"123456789") == crc32c_numpy(b"123456789") == 0xE3069283
    t_lib, ref = _time(google_crc32c.value, data)
    t_np, value = _time(crc32c_numpy, data)
    assert value == ref, (hex(value), hex(ref))
    t_py, small = _time(crc32c_python, data[:1_000_000])
    assert small == google_crc32c.value(data[:1_000_000])
    print(f"google-crc32c ({google_crc32c.implementation}): {t_lib * 1e3:8.1f} ms / 100 MB")
    print(f"NumPy lane-parallel slicing-by-4: {t_np * 1e3:8.1f} ms / 100 MB")
    print(f"Python byte loop:                 {t_py * 100:8.1f} s  / 100 MB (1 MB x 100)")


if __name__ == "__main__":
    main()
