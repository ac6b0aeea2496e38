"""Recognizing real digit images: photos, scans, drawings, not only MNIST arrays.

A picture is brought into MNIST's own form before the model sees it, the way
MNIST itself was made: greyscale, light ink on a dark background, the ink's
bounding box scaled to fit 20x20 keeping its aspect ratio, then placed in a
28x28 frame with its centre of mass at the centre, values in [0, 1].
An MNIST digit passes through unchanged, or rescaled by a pixel where its
faintest edge set MNIST's box, so a digit saved as PNG is recognized as the
array it came from.
"""
import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from mnistlab.errors import MnistlabError

MAX_PIXELS = 40_000_000       # width * height; a 20000x20000 picture is refused before decoding
MAX_BYTES = 4 * MAX_PIXELS + 2**20  # even uncompressed RGBA of MAX_PIXELS fits; a bigger file is not read
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")  # decoders worth exposing to uploads
WORK_SIDE = 1024              # bigger pictures are shrunk first: the digit ends up 20 px anyway
FRAME, BOX = 28, 20           # MNIST: 28x28 frame, digit fitted in a 20x20 box
CENTRE = 14.0                 # where MNIST digits' centres of mass lie (row and column)
MIN_CONTRAST = 16             # grey levels between ink and background below which a picture is blank
NOISE_MADS = 3.0              # background noise floor, in robust standard deviations
EXTENT_LEVEL = 0.15           # ink fainter than this share of the darkest does not widen the digit's box

NPY_MAGIC = b"\x93NUMPY"
GZIP_MAGIC = b"\x1f\x8b"


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
        raise MnistlabError(f"{name}: file too large for a picture of at most {MAX_PIXELS:,} pixels "
                            f"(more than {MAX_BYTES // 2**20} MiB)")
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
        raise MnistlabError(f"{name}: image too large (more than {MAX_PIXELS:,} pixels)") from None
    except UnidentifiedImageError:
        raise MnistlabError(f"{name}: not an image (expected {', '.join(FORMATS)})") from None
    except Exception as e:  # noqa: BLE001  (a damaged header can fail in many decoder-specific ways)
        raise MnistlabError(f"{name}: damaged image ({first_line(e)})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise MnistlabError(f"{name}: image too large ({width}x{height}, more than {MAX_PIXELS:,} pixels)")
    if width == 0 or height == 0:
        raise MnistlabError(f"{name}: image has no pixels ({width}x{height})")
    if getattr(image, "is_animated", False):
        raise MnistlabError(f"{name}: animated image ({image.format} with several frames); give one still picture")
    try:
        image.load()
        return ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    except Exception as e:  # noqa: BLE001
        raise MnistlabError(f"{name}: damaged image ({first_line(e)})") from None


def first_line(e):
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def greyscale(image):
    """Luminance 0-255 as float; transparent pixels become the background the ink stands out from."""
    if image.mode.startswith("I") or image.mode == "F":  # 16-bit scans: Pillow's convert("L") would clip
        grey = np.asarray(image, dtype=np.float64)
        full = 65535 if image.mode.startswith("I") and grey.max() > 255 else 1 if grey.max() <= 1 else 255
        return grey * (255 / full)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float64) / 255
        grey = np.asarray(rgba.convert("L"), dtype=np.float64)
        if alpha.min() < 1:
            # Ink drawn on a transparent canvas: dark ink goes on white, light ink on black.
            ink = float((grey * alpha).sum() / max(alpha.sum(), 1e-9))
            background = 255.0 if ink < 128 else 0.0
            return grey * alpha + background * (1 - alpha)
        return grey
    return np.asarray(image.convert("L"), dtype=np.float64)


def ink_map(grey):
    """Light-on-dark ink in [0, 1] with the background at 0, or None when there is no ink."""
    background = float(np.median(grey))
    if background > 127.5:  # light paper: invert, as MNIST digits are light on dark
        grey, background = 255 - grey, 255 - background
    ink = np.clip(grey - background, 0, None)
    # Noise floor from the background's own spread (zero for a clean picture such as an MNIST digit).
    floor = NOISE_MADS * 1.4826 * float(np.median(np.abs(grey - background)))
    ink[ink <= floor] = 0
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        return None
    return ink / peak


def fit_box(ink):
    """The ink's bounding box, scaled so its longer side is BOX pixels, keeping the aspect ratio.

    Only clear ink sets the box: faint pixels (anti-aliasing, JPEG ringing,
    paper grain) stay inside it but would otherwise stretch it and shrink the
    digit (a JPEG's ringing alone can widen it by a sixth).
    """
    clear = ink >= EXTENT_LEVEL
    rows, cols = np.nonzero(clear.any(axis=1))[0], np.nonzero(clear.any(axis=0))[0]
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return crop
    resized = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0, 1)


def place(patch):
    """Put `patch` in the 28x28 frame with its centre of mass at the centre, never cutting ink off."""
    cy, cx = ndimage.center_of_mass(patch)
    height, width = patch.shape
    top = int(np.clip(np.round(CENTRE - cy), 0, FRAME - height))
    left = int(np.clip(np.round(CENTRE - cx), 0, FRAME - width))
    frame = np.zeros((FRAME, FRAME), dtype=np.float32)
    frame[top:top + height, left:left + width] = patch
    return frame


def to_mnist(image):
    """A PIL image as an MNIST digit: (28, 28) float32 in [0, 1]; a blank picture gives zeros."""
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    ink = ink_map(greyscale(image))
    if ink is None:
        return np.zeros((FRAME, FRAME), dtype=np.float32)
    return place(fit_box(ink))


def stack_kind(path):
    """'npy' or 'idx' when `path` holds a stack of images rather than one picture, else None.

    Told by the first bytes, not the name: pictures are never gzipped and never
    start as IDX headers do (two zero bytes, a type code, a dimension count).
    """
    from mnistlab.data.idx import DTYPES, MAX_DIMS

    try:
        with open(path, "rb") as f:
            head = f.read(len(NPY_MAGIC))
    except OSError:
        return None
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head.startswith(GZIP_MAGIC) or (len(head) >= 4 and head[:2] == b"\0\0" and head[2] in DTYPES
                                       and 1 <= head[3] <= MAX_DIMS):
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
    if array.ndim == 2 and array.shape == (FRAME, FRAME):
        array = array[None]
    elif array.ndim == 2 and array.shape[1] == FRAME * FRAME:
        array = array.reshape(-1, FRAME, FRAME)
    elif array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.shape[1:] != (FRAME, FRAME):
        raise MnistlabError(f"{name}: expected 28x28 images, got an array of shape {array.shape}")
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


def as_digits(images):
    """Model-ready (n, 28, 28) MNIST digits: uint8 0-255 as MNIST stores them, or float32 in [0, 1]."""
    if isinstance(images, np.ndarray) and images.ndim >= 2 and images.shape[-2:] == (FRAME, FRAME):
        images = images.reshape(-1, FRAME, FRAME)
        return images if images.dtype == np.uint8 else np.clip(images.astype(np.float32), 0, 1)
    if isinstance(images, (str, bytes, os.PathLike, Image.Image)) or hasattr(images, "read"):
        images = [images]
    digits = [picture_digit(item) for item in images]
    return np.stack(digits) if digits else np.zeros((0, FRAME, FRAME), dtype=np.float32)


def picture_digit(item):
    """One list item as a float32 MNIST digit: a 28x28 array is one already, anything else a picture."""
    if isinstance(item, np.ndarray) and item.shape == (FRAME, FRAME):
        return as_digits(item)[0].astype(np.float32) / (255 if item.dtype == np.uint8 else 1)
    if isinstance(item, np.ndarray):
        item = Image.fromarray(item)
    return to_mnist(item if isinstance(item, Image.Image) else load_image(item))


def predict(model, images, batch_size=None):
    """Class probabilities, (n, 10), of a Keras model for `images`.

    `images`: an (n, 28, 28) array of MNIST-form digits (uint8 0-255 or float
    0-1), or a list of pictures: paths, bytes, binary files or PIL images,
    each brought into MNIST form with to_mnist first.
    """
    from mnistlab.evaluation import EVAL_BATCH, prepare

    digits = as_digits(images)
    if not len(digits):
        return np.zeros((0, 10), dtype=np.float32)
    probabilities = model.predict(prepare(model, digits), batch_size=batch_size or EVAL_BATCH, verbose=0)
    return np.asarray(probabilities, dtype=np.float32)


def load_files(paths):
    """(names, digits) for picture files and .npy / IDX stacks: one float32 (28, 28) digit per
    picture, one per stack row named path[i]. The first unreadable file stops it with its error."""
    names, digits = [], []
    for path in paths:
        name = os.fspath(path)
        if stack_kind(path):
            stack = load_stack(path)
            names += [f"{name}[{i}]" for i in range(len(stack))]
            digits.append(stack.astype(np.float32) / 255)
        else:
            names.append(name)
            digits.append(to_mnist(load_image(path))[None])
    return names, (np.concatenate(digits) if digits else np.zeros((0, FRAME, FRAME), dtype=np.float32))
