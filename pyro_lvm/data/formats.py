"""Readers for the canonical file formats: MNIST IDX and Larochelle's ``.amat``."""

from __future__ import annotations

import struct

import numpy as np

_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def parse_idx(content: bytes) -> np.ndarray:
    """Parse an IDX file (the MNIST format) from its uncompressed bytes.

    >>> import struct
    >>> raw = struct.pack(">BBBB", 0, 0, 8, 2) + struct.pack(">II", 2, 3) + bytes(range(6))
    >>> parse_idx(raw)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError("not an IDX file: bad magic number")
    dtype, ndim = content[2], content[3]
    if dtype not in _IDX_TYPES:
        raise ValueError(f"IDX type code {dtype:#x} is not supported")
    shape = struct.unpack(f">{ndim}I", content[4:4 + 4 * ndim])
    data = np.frombuffer(content, dtype=_IDX_TYPES[dtype], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"IDX file holds {data.size} values, header says shape {shape}")
    return data.reshape(shape).astype(data.dtype.newbyteorder("="), copy=False)


def parse_amat_binary(content: bytes) -> np.ndarray:
    """Parse a binary ``.amat`` file (rows of space-separated 0/1) into ``uint8``.

    Vectorized over the bytes: no per-line Python loop.

    >>> parse_amat_binary(b"0 1 1\\n1 0 0\\n")
    array([[0, 1, 1],
           [1, 0, 0]], dtype=uint8)
    """
    raw = np.frombuffer(content, dtype=np.uint8)
    is_digit = (raw == ord("0")) | (raw == ord("1"))
    other = ~is_digit & (raw != ord(" ")) & (raw != ord("\n")) & (raw != ord("\r")) & (raw != ord("\t"))
    if other.any():
        bad = content[int(np.argmax(other))]
        raise ValueError(f"binary .amat file holds a character other than 0/1: {chr(bad)!r}")
    if is_digit[1:].size and (is_digit[1:] & is_digit[:-1]).any():
        raise ValueError("binary .amat file holds a number other than 0 or 1")
    values = raw[is_digit] - ord("0")
    rows = content.count(b"\n") + (0 if content.endswith(b"\n") or not content else 1)
    if rows == 0 or values.size % rows:
        raise ValueError(f".amat file: {values.size} values do not split into {rows} equal rows")
    return values.reshape(rows, -1)
