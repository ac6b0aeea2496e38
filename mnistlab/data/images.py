"""Image sources and decoding: what a picture or a stack of digits is read from.

    load_image(source)   one picture (path, bytes or binary file) decoded as a PIL image
    load_stack(path)     (n, 28, 28) uint8 digits from an .npy or IDX file
    stack_kind(path)     'npy' / 'idx' for a stack, None for a picture

Sizes are capped before any pixel is decoded; a file or an image over the caps
raises mnistlab.errors.TooLarge, any other unreadable input a MnistlabError.
"""

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnistlab.data.registry import IMAGE_SIDE, PIXELS
from mnistlab.errors import MnistlabError, TooLarge, first_line

MAX_PIXELS = 40_000_000  # width * height; a 20000x20000 picture is refused before decoding
MAX_BYTES = 4 * MAX_PIXELS + 2**20  # even uncompressed RGBA of MAX_PIXELS fits; a bigger file is not read
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # decoders worth exposing to uploads

NPY_MAGIC = b"\x93NUMPY"


def describe(source):
    """How an image source is named in messages and output."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    name = getattr(source, "name", None)  # an open file, or an upload the caller named
    return name if isinstance(name, str) else "<image>"


def read_source(source):
    """The raw bytes of a path, bytes-like object or binary file-like object."""
    name = describe(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return capped(bytes(source), name)
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                return capped(f.read(MAX_BYTES + 1), name)
        except FileNotFoundError:
            raise MnistlabError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise MnistlabError(f"{name}: is a folder, not an image") from None
        except OSError as e:
            raise MnistlabError(f"{name}: cannot read ({e.strerror or e})") from None
    if hasattr(source, "read"):
        data = source.read(MAX_BYTES + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise MnistlabError(f"{name}: expected a binary file, got text")
        return capped(bytes(data), name)
    raise MnistlabError(f"expected an image path, bytes or a binary file, got {type(source).__name__}")


def capped(data, name):
    if len(data) > MAX_BYTES:
        raise TooLarge(
            f"{name}: file too large for a picture of at most {MAX_PIXELS:,} pixels "
            f"(more than {MAX_BYTES // 2**20} MiB)"
        )
    return data


def load_image(source):
    """Open one image (path, bytes or binary file) and decode it, refusing what cannot be a digit picture.

    The size is checked from the header, before any pixel is decoded, so a
    tiny file claiming enormous dimensions costs nothing.
    """
    name = describe(source)
    data = read_source(source)
    if not data:
        raise MnistlabError(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 million pixels; make that the refusal we give anyway. (Threads racing
            # on this filter can only change whether that one warning raises, never the outcome.)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(f"{name}: image too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise MnistlabError(f"{name}: not an image (expected {', '.join(FORMATS)})") from None
    except Exception as e:  # a damaged header can fail in many decoder-specific ways
        raise MnistlabError(f"{name}: damaged image ({first_line(e)})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise TooLarge(f"{name}: image too large ({width}x{height}, more than {MAX_PIXELS:,} pixels)")
    if width == 0 or height == 0:
        raise MnistlabError(f"{name}: image has no pixels ({width}x{height})")
    if getattr(image, "is_animated", False):
        raise MnistlabError(f"{name}: animated image ({image.format} with several frames); give one still picture")
    try:
        image.load()
        return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except Exception as e:
        raise MnistlabError(f"{name}: damaged image ({first_line(e)})") from None


def stack_kind(path):
    """'npy' or 'idx' when `path` holds a stack of images rather than one picture, else None.

    Told by the first bytes, not the name: pictures are never gzipped and never
    start as IDX headers do (two zero bytes, a type code, a dimension count).
    """
    from mnistlab.data.idx import DTYPES, GZIP_MAGIC, MAX_DIMS

    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError:
        return None
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(GZIP_MAGIC) or (
        len(head) >= 4 and head[:2] == b"\0\0" and head[2] in DTYPES and 1 <= head[3] <= MAX_DIMS
    ):
        return "idx"
    return None


def load_stack(path):
    """(n, 28, 28) uint8 images from an .npy or IDX file (gzipped or not)."""
    from mnistlab.data.idx import read_idx

    name = os.fspath(path)
    if stack_kind(path) != "npy":
        return as_uint8_stack(read_idx(path), name)
    try:
        return as_uint8_stack(np.load(path, allow_pickle=False), name)
    except (ValueError, OSError, EOFError) as e:
        raise MnistlabError(f"{name}: cannot read the .npy file ({first_line(e)})") from None


def as_uint8_stack(array, name):
    array = np.asarray(array)
    if array.ndim == 2 and array.shape == (IMAGE_SIDE, IMAGE_SIDE):
        array = array[None]
    elif array.ndim == 2 and array.shape[1] == PIXELS:
        array = array.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise MnistlabError(f"{name}: expected {IMAGE_SIDE}x{IMAGE_SIDE} images, got an array of shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if array.dtype.kind not in "biuf":
        raise MnistlabError(f"{name}: expected numbers, got an array of {array.dtype}")
    array = array.astype(np.float64)
    if array.size and (not np.isfinite(array).all() or array.min() < 0 or array.max() > 255):
        raise MnistlabError(f"{name}: pixel values must lie in [0, 1] or [0, 255]")
    if array.size and array.max() <= 1 and array.dtype.kind == "f":
        array = array * 255
    return np.round(array).astype(np.uint8)
