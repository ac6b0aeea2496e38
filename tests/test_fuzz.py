"""Property-based tests: whatever bytes arrive, the IDX reader either returns an
array that matches its header or raises DataError, nothing else."""
import struct

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistlab.data import idx
from mnistlab.errors import DataError

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_error(data):
    try:
        return idx.parse(data, "fuzz")
    except DataError as e:
        assert str(e).startswith("fuzz: ")
        return None


@FAST
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    parse_or_error(data)


@FAST
@given(code=st.sampled_from(sorted(idx.DTYPES) + [0, 7, 0x0A, 0xFF]), ndim=st.integers(0, 12),
       dims=st.lists(st.integers(0, 2 ** 32 - 1), min_size=0, max_size=12), payload=st.binary(max_size=512))
def test_random_headers(code, ndim, dims, payload):
    dims = dims[:ndim]
    data = struct.pack(">HBB", 0, code, ndim) + struct.pack(">" + "I" * len(dims), *dims) + payload
    arr = parse_or_error(data)
    if arr is not None:
        assert arr.shape == tuple(dims)
        assert arr.nbytes == len(payload)


@FAST
@given(shape=st.lists(st.integers(0, 6), min_size=1, max_size=4), code=st.sampled_from(sorted(idx.DTYPES)),
       cut=st.integers(-8, 8))
def test_valid_files_round_trip_and_damaged_ones_are_refused(shape, code, cut):
    dtype = idx.DTYPES[code]
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
    data = idx.encode(arr)
    if cut == 0:
        np.testing.assert_array_equal(idx.parse(data, "fuzz"), arr)
        return
    damaged = data[:cut] if cut < 0 else data + b"\x00" * cut
    assert parse_or_error(damaged) is None
