"""Optimizers by name over optax, with Keras's defaults, the chapter's decay and L2.

The learning rate and the L2 strength (when there is one) are injected
hyperparameters (`optax.inject_hyperparams`): they live in the optimizer state,
so the current learning rate can be read into the history and a sweep can
change them as traced values without recompiling.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax

# Keras's defaults: SGD 0.01 (momentum 0), RMSprop 0.001 (rho 0.9), Adam 0.001; epsilon 1e-7.
DEFAULT_LEARNING_RATES: dict[str, float] = {"sgd": 0.01, "momentum": 0.01, "rmsprop": 0.001, "adam": 0.001}
KERAS_EPSILON = 1e-7


def _sgd(learning_rate: Any, momentum: float | None) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=momentum or None)


def _momentum(learning_rate: Any, momentum: float | None) -> optax.GradientTransformation:
    return optax.sgd(learning_rate, momentum=0.9 if momentum is None else momentum)


def _rmsprop(learning_rate: Any, momentum: float | None) -> optax.GradientTransformation:
    # Keras: w -= lr * g / (sqrt(v) + eps), epsilon outside the square root.
    return optax.rmsprop(learning_rate, decay=0.9, eps=KERAS_EPSILON, eps_in_sqrt=False, momentum=momentum or None)


def _adam(learning_rate: Any, momentum: float | None) -> optax.GradientTransformation:
    return optax.adam(learning_rate, b1=0.9 if momentum is None else momentum, b2=0.999, eps=KERAS_EPSILON)


OPTIMIZERS: dict[str, Callable[[Any, float | None], optax.GradientTransformation]] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "rmsprop": _rmsprop,
    "adam": _adam,
}


# field: (lowest, whether the lowest itself is allowed, highest, what the value must be)
_RANGES = {
    "learning_rate": (0.0, False, math.inf, "a finite number > 0"),
    "decay": (0.0, True, math.inf, "a finite number >= 0"),
    "l2": (0.0, True, math.inf, "a finite number >= 0"),
    "clip_global_norm": (0.0, False, math.inf, "a finite number > 0"),
    "momentum": (0.0, True, 1.0, "a number in [0, 1]"),
}
_OPTIONAL = ("learning_rate", "clip_global_norm", "momentum")  # None: Keras's default rate, no clip, the default


@dataclass(frozen=True)
class OptimizerConfig:
    """What to optimize with. `learning_rate=None` takes Keras's default for `name`.

    `decay` is the chapter's per-epoch decay a = a0 / (1 + decay * epoch); `l2`
    is Keras's kernel L2 (penalty l2 * Σ w² on every kernel, biases excluded);
    `clip_global_norm` clips the whole gradient's norm; `momentum` overrides
    the momentum of sgd/momentum/rmsprop or Adam's beta1.
    """

    name: str = "adam"
    learning_rate: float | None = None
    decay: float = 0.0
    l2: float = 0.0
    clip_global_norm: float | None = None
    momentum: float | None = None

    def __post_init__(self) -> None:
        """Stores every number as a Python float (so equal configs are equal in type too: 1 and 1.0, numpy and
        jax scalars) and raises ValueError naming the field for a value outside `_RANGES`: a learning rate or
        clip norm that is not a finite number > 0, a decay or L2 that is not a finite number >= 0, or a momentum
        outside [0, 1] (Keras's range for SGD's). `learning_rate` may also be an optax schedule (step -> rate)
        when `decay` is 0."""
        for field, (low, low_allowed, high, need) in _RANGES.items():
            value = getattr(self, field)
            if value is None and field in _OPTIONAL:
                continue
            if field == "learning_rate" and callable(value):
                if self.decay:
                    raise ValueError(
                        "OptimizerConfig learning_rate: a schedule cannot be combined with the chapter's decay "
                        f"(decay={self.decay!r}); fold the decay into the schedule or pass a number"
                    )
                continue
            number = _as_number(value)
            if number is None or number < low or (number == low and not low_allowed) or number > high:
                raise ValueError(f"OptimizerConfig {field}={value!r}: must be {need}")
            object.__setattr__(self, field, number)


def _as_number(value: Any) -> float | None:
    """`value` as a finite Python float (a Python, numpy or jax real scalar), else None (strings are not numbers)."""
    if isinstance(value, str | bytes):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def inverse_time_decay(initial: float, decay: float, steps_per_epoch: int) -> optax.Schedule:
    """The chapter's a = a0 / (1 + decay * epoch), with epoch = step // steps_per_epoch."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")

    def schedule(count: jax.Array) -> jax.Array:
        epoch = jnp.floor_divide(count, steps_per_epoch)
        return initial / (1.0 + decay * epoch)

    return schedule


def kernel_mask(params: Any) -> Any:
    """True for every parameter leaf named "kernel" (what Keras's kernel_regularizer covers)."""

    def is_kernel(path: tuple, _leaf: Any) -> bool:
        last = path[-1]
        return str(getattr(last, "key", getattr(last, "name", last))) == "kernel"

    return jax.tree_util.tree_map_with_path(is_kernel, params)


def make_optimizer(
    config: OptimizerConfig, steps_per_epoch: int = 1, *, l2_hyperparameter: bool = False
) -> optax.GradientTransformation:
    """An optax optimizer with `learning_rate` (and `l2`, when used) as injected hyperparameters.

    L2 is applied as its gradient, 2 * l2 * w on kernels, added before the
    optimizer: exactly the gradient of Keras's loss + l2 * Σ w². The L2 term is
    in the chain, and `l2` in the state's hyperparams, only when `config.l2` is
    not 0 or `l2_hyperparameter` is True (a program that sets each model's L2 in
    its optimizer state, as ManyModels does): a term of 0 would still cost a
    pass over every kernel, 2-3% of the diamonds MLP's step (benchmarks/NOTES.md,
    "sixth session"). Setting `hyperparams["l2"]` on a state without it raises
    TypeError at the next update ("got multiple values for keyword argument
    'l2'"): build such an optimizer with `l2_hyperparameter=True`.

    Equal arguments give the same transformation object (it is stateless), so the
    programs compiled for one run's state serve the next run with the same
    config; its `init` is jitted. Raises ValueError for an unknown optimizer name.
    """
    try:
        hash((config, steps_per_epoch))
    except TypeError:  # a learning-rate schedule object that cannot be hashed: built afresh
        return _build_optimizer(config, steps_per_epoch, l2_hyperparameter)
    return _cached_optimizer(config, steps_per_epoch, l2_hyperparameter)


def _build_optimizer(
    config: OptimizerConfig, steps_per_epoch: int, l2_hyperparameter: bool
) -> optax.GradientTransformation:
    if config.name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {config.name!r}; known: {', '.join(sorted(OPTIMIZERS))}")
    base = OPTIMIZERS[config.name]
    lr0 = DEFAULT_LEARNING_RATES[config.name] if config.learning_rate is None else config.learning_rate
    learning_rate = inverse_time_decay(lr0, config.decay, steps_per_epoch) if config.decay else lr0

    def factory(learning_rate: Any, l2: Any = None) -> optax.GradientTransformation:
        parts = []
        if config.clip_global_norm is not None:
            parts.append(optax.clip_by_global_norm(config.clip_global_norm))
        if l2 is not None:
            parts.append(optax.add_decayed_weights(2.0 * l2, mask=kernel_mask))
        parts.append(base(learning_rate, config.momentum))
        return optax.chain(*parts)

    hyperparams: dict[str, Any] = {"learning_rate": learning_rate}
    if config.l2 or l2_hyperparameter:
        hyperparams["l2"] = config.l2
    tx = optax.inject_hyperparams(factory)(**hyperparams)
    # `init` as one program: eagerly it is one small program per operation (8 for Adam), each traced, lowered and
    # compiled or fetched from the persistent cache in every process (~0.1 s of a diamonds run on a 2-core CPU)
    return optax.GradientTransformationExtraArgs(jax.jit(tx.init), tx.update)


_cached_optimizer = functools.lru_cache(maxsize=64)(_build_optimizer)


def current_learning_rate(opt_state: Any) -> jax.Array:
    """The learning rate the next step will use, read from an injected optimizer state."""
    return opt_state.hyperparams["learning_rate"]
