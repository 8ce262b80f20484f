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

On CPU a plain convolution whose patch matrix is small (`IM2COL_MAX_PATCH_BYTES`)
runs as `conv_im2col` instead: the K*K shifted slices concatenated along the
channels and one matrix product, differentiated by JAX. In the chapter's CNN
that is the first convolution (one input channel: XLA:CPU's convolution of a
1-channel image is slow) and the last one (3x3 outputs: its dX as a 'full'
convolution does 2.8x the useful FLOPs). Measured in benchmarks/NOTES.md.

`conv2d` (what the chapter's `Conv2D` layer calls) adds the bias too: folded into
im2col's matrix product, or after `conv_canonical` through `bias_add`, whose
gradient is a matrix-vector product instead of XLA:CPU's slow reduction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

DN_NHWC = ("NHWC", "HWIO", "NHWC")
IM2COL_MAX_PATCH_BYTES = 4 * 2**20
"""On CPU, plain convolutions whose patch matrix (B*H'*W' rows, K*K*C columns) is at most this
many bytes run as `conv_im2col`; larger ones (the chapter's second convolution, 8.9 MB at batch 64)
as `conv_canonical`, where building the patches would cost more memory traffic than it saves."""
IM2COL_PHASE_ROWS = True
"""Whether `conv_im2col` orders its patch rows by output row and column parity when both output sizes are
even (the chapter's first convolution, 26x26): a following 2x2 max-pool then compares four row blocks
instead of neighbouring rows, 7% of the CNN's train step on CPU (benchmarks/NOTES.md). The output's
layout is NHWC either way."""


@jax.custom_vjp
def conv_canonical(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array) -> jax.Array:
    """'valid', stride-1 NHWC convolution (cross-correlation, as Keras's Conv2D)."""
    return jax.lax.conv_general_dilated(x_BxHxWxC, kernel_KxKxCxF, (1, 1), "VALID", dimension_numbers=DN_NHWC)


def _conv_fwd(x: jax.Array, w: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return conv_canonical(x, w), (x, w)


def _conv_bwd(residuals: tuple[jax.Array, jax.Array], g_BxHxWxF: jax.Array) -> tuple[jax.Array, jax.Array]:
    x, w = residuals
    # dW[i,j,c,f] = sum_{b,h,w} x[b,h+i,w+j,c] g[b,h,w,f]: a convolution with batch and channel axes swapped.
    dw_CxKxKxF = jax.lax.conv_general_dilated(
        x.transpose(3, 1, 2, 0), g_BxHxWxF.transpose(1, 2, 0, 3), (1, 1), "VALID", dimension_numbers=DN_NHWC
    )
    dx = (_dx_by_taps if jax.default_backend() == "cpu" else _dx_full_conv)(g_BxHxWxF, w, x.shape)
    return dx.astype(x.dtype), dw_CxKxKxF.transpose(1, 2, 0, 3).astype(w.dtype)


def _dx_full_conv(g_BxHxWxF: jax.Array, w_KxKxCxF: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
    """dX as the 'full' convolution of g with the spatially flipped kernel, input and output channels swapped."""
    kh, kw = w_KxKxCxF.shape[:2]
    w_flipped = w_KxKxCxF[::-1, ::-1].transpose(0, 1, 3, 2)
    return jax.lax.conv_general_dilated(
        g_BxHxWxF, w_flipped, (1, 1), [(kh - 1, kh - 1), (kw - 1, kw - 1)], dimension_numbers=DN_NHWC
    )


def _dx_by_taps(g_BxHxWxF: jax.Array, w_KxKxCxF: jax.Array, x_shape: tuple[int, ...]) -> jax.Array:
    """dX as K*K matrix products g @ W[i, j]^T, each added at its offset (i, j).

    The same sum as the 'full' convolution, without its products with the padding's zeros, which
    XLA:CPU computes (1.4x the useful FLOPs for the chapter's second convolution, 2.8x for its third).
    """
    kh, kw, c, f = w_KxKxCxF.shape
    b, ho, wo, _ = g_BxHxWxF.shape
    g_NxF = g_BxHxWxF.reshape(-1, f)
    dx = None
    for i in range(kh):
        for j in range(kw):
            tap = (g_NxF @ w_KxKxCxF[i, j].T).reshape(b, ho, wo, c)
            tap = jnp.pad(tap, [(0, 0), (i, x_shape[1] - ho - i), (j, x_shape[2] - wo - j), (0, 0)])
            dx = tap if dx is None else dx + tap
    return dx


conv_canonical.defvjp(_conv_fwd, _conv_bwd)


def conv_im2col(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array, bias_F: jax.Array | None = None) -> jax.Array:
    """'valid', stride-1 NHWC convolution as one matrix product over im2col patches (plus `bias_F` if given).

    The same function as `conv_canonical` (sums in another order): patches (B, H', W', K*K*C) hold the
    K*K shifted slices in kernel order (row, column, channel), matching the HWIO kernel reshaped to
    (K*K*C, F). With a bias, the patches get a column of ones and the kernel matrix the bias as its last
    row, so the bias gradient comes out of dW's matrix product instead of a separate sum over B*H'*W'
    rows (which XLA:CPU runs slowly). With even H' and W' the rows are in parity order
    (`IM2COL_PHASE_ROWS`), transposed back to NHWC at the end. Its gradients are JAX's: dW one matrix
    product, dX one product and K*K padded adds.
    """
    patches_NxP, kernel_PxF = _im2col_operands(x_BxHxWxC, kernel_KxKxCxF, bias_F)
    return _from_rows(patches_NxP @ kernel_PxF, x_BxHxWxC.shape, kernel_KxKxCxF.shape)


def _im2col_operands(x: jax.Array, w: jax.Array, bias: jax.Array | None) -> tuple[jax.Array, jax.Array]:
    """`conv_im2col`'s patch matrix (N, K*K*C [+1]) and kernel matrix (K*K*C [+1], F)."""
    kh, kw, c, f = w.shape
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    if _phases(x.shape, w.shape):  # rows (row parity, column parity, b, h/2, w/2): 2x2 windows a block apart
        slices = [
            jnp.stack([x[:, di + i : di + i + ho : 2, dj + j : dj + j + wo : 2] for di in (0, 1) for dj in (0, 1)])
            for i in range(kh)
            for j in range(kw)
        ]
    else:
        slices = [x[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)]
    kernel = w.reshape(kh * kw * c, f)
    if bias is not None:
        slices.append(jnp.ones((*slices[0].shape[:-1], 1), x.dtype))
        kernel = jnp.concatenate([kernel, bias.reshape(1, f).astype(kernel.dtype)], axis=0)
    patches = jnp.concatenate(slices, axis=-1) if len(slices) > 1 else slices[0]
    return patches.reshape(-1, kernel.shape[0]), kernel


def _phases(x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> bool:
    """Whether `conv_im2col` orders its rows by output parity (`IM2COL_PHASE_ROWS`, both output sizes even)."""
    ho, wo = x_shape[1] - w_shape[0] + 1, x_shape[2] - w_shape[1] + 1
    return IM2COL_PHASE_ROWS and ho % 2 == 0 and wo % 2 == 0


def _from_rows(out_NxF: jax.Array, x_shape: tuple[int, ...], w_shape: tuple[int, ...]) -> jax.Array:
    """`conv_im2col`'s product rows as the (B, H', W', F) output."""
    b, ho, wo, f = x_shape[0], x_shape[1] - w_shape[0] + 1, x_shape[2] - w_shape[1] + 1, out_NxF.shape[-1]
    if _phases(x_shape, w_shape):
        return out_NxF.reshape(2, 2, b, ho // 2, wo // 2, f).transpose(2, 3, 0, 4, 1, 5).reshape(b, ho, wo, f)
    return out_NxF.reshape(b, ho, wo, f)


@jax.custom_vjp
def bias_add(y_NxF: jax.Array, bias_F: jax.Array) -> jax.Array:
    """`y + bias` over the last axis; the bias gradient is a matrix-vector product with ones.

    JAX's own gradient is a sum over every leading axis, which XLA:CPU runs as a slow scalar reduction
    (0.9 ms for the chapter's first feature map, 64x26x26x32; benchmarks/NOTES.md).
    """
    return y_NxF + bias_F


def _bias_add_fwd(y: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    return y + b, b


def _bias_add_bwd(b: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    g_NxF = g.reshape(-1, g.shape[-1])
    return g, (jnp.ones((g_NxF.shape[0],), g.dtype) @ g_NxF).astype(b.dtype)


bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)


def conv2d(
    x_BxHxWxC: jax.Array,
    kernel_KxKxCxF: jax.Array,
    bias_F: jax.Array,
    padding: Any = "VALID",
    even_block: bool = False,
) -> jax.Array:
    """Stride-1 NHWC/HWIO convolution plus bias, as Keras's Conv2D (cross-correlation), fast on XLA:CPU.

    Args:
      x_BxHxWxC: images (B, H, W, C).
      kernel_KxKxCxF: kernel (KH, KW, C, F), HWIO.
      bias_F: bias (F,), added to every output position.
      padding: "VALID", "SAME" or explicit ((top, bottom), (left, right)).
      even_block: on CPU with an odd output height or width, compute the top-left block of even size
        (all a following 2x2 'valid' max-pool reads) as one convolution and the last row / column as
        others (`_conv2d_edge`), concatenated: the same output and gradients. Where only that block is
        read (the pool), XLA drops the rest of the forward pass and the edges skip their backward pass:
        the chapter CNN's second convolution does 100 of its 121 output positions in a train step
        (benchmarks/NOTES.md, "session 3b").

    Returns:
      (B, H', W', F) in the promoted dtype of x and kernel. On CPU, `conv_im2col` with the bias folded into
      its matrix product when the patch matrix is small (`IM2COL_MAX_PATCH_BYTES`); otherwise
      `conv_canonical` and, on CPU, `bias_add`.
    """
    x_BxHxWxC = _padded(x_BxHxWxC, kernel_KxKxCxF, (1, 1), padding)
    kh, kw = kernel_KxKxCxF.shape[:2]
    ho, wo = x_BxHxWxC.shape[1] - kh + 1, x_BxHxWxC.shape[2] - kw + 1
    he, we = ho // 2 * 2, wo // 2 * 2
    if not even_block or jax.default_backend() != "cpu" or (he, we) == (ho, wo) or not he or not we:
        return _conv2d_valid(x_BxHxWxC, kernel_KxKxCxF, bias_F)
    y = _conv2d_valid(x_BxHxWxC[:, : he + kh - 1, : we + kw - 1], kernel_KxKxCxF, bias_F)
    if we < wo:  # the last column, rows of the block
        right = _conv2d_edge(x_BxHxWxC[:, : he + kh - 1, we:], kernel_KxKxCxF, bias_F)
        y = jnp.concatenate([y, right], axis=2)
    if he < ho:  # the last row, every column
        y = jnp.concatenate([y, _conv2d_edge(x_BxHxWxC[:, he:], kernel_KxKxCxF, bias_F)], axis=1)
    return y


@jax.custom_vjp
def _conv2d_edge(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array, bias_F: jax.Array) -> jax.Array:
    """`_conv2d_valid` whose backward pass runs only when its output's gradient is not all zeros.

    For `conv2d`'s last row / column under `even_block`: a 2x2 'valid' pool never reads them, so their
    gradient is zeros, which XLA does not see through (it would multiply them by the kernel).
    """
    return _conv2d_valid(x_BxHxWxC, kernel_KxKxCxF, bias_F)


def _conv2d_edge_fwd(x: jax.Array, w: jax.Array, b: jax.Array) -> tuple[jax.Array, tuple]:
    return _conv2d_valid(x, w, b), (x, w, b)


def _conv2d_edge_bwd(residuals: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    x, w, b = residuals

    def grads() -> tuple[jax.Array, jax.Array, jax.Array]:
        return jax.vjp(_conv2d_valid, x, w, b)[1](g)

    def zeros() -> tuple[jax.Array, jax.Array, jax.Array]:
        return jnp.zeros_like(x), jnp.zeros_like(w), jnp.zeros_like(b)

    return jax.lax.cond(jnp.any(g != 0), grads, zeros)


_conv2d_edge.defvjp(_conv2d_edge_fwd, _conv2d_edge_bwd)


def _conv2d_valid(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array, bias_F: jax.Array) -> jax.Array:
    """`conv2d` with 'valid' padding, one convolution."""
    if _use_im2col(x_BxHxWxC, kernel_KxKxCxF):
        return conv_im2col(x_BxHxWxC, kernel_KxKxCxF, bias_F)
    y = conv_canonical(x_BxHxWxC, kernel_KxKxCxF)
    bias_F = bias_F.astype(y.dtype)
    return bias_add(y, bias_F) if jax.default_backend() == "cpu" else y + bias_F


def _padded(x: jax.Array, w: jax.Array, strides: Sequence[int], padding: Any) -> jax.Array:
    """NHWC `x` zero-padded as `padding` ("VALID", "SAME" or explicit pads) asks, for a 'valid' convolution."""
    pads = padding
    if isinstance(padding, str):
        pads = jax.lax.padtype_to_pads(x.shape[1:3], w.shape[:2], strides, padding)
    if any(tuple(p) != (0, 0) for p in pads):
        x = jnp.pad(x, [(0, 0), *map(tuple, pads), (0, 0)])
    return x


def _use_im2col(x: jax.Array, w: jax.Array) -> bool:
    """On CPU: whether the patch matrix of a 'valid' convolution of `x` with `w` is small enough."""
    kh, kw, c, _ = w.shape
    rows = x.shape[0] * (x.shape[1] - kh + 1) * (x.shape[2] - kw + 1)
    return jax.default_backend() == "cpu" and rows * kh * kw * c * x.dtype.itemsize <= IM2COL_MAX_PATCH_BYTES


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

    The plain case (see `_is_plain`, any padding) runs through `conv_canonical`, or on CPU through
    `conv_im2col` when its patch matrix is small (`IM2COL_MAX_PATCH_BYTES`); everything else, or any
    extra keyword, through `lax.conv_general_dilated`.
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
    lhs = _padded(lhs, rhs, window_strides, padding)
    return conv_im2col(lhs, rhs) if _use_im2col(lhs, rhs) else conv_canonical(lhs, rhs)
