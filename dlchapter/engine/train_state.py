"""The train state and the model boundary: a `flax.linen.Module` or a `flax.nnx.Module` in, pure functions out.

`TrainState` is Flax's (step, apply_fn, params, tx, opt_state) plus `model_state`, the model's other
variables. The steps call `state.apply_fn(variables, x, rngs={"dropout": key}, mutable=[...], train=...)`,
linen's calling convention, whatever the model is:

- a linen module: `apply_fn` is `module.apply`; `params` is the "params" collection and `model_state`
  the other collections (BatchNorm's {"batch_stats": ...});
- an nnx module: `nnx.split(model, nnx.Param, ...)` at the boundary gives (graphdef, params, rest);
  `apply_fn` is an `NnxApply` holding the graphdef (static to `jit`), `params` the `nnx.State` of every
  `nnx.Param` (what the optimizer trains) and `model_state` {"nnx": rest}: BatchNorm's `nnx.BatchStat`s,
  the `nnx.Rngs` streams and any other variable, carried by train steps like linen's collections.
  Each call `nnx.merge`s a fresh module inside the traced function, so the jitted step stays a pure
  function of (graphdef, params, rest); `nnx_model(state)` gives the trained module back.
  Train steps call `.train()` on the merged module, evaluation and prediction `.eval()` (Dropout off,
  BatchNorm on its running averages). The dropout key: before each train forward pass every
  `nnx.RngStream` of the module gets the key `fold_in(step_dropout_key, i)` (i: the stream's index in
  graph order) and a zero count, so nnx.Dropout draws from the same per-step key `train_step` gives a
  linen model (`fold_in(key, state.step)`) and a resumed run replays the same masks; the keys the
  module was built with only serve its initialisation.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training import train_state as flax_train_state

from dlchapter.engine.input_checks import as_numpy

if TYPE_CHECKING:
    from flax import nnx

PyTree = Any
NNX_STATE = "nnx"  # the model_state key of an nnx module's non-Param variables


class TrainState(flax_train_state.TrainState):
    """Flax's TrainState (step, apply_fn, params, tx, opt_state) plus the model's other variables.

    `model_state` holds the mutable collections other than "params" (e.g. {"batch_stats": ...} of
    BatchNorm; {"nnx": State} for an nnx module): train steps update them, evaluation and prediction use
    them, checkpoints save them. It is {} for models without such collections, and then a step does
    exactly the work it did before.
    """

    model_state: PyTree = struct.field(default_factory=dict)


class NnxApply:
    """linen's `apply` for an nnx module's graphdef: `(variables, x, *, rngs, mutable, train) -> outputs`.

    `variables` is {"params": State} or {"params": State, "nnx": State}; with `mutable` (any non-empty
    list) the result is `(outputs, {"nnx": new rest})`. Hashed by identity: one state's programs are
    compiled once.
    """

    def __init__(self, graphdef: Any):
        self.graphdef = graphdef

    def __call__(
        self,
        variables: dict,
        x: PyTree,
        *,
        rngs: dict | None = None,
        mutable: Sequence[str] | bool = False,
        train: bool = False,
    ) -> Any:
        from flax import nnx

        states = [variables["params"], *([variables[NNX_STATE]] if NNX_STATE in variables else [])]
        # fresh Variable objects in this trace (those of a closed-over State belong to an outer one, and
        # BatchNorm and the RNG streams write to theirs)
        model = nnx.merge(self.graphdef, *jax.tree.map(lambda leaf: leaf, states))
        if train:
            model.train()
            if rngs and "dropout" in rngs:
                _reseed(model, rngs["dropout"])
        else:
            model.eval()
        outputs = model(x)
        if not mutable:
            return outputs
        return outputs, {NNX_STATE: nnx.split(model, nnx.Param, ...)[2]}


def _reseed(model: nnx.Module, key: jax.Array) -> None:
    """Every RngStream of `model` gets `fold_in(key, i)` (its shape) and count 0; see the module docstring."""
    from flax import nnx

    streams = [node for _, node in nnx.iter_graph(model) if isinstance(node, nnx.RngStream)]
    for i, stream in enumerate(streams):
        shape = stream.key.get_value().shape
        new_key = jax.random.fold_in(key, i)
        stream.key.set_value(jax.random.split(new_key, shape) if shape else new_key)
        stream.count.set_value(jnp.zeros(shape, jnp.uint32))


def create_train_state(model: Any, tx: optax.GradientTransformation, sample_x: PyTree, key: jax.Array) -> TrainState:
    """Initialise `model` on one example's shape and wrap it with the optimizer.

    `model`: any `flax.linen.Module`, initialised here: `sample_x` is an array or pytree of arrays with a
    leading batch axis (its first row is used), `key` seeds the "params" stream, and `train=False` is
    passed to `model.init` only when the module's `__call__` takes `train`. The initialisation is jitted
    (one compile instead of one per random op) and cached per model, so repeated runs of one architecture
    compile it once (`make_optimizer`'s optimizers bring a jitted `init` of their own).
    Or a `flax.nnx.Module`, already initialised by its constructor (`sample_x` and `key` are then unused):
    it is split into graphdef, params and the rest (module docstring); the module object itself is not
    changed by training (`nnx_model(state)` gives the trained one). `sample_x` may be a pandas DataFrame
    (`to_numpy()`); ValueError when it has non-numeric columns.
    """
    if _is_nnx_module(model):
        from flax import nnx

        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        # copies: fit donates the state's buffers, which would delete the arrays the user's module still holds
        params, rest = jax.device_put((params, rest), may_alias=False)
        model_state = {NNX_STATE: rest} if jax.tree.leaves(rest) else {}
        return TrainState.create(apply_fn=NnxApply(graphdef), params=params, tx=tx, model_state=model_state)
    sample_x = as_numpy(sample_x, "create_train_state: sample_x")  # pandas DataFrames and Series
    first_row = jax.tree.map(
        lambda a: jax.device_put(np.asarray(a[:1])) if not isinstance(a, jax.Array) else a[:1], sample_x
    )  # device_put: no compiled program (jnp.asarray compiles one per shape)
    model_key = (model, repr(model))  # the repr: Scale(2) and Scale(2.0) are equal modules with equal hashes
    try:
        init = _jitted_init(*model_key)
    except TypeError:  # a module that cannot be hashed (e.g. a list attribute): jitted, not cached
        init = _jitted_init.__wrapped__(*model_key)
    variables = dict(init(key, first_row))
    params = variables.pop("params")
    return TrainState.create(apply_fn=model.apply, params=params, tx=tx, model_state=variables)


def nnx_model(state: TrainState, *, train: bool = False) -> nnx.Module:
    """The nnx module of a state made from one (`nnx.merge` of its graphdef, params and rest), in eval mode
    unless `train`. Its Variables are new objects over the state's arrays, so calling it (even in train mode,
    which updates BatchNorm's statistics) leaves `state` unchanged. Raises TypeError for a state of a linen
    module."""
    apply_fn = state.apply_fn
    while not isinstance(apply_fn, NnxApply) and hasattr(apply_fn, "__wrapped__"):  # precision policies
        apply_fn = apply_fn.__wrapped__
    if not isinstance(apply_fn, NnxApply):
        raise TypeError(
            f"nnx_model: this state was not made from a flax.nnx.Module (its apply_fn is {state.apply_fn!r})"
        )
    from flax import nnx

    rest = (state.model_state or {}).get(NNX_STATE)
    states = [state.params, *([rest] if rest is not None else [])]
    model = nnx.merge(apply_fn.graphdef, *jax.tree.map(lambda leaf: leaf, states))  # its own Variables
    model.train() if train else model.eval()
    return model


def _is_nnx_module(model: Any) -> bool:
    """Whether `model` is a `flax.nnx.Module`. Asked of `sys.modules`: a process that never imported flax.nnx
    (0.07 s on a 2-core CPU, `python -X importtime`) has no nnx module to pass, and a linen run stays without it."""
    nnx = sys.modules.get("flax.nnx")
    return nnx is not None and isinstance(model, nnx.Module)


@functools.lru_cache(maxsize=32)
def _jitted_init(model: Any, model_repr: str) -> Callable:
    """`model.init` as one program, cached per model (`model_repr` keeps equal modules of other field types apart)."""
    kwargs = {"train": False} if takes_train(type(model)) else {}
    return jax.jit(lambda k, x: model.init({"params": k}, x, **kwargs))


@functools.cache
def takes_train(module_type: type) -> bool:
    """Whether `module_type.__call__` accepts a `train` keyword (inspected once per class)."""
    parameters = inspect.signature(module_type.__call__).parameters
    return "train" in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


def module_of(apply_fn: Callable) -> Any:
    """The module behind `apply_fn` (a bound `Module.apply`, maybe wrapped by partials or precision policies)."""
    fn = apply_fn
    while not hasattr(fn, "__self__") and (isinstance(fn, functools.partial) or hasattr(fn, "__wrapped__")):
        fn = fn.func if isinstance(fn, functools.partial) else fn.__wrapped__
    return getattr(fn, "__self__", None)


def train_kwargs(apply_fn: Callable, train: bool) -> dict[str, bool]:
    """{"train": train} when the module behind `apply_fn` takes it, else {} (a plain function or an
    `NnxApply`: the former)."""
    module = module_of(apply_fn)
    return {"train": train} if module is None or takes_train(type(module)) else {}


def variables_of(params: PyTree, model_state: PyTree | None) -> dict:
    """linen's variables dict: {"params": params, **model_state}."""
    return {"params": params, **(model_state or {})}


def weights_pair(state: Any) -> tuple[PyTree, PyTree]:
    """(params, model_state) of `state`; model_state {} for states without collections."""
    return state.params, getattr(state, "model_state", None) or {}
