"""Tests for the chapter's MNIST CNN (dlchapter.models.conv)."""

from __future__ import annotations

from functools import partial

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import signal

from dlchapter.models.conv import CHAPTER_PARAM_COUNT, ChapterCNN, FunctionalCNN

BATCH = 3


def _images(seed: int = 0, batch: int = BATCH, with_channel: bool = True) -> jax.Array:
    shape = (batch, 28, 28, 1) if with_channel else (batch, 28, 28)
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


def _init(model, seed: int = 0):
    return model.init(jax.random.key(seed), _images(seed=99))


def _count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _perturbed(params, scale: float = 0.1, seed: int = 7):
    """Params with independent noise on every leaf (biases start at zero)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    noisy = [leaf + scale * jax.random.normal(k, leaf.shape, leaf.dtype) for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


# ---------------------------------------------------------------------------
# numpy reference (independent of flax)
# ---------------------------------------------------------------------------
def _np_conv_valid(x_HWC: np.ndarray, kernel_HWIO: np.ndarray, bias_O: np.ndarray):
    """'valid' 2-D cross-correlation summed over input channels, plus bias."""
    kh, kw, cin, cout = kernel_HWIO.shape
    h, w = x_HWC.shape[0] - kh + 1, x_HWC.shape[1] - kw + 1
    out = np.zeros((h, w, cout), np.float64)
    for o in range(cout):
        for c in range(cin):
            k = kernel_HWIO[:, :, c, o]
            out[:, :, o] += signal.correlate2d(x_HWC[:, :, c], k, mode="valid")
    return out + bias_O


def _np_max_pool(x_HWC: np.ndarray) -> np.ndarray:
    h, w, c = x_HWC.shape
    h2, w2 = h // 2, w // 2
    x = x_HWC[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2, c)
    return x.max(axis=(1, 3))


def _np_forward(params, x_BHWC: np.ndarray) -> np.ndarray:
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params["params"])
    outs = []
    for img in np.asarray(x_BHWC, np.float64):
        h = img
        for i in range(3):
            h = np.maximum(_np_conv_valid(h, p[f"conv_{i}"]["kernel"], p[f"conv_{i}"]["bias"]), 0.0)
            if i < 2:
                h = _np_max_pool(h)
        flat = h.reshape(-1)  # row-major over (H, W, C): Keras's channels_last Flatten
        outs.append(flat @ p["dense"]["kernel"] + p["dense"]["bias"])
    return np.stack(outs)


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("model", [ChapterCNN(), FunctionalCNN()], ids=["compact", "functional"])
def test_parameter_count_matches_keras_summary(model):
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert _count(shapes) == CHAPTER_PARAM_COUNT == 104_202
    p = shapes["params"]
    assert p["conv_0"]["kernel"].shape == (3, 3, 1, 32)
    assert p["conv_1"]["kernel"].shape == (3, 3, 32, 64)
    assert p["conv_2"]["kernel"].shape == (3, 3, 64, 128)
    assert p["dense"]["kernel"].shape == (3 * 3 * 128, 10)


def test_parameter_count_changes_with_width():
    """The count really depends on the architecture (the test above can fail)."""
    shapes = jax.eval_shape(ChapterCNN(features=(16, 64, 128)).init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    assert _count(shapes) != CHAPTER_PARAM_COUNT


def test_same_parameter_tree_in_both_styles():
    compact = jax.eval_shape(ChapterCNN().init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    functional = jax.eval_shape(FunctionalCNN().init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    chex.assert_trees_all_equal_shapes_and_dtypes(compact, functional)
    assert jax.tree.structure(compact) == jax.tree.structure(functional)


def test_both_styles_give_identical_outputs_for_the_same_params():
    params = _perturbed(_init(ChapterCNN()))
    x = _images(seed=1)
    out_compact = ChapterCNN().apply(params, x)
    out_functional = FunctionalCNN().apply(params, x)
    chex.assert_shape(out_compact, (BATCH, 10))
    chex.assert_trees_all_equal(out_compact, out_functional)

    # ... and params initialized by either style apply to the other.
    params_f = _init(FunctionalCNN(), seed=3)
    chex.assert_trees_all_equal(ChapterCNN().apply(params_f, x), FunctionalCNN().apply(params_f, x))


def test_different_params_give_different_outputs():
    x = _images(seed=1)
    out_a = FunctionalCNN().apply(_init(FunctionalCNN(), seed=0), x)
    out_b = ChapterCNN().apply(_init(ChapterCNN(), seed=1), x)
    assert not np.allclose(out_a, out_b, atol=1e-4)


def test_different_inputs_give_different_outputs():
    params = _perturbed(_init(ChapterCNN()))
    out = ChapterCNN().apply(params, _images(seed=1))
    assert not np.allclose(out[0], out[1], atol=1e-4)


@pytest.mark.parametrize("model", [ChapterCNN(), FunctionalCNN()], ids=["compact", "functional"])
def test_output_shape_and_channelless_input(model):
    params = _init(model)
    x = _images(seed=2, batch=5)
    out = model.apply(params, x)
    chex.assert_shape(out, (5, 10))
    chex.assert_type(out, jnp.float32)
    chex.assert_tree_all_finite(out)
    chex.assert_trees_all_equal(model.apply(params, x[..., 0]), out)


def test_rejects_bad_rank():
    params = _init(ChapterCNN())
    with pytest.raises(ValueError, match="28, 28"):
        ChapterCNN().apply(params, jnp.zeros((28, 28)))


@pytest.mark.parametrize("model", [ChapterCNN(), FunctionalCNN()], ids=["compact", "functional"])
def test_intermediate_shapes(model):
    params = _init(model)
    _, state = model.apply(params, _images(batch=2), capture_intermediates=True)
    inter = state["intermediates"]
    chex.assert_shape(inter["conv_0"]["__call__"][0], (2, 26, 26, 32))
    chex.assert_shape(inter["pool_0"][0], (2, 13, 13, 32))
    chex.assert_shape(inter["conv_1"]["__call__"][0], (2, 11, 11, 64))
    chex.assert_shape(inter["pool_1"][0], (2, 5, 5, 64))
    chex.assert_shape(inter["conv_2"]["__call__"][0], (2, 3, 3, 128))
    chex.assert_shape(inter["dense"]["__call__"][0], (2, 10))


def test_first_conv_matches_scipy_cross_correlation():
    params = _perturbed(_init(ChapterCNN()))
    x = _images(seed=4, batch=2)
    _, state = ChapterCNN().apply(params, x, capture_intermediates=True)
    conv0 = np.asarray(state["intermediates"]["conv_0"]["__call__"][0])  # before the relu
    kernel = np.asarray(params["params"]["conv_0"]["kernel"], np.float64)
    bias = np.asarray(params["params"]["conv_0"]["bias"], np.float64)
    for b in range(2):
        img = np.asarray(x[b], np.float64)
        expected = _np_conv_valid(img, kernel, bias)
        np.testing.assert_allclose(conv0[b], expected, rtol=1e-5, atol=1e-5)
        # A true convolution (flipped kernel) is a different function: the check can fail.
        flipped = _np_conv_valid(img, kernel[::-1, ::-1], bias)
        assert not np.allclose(conv0[b], flipped, atol=1e-3)


def test_second_conv_matches_reference_over_channels():
    """Multi-channel conv: checks the HWIO kernel layout and the channel sum."""
    params = _perturbed(_init(FunctionalCNN()))
    _, state = FunctionalCNN().apply(params, _images(seed=5, batch=1), capture_intermediates=True)
    inter = state["intermediates"]
    pooled = np.asarray(inter["pool_0"][0][0], np.float64)
    p = params["params"]["conv_1"]
    kernel = np.asarray(p["kernel"], np.float64)
    expected = _np_conv_valid(pooled, kernel, np.asarray(p["bias"], np.float64))
    np.testing.assert_allclose(inter["conv_1"]["__call__"][0][0], expected, rtol=1e-4, atol=1e-4)


def test_whole_network_matches_numpy_reference():
    params = _perturbed(_init(ChapterCNN()), scale=0.05)
    x = _images(seed=6, batch=2)
    expected = _np_forward(params, x)
    np.testing.assert_allclose(ChapterCNN().apply(params, x), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected[0], expected[1], atol=1e-3)


def test_init_follows_keras_defaults():
    p = _init(ChapterCNN())["params"]
    for name in ("conv_0", "conv_1", "conv_2", "dense"):
        assert float(jnp.abs(p[name]["bias"]).max()) == 0.0
    # glorot_uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)), receptive field included.
    limit = np.sqrt(6.0 / (3 * 3 * 32 + 3 * 3 * 64))
    k = np.asarray(p["conv_1"]["kernel"])
    assert np.abs(k).max() <= limit
    assert np.abs(k).max() > 0.9 * limit


@pytest.mark.parametrize("model_cls", [ChapterCNN, FunctionalCNN], ids=["compact", "functional"])
def test_bfloat16_compute_keeps_float32_params(model_cls):
    model16 = model_cls(dtype=jnp.bfloat16)
    params = _init(model16)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    x = _images(seed=8)
    _, state = model16.apply(params, x, capture_intermediates=True)
    assert state["intermediates"]["conv_1"]["__call__"][0].dtype == jnp.bfloat16
    out16 = model16.apply(params, x)
    out32 = model_cls().apply(params, x)
    chex.assert_type(out16, jnp.float32)
    np.testing.assert_allclose(out16, out32, atol=5e-2, rtol=5e-2)
    assert not np.array_equal(out16, out32)


def test_jit_matches_eager():
    model = FunctionalCNN()
    params = _init(model)
    x = _images(seed=9)
    chex.assert_trees_all_close(jax.jit(model.apply)(params, x), model.apply(params, x), atol=1e-5)


def test_reshape_max_pool_equals_flax_max_pool_and_its_gradient() -> None:
    from dlchapter.models.conv import _max_pool

    for shape in ((3, 26, 26, 4), (3, 11, 11, 4)):  # even, and odd (Keras floors: last row/column dropped)
        x = jax.random.normal(jax.random.key(shape[1]), shape)
        reference = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        np.testing.assert_array_equal(_max_pool(x), reference)
        grad = jax.grad(lambda v: jnp.sum(_max_pool(jax.nn.relu(v)) ** 2))(x)
        grad_ref = jax.grad(
            lambda v: jnp.sum(nn.max_pool(jax.nn.relu(v), (2, 2), strides=(2, 2), padding="VALID") ** 2)
        )(x)
        np.testing.assert_allclose(grad, grad_ref, rtol=1e-6, atol=1e-7)
        assert np.abs(np.asarray(grad)).sum() > 0


@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_conv2d_has_nn_conv_parameters_and_function(padding):
    """`Conv2D` (the CNN's layer) initialises exactly as `nn.Conv` and computes the same outputs and gradients."""
    from dlchapter.models.conv import KERNEL_INIT, Conv2D

    ours, ref = Conv2D(6, (3, 3), padding=padding), nn.Conv(6, (3, 3), padding=padding, kernel_init=KERNEL_INIT)
    x = _images(seed=7, batch=3)
    p_ours, p_ref = ours.init(jax.random.key(2), x), ref.init(jax.random.key(2), x)
    chex.assert_trees_all_equal(p_ours, p_ref)
    params = _perturbed(p_ref)

    def loss(module, p):
        return jnp.sum(jnp.tanh(module.apply(p, x)))

    (v_ours, g_ours), (v_ref, g_ref) = (jax.value_and_grad(partial(loss, m))(params) for m in (ours, ref))
    np.testing.assert_allclose(v_ours, v_ref, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), g_ours, g_ref)


def test_pool_before_relu_gives_the_chapter_order_gradients():
    """ChapterCNN pools before the relu, FunctionalCNN after (the chapter's order): same loss and gradients."""
    params = _perturbed(_init(ChapterCNN()))
    x = jnp.concatenate([_images(seed=8, batch=2), jnp.zeros((1, 28, 28, 1))])  # zeros: ties in every window

    def loss(model, p):
        return jnp.sum(jax.nn.log_softmax(model.apply(p, x))[:, 3])

    (v_c, g_c), (v_f, g_f) = (jax.value_and_grad(partial(loss, m))(params) for m in (ChapterCNN(), FunctionalCNN()))
    np.testing.assert_allclose(v_c, v_f, rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), g_c, g_f)


def test_even_blocks_change_no_output_shape_value_or_gradient(monkeypatch) -> None:
    """`Conv2D.even_block` on the pooled convolutions (conv_1's 11x11 output, of which the pool reads 10x10):
    the same captured shapes, logits and parameter gradients as one convolution per layer."""
    from dlchapter.models import conv as conv_mod

    x, labels = _images(batch=4), jnp.arange(4) % 10
    results = []
    for even in (True, False):
        monkeypatch.setattr(conv_mod, "EVEN_BLOCKS", even)
        for model in (ChapterCNN(), FunctionalCNN()):
            params = _init(model)

            def loss(p, model=model):
                logits = model.apply(p, x)
                return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], 1))

            _, state = model.apply(params, x, capture_intermediates=True, mutable=["intermediates"])
            shapes = jax.tree.map(lambda a: a.shape, state["intermediates"])
            results.append((shapes, model.apply(params, x), jax.grad(loss)(params)))
    assert results[0][0]["conv_1"]["__call__"][0] == (4, 11, 11, 64)
    for ours, ref in zip(results[:2], results[2:]):
        assert ours[0] == ref[0]
        np.testing.assert_allclose(ours[1], ref[1], rtol=1e-5, atol=1e-6)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ours[2], ref[2])
