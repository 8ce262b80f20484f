"""Mixed precision: one config field picks the dtype the model computes in.

A `Policy` names three dtypes: parameters (and so gradients and optimizer
state) stay float32; the forward and backward passes run in the compute dtype
(bfloat16 for "bf16"); outputs are cast back to float32 before the loss, so
losses and metric sums are float32 whatever the policy. bfloat16 has
float32's exponent range, so no loss scaling is needed (float16 would).

Two mechanisms, both applied by `apply_policy`:

* `configure_model` sets the compute dtype on modules with a `dtype` field
  (`MLP`, `ChapterCNN`, `FunctionalCNN` and their subclasses); their
  `param_dtype` stays float32, and Flax casts each kernel to the compute dtype
  where it is used.
* `policy_apply` wraps a model's `apply`: floating parameters and inputs are
  cast to the compute dtype on the way in and floating outputs to float32 on
  the way out. This covers modules without a `dtype` field (`RecurrentNet`),
  and gradients flow back through the casts into the float32 parameters.

The parameter tree is the same under every policy, so a checkpoint saved in
one precision restores in the other.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.training.train_state import TrainState

PyTree = Any


@dataclass(frozen=True)
class Policy:
    """The dtypes of parameters, computation and outputs (the loss's inputs)."""

    name: str
    compute_dtype: Any
    param_dtype: Any = jnp.float32
    output_dtype: Any = jnp.float32

    @property
    def is_mixed(self) -> bool:
        return jnp.dtype(self.compute_dtype) != jnp.dtype(self.param_dtype)


POLICIES: dict[str, Policy] = {
    "fp32": Policy("fp32", jnp.float32),
    "bf16": Policy("bf16", jnp.bfloat16),
}


def get_policy(precision: str | Policy) -> Policy:
    """The policy named `precision` ("fp32" or "bf16"); a Policy is returned as it is."""
    if isinstance(precision, Policy):
        return precision
    try:
        return POLICIES[precision]
    except KeyError:
        raise ValueError(f"unknown precision {precision!r}; known: {', '.join(POLICIES)}") from None


def cast_floating(tree: PyTree, dtype: Any) -> PyTree:
    """Every floating-point leaf of `tree` cast to `dtype`; integer, bool and key leaves unchanged."""

    def cast(x: Any) -> Any:
        if isinstance(x, (jax.Array, jnp.ndarray)) or hasattr(x, "dtype"):
            if jnp.issubdtype(x.dtype, jnp.floating):
                return jnp.asarray(x).astype(dtype)
        return x

    return jax.tree.map(cast, tree)


def configure_model(model: nn.Module, precision: str | Policy) -> nn.Module:
    """`model` computing in the policy's dtype, if it has a `dtype` field (else unchanged)."""
    policy = get_policy(precision)
    names = {f.name for f in dataclasses.fields(model)}
    if "dtype" not in names:
        return model
    updates: dict[str, Any] = {"dtype": policy.compute_dtype}
    if "param_dtype" in names:
        updates["param_dtype"] = policy.param_dtype
    return model.clone(**updates)


def policy_apply(apply_fn: Callable, precision: str | Policy) -> Callable:
    """`apply_fn(variables, *inputs, **kwargs)` computing in the policy's dtype, returning float32.

    Unchanged for a policy that is not mixed. The wrapper is marked so that
    wrapping twice does not cast twice.
    """
    policy = get_policy(precision)
    if not policy.is_mixed or getattr(apply_fn, "_precision_policy", None) == policy.name:
        return apply_fn

    @functools.wraps(apply_fn)
    def apply(variables: PyTree, *args: Any, **kwargs: Any) -> Any:
        variables = dict(variables)
        variables["params"] = cast_floating(variables["params"], policy.compute_dtype)
        args = cast_floating(args, policy.compute_dtype)
        return cast_floating(apply_fn(variables, *args, **kwargs), policy.output_dtype)

    apply._precision_policy = policy.name  # type: ignore[attr-defined]
    return apply


def apply_policy(model: nn.Module, state: TrainState, precision: str | Policy) -> tuple[nn.Module, TrainState]:
    """The model and train state for `precision`: the parameters stay as initialised (float32).

    Use the returned model only for what does not go through `state.apply_fn`
    (summaries); training, evaluation and prediction use the state's.
    """
    policy = get_policy(precision)
    if not policy.is_mixed:
        return model, state
    configured = configure_model(model, policy)
    return configured, state.replace(apply_fn=policy_apply(configured.apply, policy))


def assert_policy(params: PyTree, outputs: PyTree, precision: str | Policy) -> None:
    """Raise if parameters or outputs are not in the dtypes the policy promises."""
    policy = get_policy(precision)
    for name, tree, dtype in (("parameter", params, policy.param_dtype), ("output", outputs, policy.output_dtype)):
        wrong = {
            str(leaf.dtype)
            for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating) and leaf.dtype != dtype
        }
        if wrong:
            raise TypeError(f"{policy.name}: {name} dtypes {sorted(wrong)}, expected {jnp.dtype(dtype).name}")
