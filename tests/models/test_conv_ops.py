"""The canonical-gradient convolution and `conv2d` (with bias): forward and gradients against numpy, every path."""

from __future__ import annotations

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dlchapter.models import conv_ops
from dlchapter.models.conv_ops import (
    canonical_conv_general_dilated,
    conv_canonical,
    conv_im2col,
)


def _numpy_conv(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """'valid' cross-correlation in float64, written as a sum over kernel offsets."""
    kh, kw = w.shape[:2]
    ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(np.einsum("bhwc,cf->bhwf", x[:, i : i + ho, j : j + wo], w[i, j]) for i in range(kh) for j in range(kw))


def _numpy_grads(x: np.ndarray, w: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of sum(conv(x, w) * g) by the chain rule on `_numpy_conv`'s sum."""
    kh, kw = w.shape[:2]
    ho, wo = g.shape[1:3]
    dx, dw = np.zeros_like(x), np.zeros_like(w)
    for i in range(kh):
        for j in range(kw):
            dx[:, i : i + ho, j : j + wo] += np.einsum("bhwf,cf->bhwc", g, w[i, j])
            dw[i, j] = np.einsum("bhwc,bhwf->cf", x[:, i : i + ho, j : j + wo], g)
    return dx, dw


@pytest.mark.parametrize("conv", [conv_canonical, conv_im2col])
@pytest.mark.parametrize(
    "shape", [(2, 9, 7, 3, 5, 3), (3, 6, 6, 1, 4, 2), (2, 5, 5, 4, 3, 1), (2, 8, 6, 2, 3, 3), (1, 9, 9, 1, 2, 2)]
)  # the last two have even output sizes: conv_im2col's rows in parity order (IM2COL_PHASE_ROWS)
def test_forward_and_gradients_match_numpy(shape, conv):
    b, h, w_, c, f, k = shape
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(b, h, w_, c)), rng.normal(size=(k, k, c, f))
    g = rng.normal(size=(b, h - k + 1, w_ - k + 1, f))
    y, vjp = jax.vjp(conv, jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(y, _numpy_conv(x, w), rtol=1e-5, atol=1e-5)
    dx, dw = vjp(jnp.asarray(g, jnp.float32))
    dx_ref, dw_ref = _numpy_grads(x, w, g)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)


def test_same_padding_and_fallbacks_equal_lax():
    rng = np.random.default_rng(1)
    x, w = (
        jnp.asarray(rng.normal(size=(2, 8, 8, 4)), jnp.float32),
        jnp.asarray(rng.normal(size=(3, 3, 4, 6)), jnp.float32),
    )
    nhwc = ("NHWC", "HWIO", "NHWC")
    cases = [  # (strides, padding, rhs_dilation): the first two take the canonical path, the others fall back
        ((1, 1), "SAME", None),
        ((1, 1), [(2, 0), (1, 1)], None),
        ((2, 2), "VALID", None),
        ((1, 1), "VALID", (2, 2)),
    ]

    def loss(fn, x, w, *, strides, padding, dilation):
        return jnp.sum(fn(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=nhwc) ** 2)

    for strides, padding, dilation in cases:
        case = {"strides": strides, "padding": padding, "dilation": dilation}
        ours = jax.value_and_grad(partial(loss, canonical_conv_general_dilated, **case), argnums=(0, 1))(x, w)
        ref = jax.value_and_grad(partial(loss, jax.lax.conv_general_dilated, **case), argnums=(0, 1))(x, w)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-3), ours, ref)


def test_bf16_gradients_keep_their_dtypes():
    x, w = jnp.ones((1, 5, 5, 2), jnp.bfloat16), jnp.ones((3, 3, 2, 4), jnp.bfloat16)
    dx, dw = jax.grad(lambda x, w: conv_canonical(x, w).astype(jnp.float32).sum(), argnums=(0, 1))(x, w)
    assert dx.dtype == jnp.bfloat16 and dw.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(dw, np.float32), np.full((3, 3, 2, 4), 9.0)
    )  # each kernel tap sees 3x3 ones


def test_chapter_cnn_picks_im2col_for_small_patch_matrices(monkeypatch):
    """At batch 64 on CPU: the first and last convolutions run as im2col, the second (8.9 MB of patches) not."""
    chosen = []
    monkeypatch.setattr(
        conv_ops, "conv_im2col", lambda x, w, *b: chosen.append(("im2col", x.shape)) or conv_im2col(x, w, *b)
    )
    monkeypatch.setattr(
        conv_ops, "conv_canonical", lambda x, w: chosen.append(("canonical", x.shape)) or conv_canonical(x, w)
    )
    from dlchapter.models import conv as conv_mod
    from dlchapter.models.conv import ChapterCNN

    monkeypatch.setattr(conv_mod, "EVEN_BLOCKS", False)  # one convolution per layer (even blocks: tested below)
    jax.eval_shape(
        lambda x: ChapterCNN().init(jax.random.key(0), x), jax.ShapeDtypeStruct((64, 28, 28, 1), jnp.float32)
    )
    assert chosen == [("im2col", (64, 28, 28, 1)), ("canonical", (64, 13, 13, 32)), ("im2col", (64, 5, 5, 64))]
    monkeypatch.setattr(conv_ops, "IM2COL_MAX_PATCH_BYTES", 0)  # the threshold really decides
    chosen.clear()
    jax.eval_shape(
        lambda x: ChapterCNN().init(jax.random.key(0), x), jax.ShapeDtypeStruct((64, 28, 28, 1), jnp.float32)
    )
    assert [kind for kind, _ in chosen] == ["canonical"] * 3


@pytest.mark.parametrize("max_patch_bytes", [0, 2**30])
def test_gradient_inside_scan_equals_gradient_outside(monkeypatch, max_patch_bytes):
    """The case the custom VJP exists for: fused steps in lax.scan give the same gradients as separate calls."""
    monkeypatch.setattr(conv_ops, "IM2COL_MAX_PATCH_BYTES", max_patch_bytes)  # conv_canonical, then conv_im2col
    conv = nn.Conv(4, (3, 3), padding="VALID", conv_general_dilated=canonical_conv_general_dilated)
    xs = jax.random.normal(jax.random.key(0), (3, 2, 6, 6, 1))
    params = conv.init(jax.random.key(1), xs[0])["params"]
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply({"params": p}, x) ** 2)))
    _, scanned = jax.lax.scan(lambda c, x: (c, grad(params, x)), 0, xs)
    for i in range(3):
        jax.tree.map(
            lambda a, b, i=i: np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5), scanned, grad(params, xs[i])
        )


def test_both_dx_formulations_match_numpy():
    """dX by K*K tap products (CPU) and as the 'full' convolution (other backends) are the same float64 sum."""
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(2, 7, 6, 3)), rng.normal(size=(3, 3, 3, 4))
    g = rng.normal(size=(2, 5, 4, 4))
    dx_ref, _ = _numpy_grads(x, w, g)
    for dx_fn in (conv_ops._dx_by_taps, conv_ops._dx_full_conv):
        dx = dx_fn(jnp.asarray(g, jnp.float32), jnp.asarray(w, jnp.float32), x.shape)
        np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("max_patch_bytes", [0, 2**30], ids=["canonical+bias_add", "im2col+bias_row"])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])  # 6x4 (even: parity rows) and 8x6 outputs
def test_conv2d_with_bias_matches_numpy(monkeypatch, max_patch_bytes, padding):
    """Both CPU paths of `conv2d`: the bias folded into im2col's product, or `bias_add` after conv_canonical."""
    monkeypatch.setattr(conv_ops, "IM2COL_MAX_PATCH_BYTES", max_patch_bytes)
    rng = np.random.default_rng(3)
    x, w, bias = rng.normal(size=(3, 8, 6, 2)), rng.normal(size=(3, 3, 2, 5)), rng.normal(size=5)
    x_padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)]) if padding == "SAME" else x
    y_ref = _numpy_conv(x_padded, w) + bias
    g = rng.normal(size=y_ref.shape)
    args = [jnp.asarray(a, jnp.float32) for a in (x, w, bias)]
    y, vjp = jax.vjp(lambda x, w, b: conv_ops.conv2d(x, w, b, padding), *args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    dx, dw, db = vjp(jnp.asarray(g, jnp.float32))
    dx_ref, dw_ref = _numpy_grads(x_padded, w, g)
    if padding == "SAME":
        dx_ref = dx_ref[:, 1:-1, 1:-1]
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, g.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)


def test_bias_add_gradient_is_the_sum_over_leading_axes_in_the_bias_dtype():
    rng = np.random.default_rng(4)
    y, g = rng.normal(size=(2, 3, 4, 6)), rng.normal(size=(2, 3, 4, 6))
    b = jnp.asarray(rng.normal(size=6), jnp.bfloat16)
    out, vjp = jax.vjp(conv_ops.bias_add, jnp.asarray(y, jnp.float32), b.astype(jnp.float32))
    np.testing.assert_allclose(out, y + np.asarray(b, np.float64), rtol=1e-6, atol=1e-6)
    dy, db = vjp(jnp.asarray(g, jnp.float32))
    np.testing.assert_array_equal(dy, np.asarray(g, np.float32))
    np.testing.assert_allclose(db, g.sum(axis=(0, 1, 2)), rtol=1e-5, atol=1e-5)
    _, db16 = jax.grad(lambda y, b: conv_ops.bias_add(y, b).astype(jnp.float32).sum(), argnums=(0, 1))(
        jnp.ones((4, 6), jnp.bfloat16), b
    )
    assert db16.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(db16, np.float32), np.full(6, 4.0))


def test_parity_rows_change_nothing_but_the_order_of_work(monkeypatch):
    """conv_im2col with parity-ordered rows equals the plain order bit for bit (the same products per output)."""
    rng = np.random.default_rng(5)
    x, w, b = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, 10, 8, 3), (3, 3, 3, 4), (4,)))
    outs = []
    for phase_rows in (True, False):
        monkeypatch.setattr(conv_ops, "IM2COL_PHASE_ROWS", phase_rows)
        outs.append(jax.value_and_grad(lambda x, w, b: jnp.sum(jnp.sin(conv_im2col(x, w, b))), (0, 1, 2))(x, w, b))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), outs[0][1], outs[1][1])


@pytest.mark.parametrize("max_patch_bytes", [0, 2**30], ids=["canonical", "im2col"])
@pytest.mark.parametrize("read", ["all", "pool"])  # the edges' gradient nonzero (their backward runs) or zeros
@pytest.mark.parametrize("shape", [(2, 9, 7), (2, 8, 9), (1, 7, 7)])  # (B, H, W): odd rows, odd cols, both
def test_even_block_is_the_same_convolution(monkeypatch, max_patch_bytes, read, shape):
    """`conv2d(even_block=True)` (the even top-left block apart from the last row / column) against numpy:
    the output, and the gradients of a loss reading every output or only what a 2x2 floor pool reads."""
    monkeypatch.setattr(conv_ops, "IM2COL_MAX_PATCH_BYTES", max_patch_bytes)
    rng = np.random.default_rng(6)
    x, w, bias = rng.normal(size=(*shape, 3)), rng.normal(size=(3, 3, 3, 4)), rng.normal(size=4)
    y_ref = _numpy_conv(x, w) + bias
    g = rng.normal(size=y_ref.shape)
    if read == "pool":
        g[:, y_ref.shape[1] // 2 * 2 :] = 0
        g[:, :, y_ref.shape[2] // 2 * 2 :] = 0
    args = [jnp.asarray(a, jnp.float32) for a in (x, w, bias)]
    y, vjp = jax.vjp(lambda x, w, b: conv_ops.conv2d(x, w, b, even_block=True), *args)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    dx, dw, db = vjp(jnp.asarray(g, jnp.float32))
    dx_ref, dw_ref = _numpy_grads(x, w, g)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(db, g.sum(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4)
