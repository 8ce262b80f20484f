"""The chapter's MNIST convolutional network, in two styles with one parameter tree.

The Keras model of the chapter is::

    Conv2D(32, 3, relu) -> MaxPool2D(2) -> Conv2D(64, 3, relu) -> MaxPool2D(2)
    -> Conv2D(128, 3, relu) -> Flatten -> Dense(10, softmax)

with Keras's default ``padding="valid"`` and 104,202 parameters for a
28x28x1 input. Feature maps: 26x26x32 -> 13x13x32 -> 11x11x64 -> 5x5x64 ->
3x3x128 -> 1152 -> 10.

``ChapterCNN`` is the compact version (a loop over conv widths);
``FunctionalCNN`` writes every layer out in order, as the chapter's last
section writes a Keras functional model. Both name their submodules
``conv_0``, ``conv_1``, ``conv_2`` and ``dense``, so one set of parameters
applies to either.

Both return logits (no softmax: losses take logits for numerical stability),
always in float32 even when ``dtype`` asks for a lower compute precision.
Both accept images shaped (B, H, W, 1) or (B, H, W); the channel axis is added
to the latter. The pooled feature maps are sown into the ``intermediates``
collection as ``pool_0`` and ``pool_1`` so ``capture_intermediates=True``
shows every stage of the network. Kernels start from Keras's default
``glorot_uniform`` and biases from zeros, as in the chapter. Convolutions are
`Conv2D` layers (``nn.Conv``'s parameters) running `conv_ops.conv2d`: the same
function, with gradients that stay fast when several steps are fused in
`lax.scan` on CPU and a bias gradient without XLA:CPU's slow reduction.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from dlchapter.models import conv_ops

Dtype = Any

CONV_FEATURES: tuple[int, ...] = (32, 64, 128)
"""Output channels of the chapter's three convolutions."""

KERNEL_SIZE: tuple[int, int] = (3, 3)
NUM_CLASSES: int = 10
CHAPTER_PARAM_COUNT: int = 104_202
"""Parameter count of the chapter's Keras summary for 28x28x1 inputs."""

KERNEL_INIT = nn.initializers.glorot_uniform()
"""Keras's default kernel initializer for Conv2D and Dense (biases start at 0)."""

EVEN_BLOCKS = True
"""Whether the CNNs' pooled convolutions compute the block the pool reads apart (`Conv2D.even_block`)."""


def _as_nhwc(x: jax.Array) -> jax.Array:
    """Returns images as (B, H, W, C), adding a channel axis to (B, H, W)."""
    x = jnp.asarray(x)
    if x.ndim == 3:
        return x[..., None]
    if x.ndim == 4:
        return x
    raise ValueError(f"expected images shaped (B, H, W) or (B, H, W, C), got shape {x.shape}")


class Conv2D(nn.Module):
    """Keras's Conv2D without the activation: a stride-1 convolution plus bias, through `conv_ops.conv2d`.

    The parameters are those of ``nn.Conv(features, kernel_size)`` (same names, shapes, initializers and
    so the same initial values): ``kernel`` (KH, KW, C, F) and ``bias`` (F,). Maps (B, H, W, C) to
    (B, H', W', F); on CPU the bias is folded into the convolution's matrix product or added with a
    fast gradient (`conv_ops.conv2d`), which `nn.Conv`'s own bias add does not allow.

    Attributes:
      features: output channels F.
      kernel_size: (KH, KW).
      padding: "VALID" (Keras's default), "SAME" or explicit pads.
      kernel_init, bias_init: initializers (Keras's glorot_uniform and zeros).
      dtype: compute dtype (None: promoted from the input and parameters).
      param_dtype: dtype of the parameters.
      even_block: for a layer a 2x2 max-pool follows: `conv_ops.conv2d`'s `even_block` (the same output,
        a faster train step where the pool drops an odd last row or column).
    """

    features: int
    kernel_size: tuple[int, int] = KERNEL_SIZE
    padding: Any = "VALID"
    kernel_init: Any = KERNEL_INIT
    bias_init: Any = nn.initializers.zeros_init()
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    even_block: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """(B, H, W, C) -> (B, H', W', features)."""
        kernel_shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self.param("kernel", self.kernel_init, kernel_shape, self.param_dtype)
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        return conv_ops.conv2d(x, kernel, bias, self.padding, even_block=self.even_block)


def _max_pool(x: jax.Array) -> jax.Array:
    """Keras's MaxPooling2D(2): 2x2 window, stride 2, 'valid' (floor) padding.

    Written as reshape + max rather than `nn.max_pool`: the same function, but
    its gradient is a compare-and-select instead of XLA's select-and-scatter,
    which XLA:CPU runs as a slow scalar loop (2.6x on the whole train step;
    benchmarks/NOTES.md). Gradients differ only at exact ties in a window.
    """
    b, h, w, c = x.shape
    x = x[:, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


class ChapterCNN(nn.Module):
    """The chapter's CNN as one compact module looping over conv widths.

    The max-pool runs before the relu (``FunctionalCNN`` keeps the chapter's
    order): the same values and gradients, since both are exact selections,
    with the relu on a quarter of the values (benchmarks/NOTES.md).

    Attributes:
      features: output channels of each 3x3 convolution; a 2x2 max-pool
        follows every convolution but the last.
      num_classes: size of the output logits.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); logits are cast to float32.
      param_dtype: dtype of the parameters.
    """

    features: tuple[int, ...] = CONV_FEATURES
    num_classes: int = NUM_CLASSES
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps images (B, H, W[, 1]) to logits (B, num_classes); `train` is unused (no dropout)."""
        del train
        x = _as_nhwc(x).astype(self.dtype)
        last = len(self.features) - 1
        for i, width in enumerate(self.features):
            pooled = i < last
            x = Conv2D(
                width,
                KERNEL_SIZE,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                even_block=pooled and EVEN_BLOCKS,
                name=f"conv_{i}",
            )(x)
            if pooled:  # relu(pool(y)) is pool(relu(y)), gradient included, with a quarter of the relus
                x = nn.relu(_max_pool(x))
                self.sow("intermediates", f"pool_{i}", x)
            else:
                x = nn.relu(x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(
            self.num_classes,
            kernel_init=KERNEL_INIT,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="dense",
        )(x)
        return x.astype(jnp.float32)


class FunctionalCNN(nn.Module):
    """The same CNN written layer by layer, like a Keras functional model.

    Same parameter tree as ``ChapterCNN()`` with its default ``features``.

    Attributes:
      num_classes: size of the output logits.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); logits are cast to float32.
      param_dtype: dtype of the parameters.
    """

    num_classes: int = NUM_CLASSES
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """Maps images (B, H, W[, 1]) to logits (B, num_classes); `train` is unused (no dropout)."""
        del train
        kw = dict(kernel_init=KERNEL_INIT, dtype=self.dtype, param_dtype=self.param_dtype)
        conv_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inputs = _as_nhwc(x).astype(self.dtype)

        x = Conv2D(32, (3, 3), name="conv_0", even_block=EVEN_BLOCKS, **conv_kw)(inputs)
        x = nn.relu(x)
        x = _max_pool(x)
        self.sow("intermediates", "pool_0", x)

        x = Conv2D(64, (3, 3), name="conv_1", even_block=EVEN_BLOCKS, **conv_kw)(x)
        x = nn.relu(x)
        x = _max_pool(x)
        self.sow("intermediates", "pool_1", x)

        x = Conv2D(128, (3, 3), name="conv_2", **conv_kw)(x)
        x = nn.relu(x)

        x = x.reshape((x.shape[0], -1))
        logits = nn.Dense(self.num_classes, name="dense", **kw)(x)
        return logits.astype(jnp.float32)
