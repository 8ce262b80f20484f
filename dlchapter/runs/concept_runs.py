"""The chapter's concepts that need no data set: activation functions and backprop by hand.

`run_activations` plots every elementwise activation with its derivative
(taken by `jax.jvp`, checked against central differences) and the chapter's
softmax vs hardmax example. `run_backprop` fits the chapter's 2-feature
logistic regression by gradient descent on the hand-written gradients of
`dlchapter.concepts.backprop`, and checks it against `jax.grad` and scikit-learn.
Both write a run directory: figures, metrics.json, config.json, summary.md.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.concepts import activations, backprop
from dlchapter.concepts.concept_plots import Panel, Series, decision_boundary, line_panels, softmax_hardmax
from dlchapter.presets.run_configs import (  # defined apart: `run NAME --help` needs no JAX
    ActivationsConfig,
    BackpropConfig,
)
from dlchapter.reporting import provenance, report

# ---------------------------------------------------------------- activations


PLOTTED: tuple[tuple[str, str], ...] = (
    ("relu", "ReLU: max(0, x)"),
    ("leaky_relu", "leaky ReLU"),
    ("sigmoid", "sigmoid: 1 / (1 + e^-x)"),
    ("tanh", "tanh"),
    ("gelu", "GELU (exact): x Phi(x)"),
    ("gelu_tanh", "GELU (tanh approximation)"),
)


def _activation(name: str, config: ActivationsConfig) -> Callable[[jax.Array], jax.Array]:
    """The named activation, jitted (one compilation instead of one per primitive)."""
    if name == "leaky_relu":
        return jax.jit(functools.partial(activations.leaky_relu, alpha=config.leaky_alpha))
    return jax.jit(activations.get(name))


def _finite_difference_error(fn: Callable, d_fn: Callable, x: np.ndarray, h: float = 1e-4) -> float:
    """Max |f'(x) - (f(x+h) - f(x-h)) / 2h| in float64, away from the kink at 0."""
    with jax.enable_x64(True):
        x64 = jnp.asarray(x[np.abs(x) > 10 * h], jnp.float64)
        numeric = (fn(x64 + h) - fn(x64 - h)) / (2 * h)
        return float(jnp.max(jnp.abs(d_fn(x64) - numeric)))


def run_activations(config: ActivationsConfig, workdir: Path) -> dict[str, Any]:
    """Plot each activation with its derivative and softmax vs hardmax; returns the metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    x = np.linspace(config.x_min, config.x_max, config.points, dtype=np.float32)
    panels, fd_errors, derivatives_at_zero = [], {}, {}
    for name, title in PLOTTED:
        fn = _activation(name, config)
        d_fn = jax.jit(activations.elementwise_derivative(fn))
        fd_errors[name] = _finite_difference_error(fn, d_fn, x.astype(np.float64))
        derivatives_at_zero[name] = float(d_fn(np.zeros_like(x))[0])
        label = f"{title} (alpha = {config.leaky_alpha:g})" if name == "leaky_relu" else title
        panels.append(
            Panel(
                label,
                "x",
                "value",
                [Series(f"{name}(x)", x, np.asarray(fn(x))), Series(f"{name}'(x)", x, np.asarray(d_fn(x)), style="--")],
                zero_axes=True,
            )
        )
    files = {
        "activations and their derivatives": line_panels(
            panels,
            workdir / "activations.png",
            title="Activation functions (solid) and their derivatives (dashed, by jax.jvp)",
            columns=3,
            panel_size=(4.4, 3.3),
        ).name
    }

    z = np.asarray(config.softmax_inputs, np.float32)
    soft = np.asarray(activations.softmax(z), np.float64)
    hard = np.asarray(activations.hardmax(z), np.float64)
    files["softmax vs hardmax"] = softmax_hardmax(
        config.softmax_inputs, soft, hard, workdir / "softmax_hardmax.png"
    ).name
    gelu_gap = float(np.max(np.abs(np.asarray(activations.gelu(x)) - np.asarray(activations.gelu_tanh(x)))))
    metrics: dict[str, Any] = {
        "softmax_inputs": list(config.softmax_inputs),
        "softmax": soft.tolist(),
        "softmax_sum": float(soft.sum()),
        "hardmax": hard.tolist(),
        "max_abs_gelu_minus_gelu_tanh": gelu_gap,
        "max_abs_derivative_error_vs_finite_difference": max(fd_errors.values()),
        "derivative_error_vs_finite_difference": fd_errors,
        "derivative_at_zero": derivatives_at_zero,
    }
    rows = [
        {"z": v, "exp(z)": float(np.exp(v)), "softmax": float(p), "hardmax": float(h)}
        for v, p, h in zip(config.softmax_inputs, soft, hard)
    ]
    table = (
        report.markdown_table(rows) + f"\n\nsoftmax sums to {soft.sum():.6f}; hardmax puts all the mass on the arg-max."
    )
    deriv_rows = [
        {"activation": n, "derivative at 0": derivatives_at_zero[n], "max error vs finite difference": fd_errors[n]}
        for n, _ in PLOTTED
    ]
    sections = [
        ("Softmax vs hardmax", table),
        (
            "Derivatives",
            report.markdown_table(deriv_rows)
            + (
                f"\n\nExact GELU and its tanh approximation differ by at most {gelu_gap:.2e} on "
                f"[{config.x_min:g}, {config.x_max:g}]."
            ),
        ),
    ]
    report.write_run(
        workdir, config, {**metrics, "provenance": provenance.collect()}, "Activation functions", sections, files
    )
    return metrics


# ---------------------------------------------------------------- backprop by hand


def two_feature_data(rows: int, true_w: tuple[float, ...], true_b: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two correlated, standardized features; labels drawn from sigmoid(x . w + b), so classes overlap."""
    if len(true_w) != 2:
        raise ValueError(f"the chapter's example has 2 features; true_w has {len(true_w)}")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 2)) @ np.array([[1.0, 0.4], [0.0, 0.8]])
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    z = x @ np.asarray(true_w) + true_b
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-z))).astype(np.float64)
    return x, y


@functools.partial(jax.jit, static_argnames="steps")
def autodiff_gradient_descent(
    x_NxF: jax.Array, y_N: jax.Array, learning_rate: jax.Array, steps: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Gradient descent from zeros with `jax.grad` of the log-loss.

    Returns the final (w, b) and, per step, the largest absolute difference
    between `jax.grad` and `backprop.hand_gradients` at that step's parameters.
    """
    grad_fn = jax.grad(backprop.log_loss, argnums=(0, 1))

    def step(carry, _):
        w, b = carry
        dw, db = grad_fn(w, b, x_NxF, y_N)
        hand_dw, hand_db = backprop.hand_gradients(w, b, x_NxF, y_N)
        gap = jnp.maximum(jnp.max(jnp.abs(dw - hand_dw)), jnp.abs(db - hand_db))
        return (w - learning_rate * dw, b - learning_rate * db), gap

    w0 = jnp.zeros(x_NxF.shape[1], x_NxF.dtype)
    (w, b), gaps = jax.lax.scan(step, (w0, jnp.zeros((), x_NxF.dtype)), None, length=steps)
    return w, b, gaps


def sklearn_logistic_regression(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
    """scikit-learn's unpenalized fit (C=inf, sklearn >= 1.8's spelling of penalty=None)."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10_000).fit(x, y)
    return model.coef_[0].astype(np.float64), float(model.intercept_[0])


def run_backprop(config: BackpropConfig, workdir: Path) -> dict[str, Any]:
    """Fit the 2-feature logistic regression three ways and compare; returns the metrics."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    x, y = two_feature_data(config.rows, config.true_w, config.true_b, config.seed)
    with jax.enable_x64(config.float64):
        dtype = jnp.float64 if config.float64 else jnp.float32
        x_dev, y_dev = jnp.asarray(x, dtype), jnp.asarray(y, dtype)
        started = time.perf_counter()
        w, b, losses = backprop.fit_logistic_regression(x_dev, y_dev, config.learning_rate, config.steps)
        w, b, losses = np.asarray(w, np.float64), float(b), np.asarray(losses, np.float64)
        hand_seconds = time.perf_counter() - started
        auto_w, auto_b, gaps = autodiff_gradient_descent(
            x_dev, y_dev, jnp.asarray(config.learning_rate, dtype), config.steps
        )
        auto_w, auto_b, gaps = np.asarray(auto_w, np.float64), float(auto_b), np.asarray(gaps, np.float64)
        final_loss = float(backprop.log_loss(jnp.asarray(w, dtype), b, x_dev, y_dev))
    ref_w, ref_b = sklearn_logistic_regression(x, y)
    ref_loss = float(
        np.mean(np.logaddexp(0.0, -(x @ ref_w + ref_b)) * y + np.logaddexp(0.0, x @ ref_w + ref_b) * (1 - y))
    )
    accuracy = float(np.mean(((x @ w + b) > 0) == (y > 0.5)))
    metrics: dict[str, Any] = {
        "w": w.tolist(),
        "b": b,
        "sklearn_w": ref_w.tolist(),
        "sklearn_b": ref_b,
        "autodiff_w": auto_w.tolist(),
        "autodiff_b": auto_b,
        "max_gradient_difference_hand_vs_jax_grad": float(gaps.max()),
        "max_weight_difference_to_sklearn": float(max(np.abs(w - ref_w).max(), abs(b - ref_b))),
        "max_weight_difference_to_jax_grad": float(max(np.abs(w - auto_w).max(), abs(b - auto_b))),
        "initial_loss": float(losses[0]),
        "final_loss": final_loss,
        "sklearn_loss": ref_loss,
        "train_accuracy": accuracy,
        "hand_fit_seconds": hand_seconds,
        "dtype": "float64" if config.float64 else "float32",
    }
    steps = np.arange(1, config.steps + 1)
    files = {
        "loss curve": line_panels(
            [
                Panel(
                    f"log-loss (lr {config.learning_rate:g}, full batch)",
                    "step",
                    "mean log-loss",
                    [Series("hand backprop", steps, losses)],
                    logx=True,
                    hlines={f"scikit-learn optimum {ref_loss:.4f}": ref_loss},
                ),
                Panel(
                    "distance to scikit-learn's optimum",
                    "step",
                    "log-loss - optimum",
                    [Series("hand backprop", steps, np.maximum(losses - ref_loss, 1e-17))],
                    logx=True,
                    logy=True,
                ),
            ],
            workdir / "loss_curve.png",
            title="Gradient descent with hand-written gradients",
        ).name,
        "decision boundary": decision_boundary(
            x,
            y,
            {
                "hand backprop": (w, b),
                "scikit-learn": (ref_w, ref_b),
                "true model": (np.asarray(config.true_w), config.true_b),
            },
            workdir / "decision_boundary.png",
            title=f"logistic regression on {config.rows} synthetic rows",
            shade=(w, b),
        ).name,
    }
    rows = [
        {"fit": "hand backprop (gradient descent)", "w1": w[0], "w2": w[1], "b": b},
        {"fit": "jax.grad (gradient descent)", "w1": auto_w[0], "w2": auto_w[1], "b": auto_b},
        {"fit": "scikit-learn (C=inf)", "w1": ref_w[0], "w2": ref_w[1], "b": ref_b},
        {"fit": "true model", "w1": config.true_w[0], "w2": config.true_w[1], "b": config.true_b},
    ]
    sections = [
        (
            "The chain rule",
            "z = w . x + b, a = sigmoid(z), L = -(y log a + (1 - y) log(1 - a)); dL/dz = a - y, dL/dw "
            "= (a - y) x, dL/db = a - y, averaged over the rows.",
        ),
        ("Weights", report.markdown_table(rows)),
        (
            "Agreement",
            f"Largest |hand gradient - jax.grad| over {config.steps} steps: "
            f"{metrics['max_gradient_difference_hand_vs_jax_grad']:.3e} ({metrics['dtype']}). Largest "
            f"weight difference to scikit-learn: {metrics['max_weight_difference_to_sklearn']:.3e}; to "
            f"the jax.grad run: {metrics['max_weight_difference_to_jax_grad']:.3e}. Log-loss "
            f"{metrics['initial_loss']:.4f} -> {final_loss:.6f} (scikit-learn {ref_loss:.6f}); training "
            f"accuracy {accuracy:.3f}.",
        ),
    ]
    report.write_run(
        workdir,
        config,
        {**metrics, "provenance": provenance.collect()},
        "Backpropagation by hand: 2-feature logistic regression",
        sections,
        files,
    )
    return metrics
