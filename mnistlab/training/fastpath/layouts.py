"""The two layouts image tensors can flow in through a lowered model, and what each op needs to know of them.

The fastest convolution differs per device, and with it the layout:
  "nhwc": Keras' own layout, convolutions through XLA's convolution op
          (cuDNN on a GPU);
  "chwn": channels, height, width, batch: each convolution is ONE matrix
          product over an im2col patch matrix whose long axis is the batch,
          which XLA's CPU backend runs many times faster than its own
          convolutions for these small filter counts (BENCHMARKS.md).
Height and width sit at axes 1 and 2 in both, so pooling's axes are the same.
"""

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp

from mnistlab.training.fastpath import ops

SPATIAL_AXES = (1, 2)  # H and W sit at axes 1 and 2 in both layouts


def keep(x):
    return x


def swap_channels_and_batch(x):
    """NHWC <-> CHWN: the same transposition both ways."""
    return jnp.transpose(x, (3, 1, 2, 0))


@dataclass(frozen=True)
class Layout:
    name: str
    enter: Callable  # an NHWC input -> this layout
    leave: Callable  # this layout -> NHWC (before flattening: Keras' (h, w, c) feature order)
    conv: Callable  # (x, kernel, strides, padding) -> the convolution through XLA, in this layout
    channel_shape: tuple  # a per-channel vector reshaped to broadcast over an image tensor
    channel_axis: int
    batch_axis: int
    batch_shape: tuple  # a per-sample vector reshaped to broadcast over an image tensor


LAYOUTS = {
    "nhwc": Layout("nhwc", keep, keep, ops.conv_nhwc, (1, 1, 1, -1), 3, 0, (-1, 1, 1, 1)),
    "chwn": Layout(
        "chwn", swap_channels_and_batch, swap_channels_and_batch, ops.conv_chwn, (-1, 1, 1, 1), 0, 3, (1, 1, 1, -1)
    ),
}
