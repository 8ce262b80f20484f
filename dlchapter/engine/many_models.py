"""Many models of any Flax linen module in one compiled program: vmap over seeds, hyperparameters and folds.

N models of one module train together: their train states are stacked on a leading axis and one
`jax.vmap`-ed epoch program updates them all. What differs between models is data, never shape, so
changing it never recompiles (`ModelSpec`): the seed (initial weights, dropout key, batch order), the
learning rate and L2 (injected optimizer hyperparameters, `dlchapter.engine.optim`), the chapter's decay
a0 / (1 + decay * epoch), the fold, and a dropout rate when the module's `__call__` takes a traced
`keep_prob` argument (as `dlchapter.models.sweep_mlp.SweepMLP` does; other modules train with their own
fixed rates, and a per-model rate is refused with a ValueError).

The program is built from the single-model engine's pieces, so the contract is `Trainer`'s
(`dlchapter.engine.train`): any linen module (`train=` passed only when `__call__` takes it), mutable
collections such as BatchNorm's `batch_stats` (`TrainState.model_state`), inputs that are pytrees of
arrays, a registered or callable loss, registered metrics or metric objects (empty/update/merge/compute),
`Task(from_logits=False)` and a precision policy. Each epoch is `loop.train_chunk` over `train.train_step`
vmapped over the models: a stopped model's batch plan has weight 0 everywhere, so its chunk runs no
step. Validation is `loop.eval_chunk` over `train.eval_step`. After each epoch the host fetches every
model's metric states, finishes them with each metric's own `compute` (exact for non-additive metrics
such as a maximum) and applies Keras's rule `callbacks.early_stopping_update` to all models at once;
the next epoch's program keeps the best weights (and collections) of the models that improved.

Model i computes what `Trainer.fit` computes for `init_key, dropout_key = jax.random.split(
jax.random.key(seed))`: `create_train_state(model, tx, x, init_key)`, `FitConfig(seed=seed,
batch_size=...)`, `fit(..., dropout_key)`. Folds: the data's fold axis is flattened into rows on the
device (row r of fold f is row f * rows + r), so a model's batches are plain `loop.gather`s of its
offset indices. A model whose loss turns NaN/Inf is frozen and flagged `diverged`; the others go on.

This module is the host side (plans, finishing, early stopping, checkpoints, evaluate/predict); the
traced programs it calls are `dlchapter.engine.member_programs.MemberPrograms`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.checkpoint.resume import PreemptionGuard, TrainingInterrupted, resume_hint
from dlchapter.checkpoint.run_identity import data_digest
from dlchapter.engine import input_checks
from dlchapter.engine import metrics as metrics_lib
from dlchapter.engine.loop import batch_plan, epoch_order, take_rows
from dlchapter.engine.member_programs import RATE_ARGUMENT, Member, MemberPrograms, tree_where
from dlchapter.engine.sweep_data import (
    ModelSpec,
    SweepData,
    SweepResult,
    check_data,
    check_specs,
    flat_folds,
    fold_count,
    stack_plans,
)
from dlchapter.engine.sweep_progress import Progress, SweepCheckpoint, SweepCheckpointer
from dlchapter.engine.train_state import takes_train, train_kwargs
from dlchapter.models.dense import probabilities

PyTree = Any


class ManyModels(MemberPrograms):
    """Trains N models of one linen module in one vmapped, compiled program (see the module docstring).

    Args:
        model: any `flax.linen.Module`; its `__call__` may take `train` and a traced `keep_prob`.
        task: loss, metrics, head and from_logits, as for `Trainer`.
        optimizer: the optimizer all models share (`name`, `momentum`, `clip_global_norm`; default Adam); each
            model's learning rate, decay and L2 come from its `ModelSpec`, so they must stay unset here.
        epochs, batch_size, shuffle: as `FitConfig`'s; `eval_batch_size`: rows per validation batch.
        early_stopping: per-model early stopping (best weights restored), or None: every model runs all epochs.
        precision: "fp32" or "bf16" (`dlchapter.engine.precision`): compute dtype; parameters stay float32.
    Raises:
        TypeError: `model` is not a flax.linen Module (e.g. a flax.nnx one).
        ValueError: `optimizer` sets a learning rate, decay or L2 (which would be ignored).
        ValueError: early stopping monitors a name the task does not log; an unknown precision; epochs,
            batch_size or eval_batch_size < 1.
    `traces` counts how often each program was traced: new hyperparameters, seeds or folds (N unchanged)
    leave it at 1.
    """

    def _aot(self, name: str, jitted: Callable, *args) -> tuple[Callable, float]:
        """`jitted` compiled ahead of time for these argument shapes, and the seconds that took (0 when cached)."""
        leaves, treedef = jax.tree.flatten(args)
        key = (name, treedef, tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in leaves))
        if key in self._compiled:
            return self._compiled[key], 0.0
        started = time.perf_counter()
        self._compiled[key] = jitted.lower(*args).compile()
        return self._compiled[key], time.perf_counter() - started

    def _batch(self, data: SweepData) -> int:  # as Trainer.fit: never larger than the (largest) training set
        return min(self.batch_size, max(len(r) for r in data.train_rows))

    def _check(self, specs: Sequence[ModelSpec], data: SweepData) -> None:
        if not specs:
            raise ValueError("no models to train: specs is empty")
        check_specs(specs)
        data.check()
        for s in specs:
            if not 0.0 <= s.dropout < 1.0 or not 0 <= s.fold < data.n_folds:
                raise ValueError(f"bad model spec {s}: dropout must be in [0, 1) and fold in [0, {data.n_folds})")
            if s.dropout and not self._rate:
                name = type(self.model).__name__
                raise ValueError(
                    f"model spec {s} asks for dropout {s.dropout}, but {name}.__call__ "
                    f"takes no traced {RATE_ARGUMENT!r} argument (as SweepMLP does); use dropout=0 and "
                    "set the rate in the module"
                )
        if self.early_stopping is not None:
            names = ["loss", *(m.name for m in self._metrics), "lr"]
            input_checks.check_monitor("EarlyStopping", self.early_stopping.monitor, names, data.val_rows is not None)

    def _output_struct(self, x_K: PyTree, batch: int) -> Any:
        """The model's outputs on a batch of `batch` rows of x (leaves (folds, rows, ...)), by `jax.eval_shape`."""
        x_rows = jax.tree.map(lambda a: jax.ShapeDtypeStruct((batch, *np.shape(a)[2:]), np.asarray(a).dtype), x_K)
        kwargs = {"train": False} if takes_train(type(self._init_model)) else {}

        def forward(x_B: PyTree) -> PyTree:
            variables = self._init_model.init({"params": jax.random.key(0)}, x_B, **kwargs)
            return self._apply(variables, x_B, **train_kwargs(self._apply, False))

        return jax.eval_shape(forward, x_rows)

    def _checked_y(self, x_K: PyTree, y_K: PyTree, batch: int, where: str) -> PyTree:
        """`input_checks.check_inputs` on (folds, rows, ...) data; returns y_K ((.., rows, 1) sparse labels
        squeezed). Raises ValueError naming x or y, the row (and fold), what was found and what to do."""
        rows = np.shape(jax.tree.leaves(x_K)[0])[1]
        input_checks.check_finite(x_K, f"{where}: x", rows)
        input_checks.check_finite(y_K, f"{where}: y", rows)
        flat_y = jax.tree.map(lambda a: np.asarray(a).reshape(-1, *np.shape(a)[2:]), y_K)
        out = self._output_struct(x_K, batch)
        checked = input_checks.check_inputs(self.task.loss, self._loss_fn, (), flat_y, out, batch, where)
        if checked is flat_y:
            return y_K
        return jax.tree.map(lambda new, old: new.reshape(*np.shape(old)[:2], *new.shape[1:]), checked, y_K)

    def train_plan(
        self, specs: Sequence[ModelSpec], data: SweepData, epoch: int, frozen: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Index and weight matrices (N, steps >= 2, batch): each model's `epoch_order` over its fold's rows,
        as `Trainer.fit` walks them, offset to its fold's flattened rows; a frozen model's weights are all 0."""
        batch, k = self._batch(data), fold_count(data.x, data.y)
        rows_per_fold = np.shape(jax.tree.leaves(data.x)[0])[1]
        plans: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        for s in specs:
            if (s.seed, s.fold) not in plans:
                rows = data.train_rows[s.fold] + (s.fold * rows_per_fold if k > 1 else 0)
                plans[s.seed, s.fold] = batch_plan(rows[epoch_order(len(rows), s.seed, epoch, self.shuffle)], batch)
        idx, weight = stack_plans([plans[s.seed, s.fold] for s in specs], min_steps=2)  # 2: train_chunk's loop
        if frozen is not None:
            weight[frozen] = 0.0
        return idx, weight

    def _eval_plan(
        self, specs: Sequence[ModelSpec], rows: Sequence[np.ndarray], rows_per_fold: int, per_fold: bool
    ) -> tuple[jax.Array, jax.Array]:
        """(N, steps, batch) evaluation plan over each model's fold's rows, padded to a common number of steps."""
        batch = max(1, min(self.eval_batch_size, max(len(r) for r in rows)))
        offset = [s.fold * rows_per_fold if per_fold else 0 for s in specs]
        idx, weight = stack_plans([batch_plan(np.asarray(rows[s.fold]) + o, batch) for s, o in zip(specs, offset)])
        return jnp.asarray(idx), jnp.asarray(weight)

    def _finish_each(self, host: dict, n: int) -> dict[str, np.ndarray]:
        """Every model's loss and metric values (float64 (n,)), each finished by its metric's `compute`."""
        rows = []
        for i in range(n):
            one = jax.tree.map(lambda a, i=i: a[i], host)
            rows.append(
                {
                    "loss": float(one["loss"]["sum"] / max(one["loss"]["count"], 1e-12)),
                    **metrics_lib.finish(self._metrics, one),
                }
            )
        return {k: np.asarray([r[k] for r in rows], np.float64) for k in rows[0]}

    def _init_members(self, specs: Sequence[ModelSpec], data: SweepData, train: dict) -> tuple[Member, float]:
        spe = [math.ceil(len(data.train_rows[s.fold]) / self._batch(data)) for s in specs]

        def col(name, dtype):
            return jnp.asarray([getattr(s, name) for s in specs], dtype)

        keep = jnp.asarray(np.float32([1.0 - s.dropout for s in specs]))  # rounded once, as Flax's 1.0 - rate
        args = (
            col("seed", jnp.int32),
            col("learning_rate", jnp.float32),
            col("l2", jnp.float32),
            col("decay", jnp.float32),
            keep,
            jnp.asarray(spe, jnp.int32),
            take_rows(train["x"], slice(0, 1)),
        )
        program, seconds = self._aot("init", self._init, *args)
        return program(*args), seconds

    def _run_epoch(self, members: Member, progress: Progress, specs, data, train, val, val_idx, val_w):
        """One program call for every model, then the host's finishing and early stopping (`progress.record`)."""
        idx, weight = self.train_plan(specs, data, progress.epoch, progress.frozen)
        args = (members, jnp.asarray(progress.keep), train, jnp.asarray(idx), jnp.asarray(weight), val, val_idx, val_w)
        program, seconds = self._aot("epoch", self._epoch, *args)
        members, out = program(*args)
        sums, nonfinite, val_sums, lr = jax.device_get(out)
        n = len(specs)
        logs = self._finish_each(sums, n)
        if val_sums is not None:
            logs.update({f"val_{name}": v for name, v in self._finish_each(val_sums, n).items()})
        logs["lr"] = np.asarray(lr, np.float64)
        progress.record(logs, nonfinite, self.epochs, self.early_stopping)
        return members, logs, seconds

    def identity(self, specs: Sequence[ModelSpec], data: SweepData) -> dict[str, Any]:
        """What decides the numbers of a fit (JSON): models, module, task, optimizer, loop, data shapes and content."""
        task = self.task.identity(self._metrics)
        shapes = {
            name: [list(np.shape(a)) for a in jax.tree.leaves(getattr(data, name))]
            for name in ("x", "y", "x_val", "y_val")
        }
        rows = {
            "train_rows": [len(r) for r in data.train_rows],
            "val_rows": None if data.val_rows is None else [len(r) for r in data.val_rows],
        }
        rows_by_fold = (list(data.train_rows), None if data.val_rows is None else list(data.val_rows))
        rule = None if self.early_stopping is None else dataclasses.asdict(self.early_stopping)
        return {
            "models": [dataclasses.asdict(s) for s in specs],
            "module": repr(self._init_model),
            "task": task,
            "optimizer": repr(self.tx_config),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "eval_batch_size": self.eval_batch_size,
            "early_stopping": rule,
            "precision": self.policy.name,
            "data": {
                **shapes,
                **rows,
                "content_digest": data_digest(data.x, data.y, data.x_val, data.y_val, rows_by_fold),
            },
        }

    def fit(
        self,
        specs: Sequence[ModelSpec],
        data: SweepData,
        *,
        checkpoint: SweepCheckpoint | None = None,
        on_epoch_end: Callable[[int, dict[str, np.ndarray]], None] | None = None,
    ) -> SweepResult:
        """Train every model of `specs` together; stops when every model has stopped early (or at `epochs`).

        `checkpoint`: save the stacked states and progress after epochs (`SweepCheckpoint`); a directory
        that holds a checkpoint of the same run resumes from it, exactly; SIGTERM or SIGINT then saves at the
        end of the epoch and raises TrainingInterrupted. `on_epoch_end(epoch, logs)` is
        called after each epoch (1-based) with every model's logs (name -> float64 (N,), NaN-free only for
        models that trained), after the checkpoint of that epoch.
        Before any step, x and y are checked (`input_checks`: finite, labels and shapes against a built-in loss
        and the model's outputs, the loss a scalar). Raises ValueError for those, for a bad spec (dropout outside
        [0, 1), an unknown fold, a dropout rate for a module without `keep_prob`, `sweep_data.check_specs`), data
        whose x and y differ in rows or whose row indices lie outside them (`SweepData.check`) or a validation
        monitor without validation rows; TypeError for a spec that is not a ModelSpec; RunMismatch when the
        checkpoint directory holds another run.
        """
        specs = tuple(specs)
        self._check(specs, data)
        data = dataclasses.replace(data, y=self._checked_y(data.x, data.y, self._batch(data), "ManyModels.fit"))
        if data.x_val is not None:
            y_val = self._checked_y(data.x_val, data.y_val, self.eval_batch_size, "ManyModels.fit: validation data")
            data = dataclasses.replace(data, y_val=y_val)
        started = time.perf_counter()
        k = fold_count(data.x, data.y)
        train = {"x": flat_folds(data.x, k), "y": flat_folds(data.y, k)}
        members, compile_seconds = self._init_members(specs, data, train)
        val, val_idx, val_w = None, None, None
        if data.val_rows is not None:
            kv = k if data.x_val is None else fold_count(data.x_val, data.y_val)
            val = train if data.x_val is None else {"x": flat_folds(data.x_val, kv), "y": flat_folds(data.y_val, kv)}
            rows_per_fold = np.shape(jax.tree.leaves(data.x if data.x_val is None else data.x_val)[0])[1]
            val_idx, val_w = self._eval_plan(specs, data.val_rows, rows_per_fold, kv > 1)
        n, rule = len(specs), self.early_stopping
        progress = Progress.start(n, rule)
        saver = SweepCheckpointer(checkpoint, self.identity(specs, data)) if checkpoint is not None else None
        restored = saver.restore(members, self.epochs) if saver is not None else None
        if restored is not None:
            members, progress = restored
        guard = PreemptionGuard() if saver is not None else contextlib.nullcontext()
        try:
            with guard:
                while progress.epoch < self.epochs and not progress.frozen.all():
                    members, logs, seconds = self._run_epoch(members, progress, specs, data, train, val, val_idx, val_w)
                    compile_seconds += seconds
                    saved = saver is not None and saver.due(progress, self.epochs)
                    if saved:
                        saver.save(members, progress)
                    if on_epoch_end is not None:
                        on_epoch_end(progress.epoch, logs)
                    if saver is not None and guard.requested and progress.epoch < self.epochs:
                        if not saved:
                            saver.save(members, progress)
                        raise TrainingInterrupted(
                            f"{guard.requested} received: stopped after epoch {progress.epoch} with a checkpoint in "
                            f"{saver.store.directory}. {resume_hint(saver.config)}"
                        )
        except BaseException:
            if saver is not None:
                saver.abandon()
            raise
        if saver is not None:
            saver.close()
        state = members.state
        weights = (state.params, state.model_state)
        if rule is not None:
            weights = tree_where(jnp.asarray(progress.keep), weights, members.best)
        jax.block_until_ready(weights)
        run_seconds = time.perf_counter() - started - compile_seconds
        p = progress
        best_epoch = p.best_epoch if rule is not None else p.epochs_run.copy()
        return SweepResult(
            specs,
            weights[0],
            p.history,
            best_epoch,
            p.epochs_run,
            p.stopped,
            p.diverged,
            compile_seconds,
            run_seconds,
            weights[1],
        )

    def evaluate(self, result: SweepResult, x: PyTree, y: PyTree, *, x_per_fold: bool = False) -> dict[str, np.ndarray]:
        """Every model's loss and metrics on (x, y) as float64 (N,) arrays; dropout off, collections read only.

        `x_per_fold`: x is (K, rows, ...) (every leaf), and model i reads its fold's copy.
        Raises ValueError when x has no rows or x and y differ in rows.
        """
        x_K = x if x_per_fold else jax.tree.map(lambda a: np.asarray(a)[None], x)
        y_K = jax.tree.map(lambda a: np.asarray(a)[None], y)
        k = fold_count(x_K, y_K)
        rows = check_data(x_K, y_K, None, "evaluate")
        if rows == 0:
            raise ValueError("evaluate: x has no rows (0 examples); nothing to evaluate")
        y_K = self._checked_y(x_K, y_K, min(self.eval_batch_size, rows), "ManyModels.evaluate")
        data = {"x": flat_folds(x_K, k), "y": flat_folds(y_K, k)}
        every_fold = [np.arange(rows)] * (1 + max(s.fold for s in result.specs))
        idx, w = self._eval_plan(result.specs, every_fold, rows, k > 1)
        sums = self._evaluate((result.params, result.model_state), data, idx, w)
        return self._finish_each(jax.device_get(sums), len(result.specs))

    def predict(self, result: SweepResult, x: PyTree, *, x_per_fold: bool = False, raw: bool = False) -> np.ndarray:
        """(N, rows, *outputs) float32: every model's outputs, through the task's head unless `raw` (or the
        task is not from logits). `x_per_fold`: x is (K, rows, ...), model i reads its fold's copy."""
        x_K = x if x_per_fold else jax.tree.map(lambda a: np.asarray(a)[None], x)
        k, rows = fold_count(x_K), np.shape(jax.tree.leaves(x_K)[0])[1]
        if rows == 0:
            raise ValueError("predict: x has no rows (0 examples)")
        x_dev = flat_folds(x_K, k)
        batch = max(1, min(self.eval_batch_size, rows))
        order = np.arange(rows)
        idx = np.stack([batch_plan(order + (s.fold * rows if k > 1 else 0), batch)[0] for s in result.specs])
        variables = {"params": result.params, **result.model_state}
        outputs = np.concatenate(
            [np.asarray(self._forward(variables, x_dev, jnp.asarray(idx[:, b]))) for b in range(idx.shape[1])], axis=1
        )[:, :rows]
        if raw or not self.task.from_logits:
            return outputs
        return np.asarray(probabilities(jnp.asarray(outputs), self.task.head))


__all__ = ["RATE_ARGUMENT", "ManyModels", "Member", "ModelSpec", "SweepData", "SweepResult"]
