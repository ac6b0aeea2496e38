"""Reading and writing IDX files (the format MNIST ships in), gzipped or raw.

The header is checked in full before any data is trusted: two zero bytes, a
known type code, at least one dimension, and dimensions whose product matches
the bytes that follow. Every problem becomes one DataError naming the file.
"""

import gzip
import math
import os
import struct
import zlib

import numpy as np

from mnistlab.errors import DataError

# type code -> big-endian numpy dtype, as the IDX format defines them
DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
MAX_DIMS = 8


def read_bytes(path):
    """The file's content, decompressed when it is gzip (recognised by its magic, not its name)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an IDX file") from None
    except PermissionError:
        raise DataError(f"{path}: permission denied") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from None
    return raw


def parse(data, name="<bytes>"):
    """Parse IDX bytes into a numpy array (native byte order)."""
    if len(data) < 4:
        raise DataError(f"{name}: not an IDX file (only {len(data)} bytes, the header needs 4)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0:
        raise DataError(f"{name}: not an IDX file (first two bytes are {data[:2].hex()}, expected 0000)")
    if code not in DTYPES:
        raise DataError(f"{name}: unknown IDX type code 0x{code:02x}")
    if not 1 <= ndim <= MAX_DIMS:
        raise DataError(f"{name}: IDX header claims {ndim} dimensions (expected 1 to {MAX_DIMS})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header ({len(data)} bytes, expected {header})")
    shape = struct.unpack(">" + "I" * ndim, data[4:header])
    dtype = DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize  # Python ints: a forged header cannot overflow them
    got = len(data) - header
    if got != expected:
        kind = "truncated" if got < expected else "has trailing bytes"
        raise DataError(f"{name}: {kind}: header shape {shape} needs {expected} data bytes, found {got}")
    try:
        arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    except ValueError:  # an empty array whose other dimensions numpy cannot address
        raise DataError(f"{name}: header shape {shape} is larger than any array can be") from None
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path):
    """Read one IDX file (gzipped or raw) into a numpy array."""
    return parse(read_bytes(path), os.fspath(path))


def encode(array):
    """IDX bytes for a numpy array (the inverse of `parse`)."""
    array = np.asarray(array)
    found = next(
        (
            (code, dtype)
            for code, dtype in DTYPES.items()
            if dtype.kind == array.dtype.kind and dtype.itemsize == array.dtype.itemsize
        ),
        None,
    )
    if found is None:
        raise ValueError(f"IDX cannot hold dtype {array.dtype}")
    code, dtype = found
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(dtype, copy=False).tobytes()


def write_idx(path, array, compress=None):
    """Write an IDX file atomically; gzip it when `compress` is true or the name ends in .gz."""
    from mnistlab.storage.files import atomic_open

    path = os.fspath(path)
    data = encode(array)
    if compress or (compress is None and path.endswith(".gz")):
        data = gzip.compress(data, mtime=0)
    with atomic_open(path, "wb") as f:
        f.write(data)
