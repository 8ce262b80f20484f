"""A 2-D convolution whose gradients stay fast inside `lax.scan` on XLA:CPU.

Autodiff writes the gradients of an NHWC/HWIO convolution as convolutions
with permuted dimension labels (and a kernel `reverse`). XLA:CPU rewrites
those into its fast canonical form in a program's entry computation but not
inside a while loop, so several train steps fused in one `lax.scan` ran the
CNN's backward pass in a generic loop nest: 190 ms instead of 13 ms per step
(benchmarks/NOTES.md). `conv_canonical` is the same convolution with a
`custom_vjp` whose backward pass is itself written as NHWC/HWIO convolutions.
`canonical_conv_general_dilated` plugs it into `nn.Conv` for the plain case and
hands anything else to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

DN_NHWC = ("NHWC", "HWIO", "NHWC")


@jax.custom_vjp
def conv_canonical(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array) -> jax.Array:
    """'valid', stride-1 NHWC convolution (cross-correlation, as Keras's Conv2D)."""
    return jax.lax.conv_general_dilated(x_BxHxWxC, kernel_KxKxCxF, (1, 1), "VALID", dimension_numbers=DN_NHWC)


def _conv_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv_canonical(x, w), (x, w)


def _conv_bwd(residuals: tuple[jax.Array, jax.Array], g_BxHxWxF: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = residuals
    kh, kw = w.shape[:2]
    # dW[i,j,c,f] = sum_{b,h,w} x[b,h+i,w+j,c] g[b,h,w,f]: a convolution with batch and channel axes swapped.
    dw_CxKxKxF = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), g_BxHxWxF.transpose(1, 2, 0, 3), (1, 1), "VALID", dimension_numbers=DN_NHWC
    )
    # dX: the 'full' convolution of g with the spatially flipped kernel, input and output channels swapped.
    w_flipped = w[::-1, ::-1].transpose(0, 1, 3, 2)
    dx = jax.lax.conv_general_dilated(
        g_BxHxWxF, w_flipped, (1, 1), [(kh - 1, kh - 1), (kw - 1, kw - 1)], dimension_numbers=DN_NHWC
    )
    return dx.astype(x.dtype), dw_CxKxKxF.transpose(1, 2, 0, 3).astype(w.dtype)


conv_canonical.defvjp(_conv_fwd, _conv_bwd)


def _is_plain(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    lhs_dilation: Any,
    rhs_dilation: Any,
    dimension_numbers: Any,
    feature_group_count: int,
) -> bool:
    """A 2-D NHWC/HWIO convolution with stride 1, no dilation and one group."""
    if lhs.ndim != 4 or tuple(window_strides) != (1, 1) or feature_group_count != 1:
        return False
    if set(lhs_dilation or (1,)) != {1} or set(rhs_dilation or (1,)) != {1}:
        return False
    labels = jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
    return labels == jax.lax.conv_dimension_numbers(lhs.shape, rhs.shape, DN_NHWC)


def canonical_conv_general_dilated(
    lhs: jax.Array,
    rhs: jax.Array,
    window_strides: Sequence[int],
    padding: Any,
    lhs_dilation: Any = None,
    rhs_dilation: Any = None,
    dimension_numbers: Any = None,
    feature_group_count: int = 1,
    precision: Any = None,
    **kwargs: Any,
) -> jax.Array:
    """`lax.conv_general_dilated` for `nn.Conv(conv_general_dilated=...)`.

    The plain case (see `_is_plain`, any padding) runs through `conv_canonical`;
    everything else, or any extra keyword, through `lax.conv_general_dilated`.
    """
    if kwargs or not _is_plain(
        lhs, rhs, window_strides, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
    ):
        return jax.lax.conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision=precision,
            **kwargs,
        )
    pads = (
        jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
        if isinstance(padding, str)
        else padding
    )
    if any(tuple(p) != (0, 0) for p in pads):
        lhs = jnp.pad(lhs, [(0, 0), *map(tuple, pads), (0, 0)])
    return conv_canonical(lhs, rhs)
