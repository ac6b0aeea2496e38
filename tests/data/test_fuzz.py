"""Property-based tests: whatever bytes arrive, the IDX reader either returns an
array that matches its header or raises DataError, nothing else."""

import struct

import numpy as np
import pytest
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


def test_empty_array_with_unaddressable_dimensions():
    """Found by the fuzzer: zero elements, but the other dimensions overflow numpy's size."""
    data = struct.pack(">HBB", 0, 8, 5) + struct.pack(">5I", 0, 2645, 9336, 9338, 39999019)
    assert parse_or_error(data) is None


@pytest.mark.slow
@FAST
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    parse_or_error(data)


@FAST
@given(
    code=st.sampled_from(sorted(idx.DTYPES) + [0, 7, 0x0A, 0xFF]),
    ndim=st.integers(0, 12),
    dims=st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=12),
    payload=st.binary(max_size=512),
)
def test_random_headers(code, ndim, dims, payload):
    dims = dims[:ndim]
    data = struct.pack(">HBB", 0, code, ndim) + struct.pack(">" + "I" * len(dims), *dims) + payload
    arr = parse_or_error(data)
    if arr is not None:
        assert arr.shape == tuple(dims)
        assert arr.nbytes == len(payload)


@FAST
@given(
    shape=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    code=st.sampled_from(sorted(idx.DTYPES)),
    cut=st.integers(-8, 8),
)
def test_valid_files_round_trip_and_damaged_ones_are_refused(shape, code, cut):
    dtype = idx.DTYPES[code]
    arr = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(dtype)
    data = idx.encode(arr)
    if cut == 0:
        np.testing.assert_array_equal(idx.parse(data, "fuzz"), arr)
        return
    damaged = data[:cut] if cut < 0 else data + b"\x00" * cut
    assert parse_or_error(damaged) is None


# ---- image preprocessing ----


def load_or_error(data):
    from mnistlab.data.images import load_image
    from mnistlab.errors import MnistlabError

    try:
        return load_image(data)
    except MnistlabError as e:
        assert "\n" not in str(e)
        return None


@FAST
@given(st.binary(max_size=4096))
def test_image_reader_random_bytes(data):
    load_or_error(data)


@FAST
@given(prefix=st.sampled_from([b"\x89PNG\r\n\x1a\n", b"GIF89a", b"\xff\xd8\xff", b"BM"]), body=st.binary(max_size=1024))
def test_image_reader_image_like_headers(prefix, body):
    load_or_error(prefix + body)


@FAST
@given(
    height=st.integers(1, 80),
    width=st.integers(1, 80),
    mode=st.sampled_from(["L", "RGB", "RGBA", "LA", "1", "I;16", "P"]),
    seed=st.integers(0, 2**32 - 1),
    sparsity=st.floats(0, 1),
)
def test_to_mnist_any_picture_gives_a_digit(height, width, mode, seed, sparsity):
    from PIL import Image

    from mnistlab.data.digits import to_mnist

    rng = np.random.default_rng(seed)
    pixels = (rng.random((height, width)) < sparsity).astype(np.uint8) * 255
    image = Image.fromarray(pixels, "L").convert(mode)
    digit = to_mnist(image)
    assert digit.shape == (28, 28) and digit.dtype == np.float32
    assert np.isfinite(digit).all() and digit.min() >= 0 and digit.max() <= 1
