"""The traced side of `ManyModels` (`dlchapter.engine.many_models`): what one model does, vmapped over N.

`MemberPrograms` builds, from the single-model engine's pieces (`train.train_step`, `train.eval_step`,
`loop.train_chunk`, `loop.eval_chunk`), the four jitted programs a many-models fit calls: `init` (each
model's train state from its seed, learning rate, L2, decay and keep-prob), `epoch` (keep the improved
weights, one epoch of `train_chunk`, validation), `evaluate` (metric states over a padded plan) and
`predict` (outputs of a batch of rows). `Member` is one model's stacked state; `tree_where` picks per
model between two stacked pytrees. The host side (plans, early stopping, checkpoints) is `many_models`.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from dlchapter.engine import losses
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.input_checks import check_monitor
from dlchapter.engine.loop import eval_chunk, gather, take_rows, train_chunk
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.precision import Policy, configure_model, get_policy, policy_apply
from dlchapter.engine.train import Task, TrainState, create_train_state, eval_step, train_step
from dlchapter.engine.train_state import train_kwargs

PyTree = Any
RATE_ARGUMENT = "keep_prob"  # the traced keep-prob (1 - dropout rate) a module may take per model


class Member(struct.PyTreeNode):
    """One model's train state, traced hyperparameters and best weights (stacked: leading axis N)."""

    state: TrainState
    lr0: jax.Array
    decay: jax.Array
    keep_prob: jax.Array
    steps_per_epoch: jax.Array
    key: jax.Array  # dropout stream
    best: PyTree  # (params, model_state) of the best epoch so far


def tree_where(cond: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    """`new` where `cond` else `old`; `cond` is a scalar (in a vmapped model) or (N,) over stacked leaves."""

    def pick(a, b):
        return jnp.where(jnp.reshape(cond, jnp.shape(cond) + (1,) * (a.ndim - jnp.ndim(cond))), a, b)

    return jax.tree.map(pick, new, old)


def _takes_rate(module: Any) -> bool:
    return RATE_ARGUMENT in inspect.signature(type(module).__call__).parameters


class MemberPrograms:
    """The jitted init/epoch/evaluate/predict programs of N models of one module (arguments: `ManyModels`)."""

    def __init__(
        self,
        model: Any,
        task: Task,
        optimizer: OptimizerConfig | None = None,
        *,
        epochs: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        early_stopping: EarlyStopping | None = None,
        eval_batch_size: int = 1024,
        precision: str | Policy = "fp32",
    ):
        for name, value in (("epochs", epochs), ("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(
                f"ManyModels trains flax.linen modules, got {type(model).__module__}.{type(model).__name__}; "
                "train a flax.nnx module with Trainer.fit (create_train_state takes it), one model per fit"
            )
        per_model = (("learning_rate", None), ("decay", 0.0), ("l2", 0.0))  # each ModelSpec's, not the shared one's
        set_here = [name for name, unset in per_model if optimizer is not None and getattr(optimizer, name) != unset]
        if set_here:
            given = ", ".join(f"{name}={getattr(optimizer, name)!r}" for name in set_here)
            raise ValueError(
                f"ManyModels: OptimizerConfig({given}) would be ignored: each model's learning rate, decay and L2 "
                "come from its ModelSpec; leave them out of the shared OptimizerConfig"
            )
        self.policy = get_policy(precision)
        self._init_model = model  # initialised as given (float32), as `precision.apply_policy` after create_train_state
        self.model = configure_model(model, self.policy) if self.policy.is_mixed else model
        self._apply = policy_apply(self.model.apply, self.policy)
        self.task, self.epochs, self.batch_size, self.shuffle = task, epochs, batch_size, shuffle
        self.eval_batch_size, self.early_stopping = eval_batch_size, early_stopping
        self._rate = _takes_rate(self.model)
        loss_fn = self._loss_fn = losses.get_loss(task.loss, task.from_logits)
        self._metrics = metrics_lib.get_metrics(task.metrics, task.from_logits)
        if early_stopping is not None:  # the validation rows are known at fit, which checks val_ names again
            names = ["loss", *(m.name for m in self._metrics), "lr"]
            check_monitor("EarlyStopping", early_stopping.monitor, names, has_validation=True)
        if early_stopping is not None:
            early_stopping.maximize  # noqa: B018  (raises ValueError for an unknown mode)
        self._merge = functools.partial(metrics_lib.merge_states, self._metrics)
        self._train_step = functools.partial(train_step, loss_fn=loss_fn, metrics=self._metrics)
        self._eval_step = functools.partial(eval_step, loss_fn=loss_fn, metrics=self._metrics)
        self.tx_config = dataclasses.replace(optimizer or OptimizerConfig(), learning_rate=1.0, decay=0.0, l2=0.0)
        # each model's rate and L2 are set in its optimizer state
        self.tx = make_optimizer(self.tx_config, l2_hyperparameter=True)
        self.traces: collections.Counter[str] = collections.Counter()
        epoch = jax.vmap(self._member_epoch, in_axes=(0, 0, None, 0, 0, None, 0, 0))
        self._epoch = jax.jit(self._counted("epoch", epoch), donate_argnums=0)
        self._init = jax.jit(self._counted("init", jax.vmap(self._init_member, in_axes=(0, 0, 0, 0, 0, 0, None))))
        self._evaluate = jax.jit(self._counted("evaluate", jax.vmap(self._evaluate_member, in_axes=(0, None, 0, 0))))
        self._forward = jax.jit(self._counted("predict", jax.vmap(self._forward_member, in_axes=(0, None, 0))))
        self._compiled: dict[Any, Any] = {}

    @property
    def rule(self) -> EarlyStopping | None:
        return self.early_stopping

    def _counted(self, name: str, fn: Callable) -> Callable:
        def traced(*args):
            self.traces[name] += 1
            return fn(*args)

        return traced

    # ---- what one model does (traced; vmapped over the leading axis) ----
    def _init_member(self, seed, lr0, l2, decay, keep, spe, sample_x) -> Member:
        init_key, dropout_key = jax.random.split(jax.random.key(seed))
        state = create_train_state(self._init_model, self.tx, sample_x, init_key).replace(apply_fn=self._apply)
        hyper = {**state.opt_state.hyperparams, "learning_rate": lr0, "l2": l2}
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        return Member(state, lr0, decay, keep, spe, dropout_key, (state.params, state.model_state))

    def _member_step(self, m: Member, state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        """`train_step` with this model's decayed learning rate (and keep-prob, if the module takes one)."""
        epoch = jnp.floor_divide(state.step, m.steps_per_epoch)
        hyper = {**state.opt_state.hyperparams, "learning_rate": m.lr0 / (1.0 + m.decay * epoch)}
        state = state.replace(opt_state=state.opt_state._replace(hyperparams=hyper))
        apply_fn = state.apply_fn
        if self._rate:
            state = state.replace(apply_fn=functools.partial(apply_fn, **{RATE_ARGUMENT: m.keep_prob}))
        new, sums = self._train_step(state, batch, key)
        return new.replace(apply_fn=apply_fn), sums

    def _zero_sums(self, weights: PyTree, data: dict, batch_size: int) -> dict:
        """The metric states of no rows: zeros for `SumMetric`s (shaped as a batch's), `empty()` for the others."""

        def one_batch(w, d):
            batch = gather(d, jnp.zeros(batch_size, jnp.int32), jnp.ones(batch_size, jnp.float32))
            return self._eval_step(w[0], self._apply, batch, model_state=w[1])

        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(one_batch, weights, data))
        return {**zeros, **{m.name: m.empty() for m in self._metrics if not isinstance(m, metrics_lib.SumMetric)}}

    def _evaluate_member(self, weights: PyTree, data: dict, idx_VxB: jax.Array, w_VxB: jax.Array) -> dict:
        """Metric states of `eval_step` over a padded plan, dropout off; all-padding batches count nothing."""

        def step(w, batch):
            return self._eval_step(w[0], self._apply, batch, model_state=w[1]), jnp.any(batch["weight"] > 0)

        def merge(sums, out):
            return tree_where(out[1], self._merge(sums, out[0]), sums)

        zero = self._zero_sums(weights, data, idx_VxB.shape[1])
        return eval_chunk(weights, zero, data, idx_VxB, w_VxB, 0, step_fn=step, n_steps=idx_VxB.shape[0], merge=merge)

    def _member_epoch(self, m: Member, keep: jax.Array, data: dict, idx_SxB, w_SxB, val_data, val_idx_VxB, val_w_VxB):
        """Keep the last epoch's weights if they improved, run one epoch (`train_chunk`), validate."""
        weights = (m.state.params, m.state.model_state)
        m = m.replace(best=tree_where(keep, weights, m.best))
        zero = self._zero_sums(weights, data, idx_SxB.shape[1])
        state, sums, nonfinite = train_chunk(
            m.state,
            zero,
            jnp.asarray(-1, jnp.int32),
            data,
            idx_SxB,
            w_SxB,
            0,
            m.key,
            step_fn=functools.partial(self._member_step, m),
            n_steps=idx_SxB.shape[0],
            merge=self._merge,
        )
        val_sums = None
        if val_idx_VxB is not None:
            val_sums = self._evaluate_member((state.params, state.model_state), val_data, val_idx_VxB, val_w_VxB)
        return m.replace(state=state), (sums, nonfinite, val_sums, state.opt_state.hyperparams["learning_rate"])

    def _forward_member(self, variables: PyTree, x: PyTree, idx_B: jax.Array) -> jax.Array:
        return self._apply(variables, take_rows(x, idx_B), **train_kwargs(self._apply, False))


__all__ = ["RATE_ARGUMENT", "Member", "MemberPrograms", "tree_where"]
