"""Training-time augmentation: each image rotated, zoomed and shifted at random, the whole batch in one
compiled JAX program (bilinear sampling; outside the image is 0, MNIST's background); optionally
distorted elastically (smooth random displacements, as Simard et al. 2003 distort digits) and with a
random rectangle erased (Zhong et al. 2017's random erasing, filled with the background's 0).

It is not a layer of the model. Keras' own RandomRotation, RandomZoom and RandomTranslation layers
made a convnet's training steps 16x slower on this CPU (25.4 s against 1.6 s per 512 images,
BENCHMARKS.md), and a model without them is the same plain Keras model in training and at inference.
Both training loops take each epoch's images from epoch_images: the fast path (still on its compiled
epoch) and Keras' fit (training/augmented.py).
"""

import math

import numpy as np

from mnistlab import streams
from mnistlab.data.registry import IMAGE_SIDE


def transforms(key, n, strength, flip=False):
    """Per image: rotation angle (radians), zoom factor, (dy, dx) shift in pixels, drawn uniformly
    within +-strength x 90 degrees, 1 +- strength and +-strength x the image side; and mirror, -1
    (left to right) for half the images with `flip`, else 1."""
    import jax
    import jax.numpy as jnp

    k_angle, k_zoom, k_shift = jax.random.split(key, 3)
    angle = jax.random.uniform(k_angle, (n,), minval=-1.0, maxval=1.0) * strength * (math.pi / 2)
    zoom = 1.0 + jax.random.uniform(k_zoom, (n,), minval=-1.0, maxval=1.0) * strength
    shift = jax.random.uniform(k_shift, (n, 2), minval=-1.0, maxval=1.0) * strength * IMAGE_SIDE
    # Its own stream (not a fourth split), so that runs without flips draw what they drew before.
    mirror = (
        jnp.where(jax.random.bernoulli(jax.random.fold_in(key, streams.MIRROR), 0.5, (n,)), -1.0, 1.0)
        if flip
        else jnp.ones((n,))
    )
    return angle, zoom, shift, mirror


def displacements(key, n, pixels):
    """Per image a smooth random field of (dy, dx) displacements (n, 28, 28, 2), in pixels: normal draws
    of standard deviation `pixels` on a coarse grid, interpolated. Simard et al. smooth white noise with
    a Gaussian (sigma 4 pixels); a 7x7 grid gives fields as smooth for a fraction of the work."""
    import jax

    coarse = jax.random.normal(key, (n, ELASTIC_GRID, ELASTIC_GRID, 2)) * pixels
    return jax.image.resize(coarse, (n, IMAGE_SIDE, IMAGE_SIDE, 2), "cubic")


def erased(images, key, share):
    """images (n, h, w) with, in each image at the chance `share`, one random rectangle set to 0: its area
    2-25% of the image, its sides' ratio between 1:3 and 3:1 (random erasing's ranges, Zhong et al.)."""
    import jax
    import jax.numpy as jnp

    n, h, w = images.shape
    k_on, k_area, k_ratio, k_y, k_x = jax.random.split(key, 5)
    area = jax.random.uniform(k_area, (n,), minval=0.02, maxval=0.25) * h * w
    ratio = jnp.exp(jax.random.uniform(k_ratio, (n,), minval=-math.log(3), maxval=math.log(3)))
    eh = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, h)
    ew = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, w)
    top = jnp.floor(jax.random.uniform(k_y, (n,)) * (h - eh + 1))
    left = jnp.floor(jax.random.uniform(k_x, (n,)) * (w - ew + 1))
    rows = jnp.arange(h, dtype=jnp.float32)[None, :, None]
    cols = jnp.arange(w, dtype=jnp.float32)[None, None, :]
    inside = (
        (rows >= top[:, None, None])
        & (rows < (top + eh)[:, None, None])
        & (cols >= left[:, None, None])
        & (cols < (left + ew)[:, None, None])
    )
    on = jax.random.bernoulli(k_on, share, (n,))[:, None, None]
    return jnp.where(on & inside, 0.0, images)


def warp(images, angle, zoom, shift, mirror=None, displacement=None):
    """images (n, h, w) float32 -> each resampled through its own rotation, zoom and shift about the
    centre, then mirrored left to right where `mirror` is -1; `displacement` (n, h, w, 2): each output
    pixel's source moved by that many pixels more (elastic distortion)."""
    import jax.numpy as jnp

    n, h, w = images.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    ys, xs = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32) - cy, jnp.arange(w, dtype=jnp.float32) - cx, indexing="ij")
    cos, sin = jnp.cos(angle)[:, None, None], jnp.sin(angle)[:, None, None]
    inv = 1.0 / zoom[:, None, None]
    # Each output pixel reads the source point that the inverse transform maps it to.
    if mirror is not None:
        xs = xs[None] * mirror[:, None, None]
    dy, dx = ys[None] - shift[:, 0, None, None], xs - shift[:, 1, None, None]
    src_y = (cos * dy + sin * dx) * inv + cy
    src_x = (-sin * dy + cos * dx) * inv + cx
    if displacement is not None:
        src_y, src_x = src_y + displacement[..., 0], src_x + displacement[..., 1]
    y0, x0 = jnp.floor(src_y), jnp.floor(src_x)
    fy, fx = src_y - y0, src_x - x0
    flat = images.reshape(n, h * w)

    def at(yy, xx):
        inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        index = (jnp.clip(yy, 0, h - 1) * w + jnp.clip(xx, 0, w - 1)).astype(jnp.int32).reshape(n, -1)
        return jnp.where(inside, jnp.take_along_axis(flat, index, axis=1).reshape(n, h, w), 0.0)

    return (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) + fy * (
        (1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)
    )


_compiled = {}
CHUNK = 4096  # images per compiled call: the transform's temporaries stay small
ELASTIC_GRID = 7  # control points per side of an elastic displacement field


def augment(pixels, key, strength, flip=False, erase=0.0, elastic=0.0):
    """A batch of images (n, ...) holding 28x28 pixels each -> the same shape and dtype, each randomly
    transformed; `key` a JAX random key; `elastic`: the displacements' scale in pixels (0: none);
    `erase`: the share of images with a rectangle erased. uint8 pixels come back rounded to uint8
    (what the training loops take), floats in [0, 1] as float32."""
    import jax
    import jax.numpy as jnp

    settings = (strength, flip, erase, elastic)
    fn = _compiled.get(settings)
    if fn is None:

        def one(x, key):
            n = x.shape[0]
            pixels = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x
            # Streams of their own (not more splits): runs without them draw what they drew before.
            field = displacements(jax.random.fold_in(key, streams.ELASTIC), n, elastic) if elastic else None
            out = warp(pixels.reshape(n, IMAGE_SIDE, IMAGE_SIDE), *transforms(key, n, strength, flip), field)
            if erase:
                out = erased(out, jax.random.fold_in(key, streams.ERASE), erase)
            out = jnp.clip(out, 0.0, 1.0).reshape(x.shape)
            return jnp.round(out * 255.0).astype(jnp.uint8) if x.dtype == jnp.uint8 else out

        fn = _compiled[settings] = jax.jit(one)
    return np.asarray(fn(pixels, key))


def epoch_images(x, strength, seed, epoch, flip=False, erase=0.0, elastic=0.0):
    """All of x transformed for one epoch, row for row: a function of (seed, epoch) only, so a
    resumed run draws what the uninterrupted one drew."""
    import jax

    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), epoch), streams.AUGMENT)
    return _transformed(x, key, strength, flip, erase, elastic)


def copy_images(x, strength, seed, view, flip=False):
    """Test-time augmentation's `view`-th copy of x, transformed as training's epochs are: a stream
    of its own, so that no view repeats an epoch's images."""
    import jax

    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), view), streams.TEST_COPIES)
    return _transformed(x, key, strength, flip)


def _transformed(x, key, strength, flip, erase=0.0, elastic=0.0):
    import jax

    return np.concatenate(
        [
            augment(x[i : i + CHUNK], jax.random.fold_in(key, i), strength, flip, erase, elastic)
            for i in range(0, len(x), CHUNK)
        ]
    )
