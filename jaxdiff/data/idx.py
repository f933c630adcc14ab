"""The IDX file format of the MNIST distribution files: parse and write n-dimensional arrays.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian (LeCun et al., "THE MNIST
DATABASE of handwritten digits", section "FILE FORMATS FOR THE MNIST DATABASE"). The MNIST and
Fashion-MNIST files hold uint8 images ``(N, 28, 28)`` and uint8 labels ``(N,)``.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

__all__ = ["decode_idx", "encode_idx", "gunzip_idx"]

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dtype.newbyteorder(">"): code for code, dtype in _TYPES.items()}


def decode_idx(data: bytes, *, name: str = "IDX data") -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file into a NumPy array in native byte order.

    Args:
      data: the whole file.
      name: what to call the file in error messages.

    Returns:
      an array of the stored shape and dtype (``uint8`` for the MNIST files).

    Raises:
      ValueError: bad magic number, unknown type code, or a length that disagrees with the header.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _TYPES:
        raise ValueError(
            f"{name} is not an IDX file: it starts with {data[:4].hex() or 'nothing'} instead of "
            "00 00 <type> <ndim>."
        )
    dtype, ndim = _TYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name} is truncated inside its header ({len(data)} bytes).")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{name} has {len(data)} bytes, but its header (shape {shape}, {dtype}) needs "
            f"{expected}: the file is truncated or corrupt."
        )
    return np.frombuffer(data, dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def gunzip_idx(data: bytes, *, name: str = "IDX data") -> np.ndarray:
    """:func:`decode_idx` of gzip-compressed bytes (the ``*-ubyte.gz`` files)."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{name} is not a valid gzip file ({err}).") from None
    return decode_idx(raw, name=name)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes of ``array`` (uint8, int8, int16, int32, float32 or float64); inverse of
    :func:`decode_idx`. Used to build mirrors and test fixtures."""
    arr = np.asarray(array)
    big = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if big not in _CODES:
        kinds = ", ".join(sorted(map(str, _CODES)))
        raise ValueError(f"IDX cannot store dtype {arr.dtype}; use one of {kinds}.")
    header = bytes([0, 0, _CODES[big], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + np.ascontiguousarray(arr, dtype=big).tobytes()
