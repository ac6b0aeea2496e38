"""MNIST-style preprocessing: any picture of a digit brought into MNIST's own form.

A picture is brought into MNIST's form before the model sees it, the way MNIST
itself was made: greyscale, light ink on a dark background, the ink's bounding
box scaled to fit 20x20 keeping its aspect ratio, then placed in the 28x28
frame with its centre of mass at the centre, values in [0, 1].
An MNIST digit passes through unchanged, or rescaled by a pixel where its
faintest edge set MNIST's box, so a digit saved as PNG is recognized as the
array it came from.

    to_mnist(image)      a PIL image as a (28, 28) float32 digit
    as_digits(images)    arrays or pictures (paths, bytes, files, PIL images) as (n, 28, 28) digits
    load_files(paths)    (names, digits) for picture files and .npy / IDX stacks
"""

import os

import numpy as np
from PIL import Image
from scipy import ndimage

from mnistlab.data.images import load_image, load_stack, stack_kind
from mnistlab.data.registry import IMAGE_SIDE, PIXELS

WORK_SIDE = 1024  # bigger pictures are shrunk first: the digit ends up 20 px anyway
BOX = 20  # MNIST: the digit fitted in a 20x20 box inside the IMAGE_SIDE frame
CENTRE = 14.0  # where MNIST digits' centres of mass lie (row and column)
MIN_CONTRAST = 16  # grey levels between ink and background below which a picture is blank
NOISE_MADS = 3.0  # background noise floor, in robust standard deviations
EXTENT_LEVEL = 0.15  # ink fainter than this share of the darkest does not widen the digit's box
FRAME = (IMAGE_SIDE, IMAGE_SIDE)


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
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float32)
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return crop
    resized = Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS)
    return np.clip(np.asarray(resized), 0, 1)


def place(patch):
    """Put `patch` in the 28x28 frame with its centre of mass at the centre, never cutting ink off."""
    cy, cx = np.asarray(ndimage.center_of_mass(patch), dtype=np.float64)
    height, width = patch.shape
    top = int(np.clip(np.round(CENTRE - cy), 0, IMAGE_SIDE - height))
    left = int(np.clip(np.round(CENTRE - cx), 0, IMAGE_SIDE - width))
    frame = np.zeros(FRAME, dtype=np.float32)
    frame[top : top + height, left : left + width] = patch
    return frame


def to_mnist(image):
    """A PIL image as an MNIST digit: (28, 28) float32 in [0, 1]; a blank picture gives zeros."""
    if max(image.size) > WORK_SIDE:
        image = image.copy()
        image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
    ink = ink_map(greyscale(image))
    if ink is None:
        return np.zeros(FRAME, dtype=np.float32)
    return place(fit_box(ink))


def as_digits(images):
    """(n, 28, 28) MNIST digits, from arrays of them in any layout or from pictures: uint8 0-255 as
    MNIST stores them, or float32 in [0, 1]."""
    if isinstance(images, np.ndarray) and is_digit_array(images):
        images = images.reshape(-1, *FRAME)
        return images if images.dtype == np.uint8 else np.clip(images.astype(np.float32), 0, 1)
    if isinstance(images, (str, bytes, os.PathLike, Image.Image)) or hasattr(images, "read"):
        images = [images]
    digits = [picture_digit(item) for item in images]
    return np.stack(digits) if digits else np.zeros((0, *FRAME), dtype=np.float32)


def is_digit_array(array):
    """True for arrays of MNIST-form digits: (..., 28, 28), (..., 28, 28, 1) or (n, 784)."""
    shape = array.shape
    return (
        (array.ndim >= 2 and shape[-2:] == FRAME)
        or (array.ndim >= 3 and shape[-3:] == (*FRAME, 1))
        or (array.ndim == 2 and shape[1] == PIXELS)
    )


def picture_digit(item):
    """One list item as a float32 MNIST digit: a 28x28 array is one already, anything else a picture."""
    if isinstance(item, np.ndarray) and item.shape == FRAME:
        return as_digits(item)[0].astype(np.float32) / (255 if item.dtype == np.uint8 else 1)
    if isinstance(item, np.ndarray):
        item = Image.fromarray(item)
    return to_mnist(item if isinstance(item, Image.Image) else load_image(item))


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
    return names, (np.concatenate(digits) if digits else np.zeros((0, *FRAME), dtype=np.float32))
