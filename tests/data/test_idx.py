import gzip
import struct

import numpy as np
import pytest

from mnistlab.data import idx
from mnistlab.errors import DataError


def header(code, shape):
    return struct.pack(">HBB", 0, code, len(shape)) + struct.pack(">" + "I" * len(shape), *shape)


@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_round_trip_every_type(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if np.dtype(dtype).kind == "u":
        arr = np.arange(24, dtype="u1").reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        idx.write_idx(tmp_path / name, arr)
        back = idx.read_idx(tmp_path / name)
        np.testing.assert_array_equal(back, arr)
        assert back.dtype.byteorder in "=|"


def test_gzip_detected_by_content_not_name(tmp_path):
    arr = np.arange(10, dtype=np.uint8)
    (tmp_path / "plain.gz").write_bytes(idx.encode(arr))  # raw despite the name
    (tmp_path / "packed").write_bytes(gzip.compress(idx.encode(arr)))  # gzip without the name
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "plain.gz"), arr)
    np.testing.assert_array_equal(idx.read_idx(tmp_path / "packed"), arr)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "only 0 bytes"),
        (b"\x00\x00", "only 2 bytes"),
        (b"\x01\x00\x08\x01" + b"\x00" * 8, "first two bytes are 0100"),
        (header(0x07, (3,)) + b"abc", "unknown IDX type code 0x07"),
        (struct.pack(">HBB", 0, 8, 0), "0 dimensions"),
        (struct.pack(">HBB", 0, 8, 3) + b"\x00\x00\x00\x02", "truncated IDX header"),
        (header(0x08, (2, 3)) + b"\x00" * 5, "truncated: header shape (2, 3) needs 6 data bytes, found 5"),
        (header(0x08, (2, 3)) + b"\x00" * 7, "has trailing bytes"),
        (header(0x0C, (2,)) + b"\x00" * 7, "needs 8 data bytes, found 7"),
    ],
)
def test_bad_headers_name_the_file_and_the_problem(tmp_path, data, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(data)
    with pytest.raises(DataError) as err:
        idx.read_idx(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_truncated_gzip(tmp_path):
    packed = gzip.compress(idx.encode(np.zeros((50, 28, 28), np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        idx.read_idx(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        idx.read_idx(tmp_path / "nope")
    with pytest.raises(DataError, match="is a folder"):
        idx.read_idx(tmp_path)
