"""Variants of the diamonds MLP's library train program, paired in one process (the Nov 30 b measurements).

    python -m benchmarks.mlp_variants base,lib,region,kadam 11        # variant names, rounds
    SPC=8 python -m benchmarks.mlp_variants base,lib 9                # steps per call (default: the epoch)

Each variant is the library's `Trainer.train_program` over `benchmarks.specs`' diamonds rows with one
thing changed (compiler options, optimizer, model); epochs are interleaved round by round and every
line prints wall and process CPU ms per step (median [min-max]) and the per-round ratio first/this.
Variants: base (Eigen dots, no region analysis: the library before Nov 30 b), lib (the library's
CPU_COMPILER_OPTIONS), ynn (XLA's default YNNPACK dots), region (base + copy insertion with region
analysis), onednn / onednn_cc / xnn / xnn_ind / xnngreedy / vw512 / preset1 / sched1 / conc (other
XLA:CPU options), plainadam / injadam / flatten / sgd / kadam / libkadam (other optimizers: optax.adam
without the L2 chain, with inject_hyperparams, optax.flatten, SGD, Keras 3's Adam formula),
split2ynn / split2eig (the batch in two independent halves), libl2 (the library with an L2 term of 0, as
before the sixth session), libinj (inject_hyperparams(optax.adam), no chain), libfast / injfast (Adam with
one divide per element, with and without the L2 term), gradbarrier (every gradient before any update),
libflat (the library's chain, Adam over one flat vector), and `+flag=value[+flag=value]`: the library's
options plus those XLA:CPU options.
MODEL=<spec name> picks another model.
"""

import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from benchmarks.specs import SPECS, epoch_orders, synthetic_data
from benchmarks.throughput import build, trainer_epoch
from dlchapter.engine import train, trainer_programs  # the Trainer reads trainer_programs.CPU_COMPILER_OPTIONS
from dlchapter.models import dense as dense_mod

model_name = os.environ.get("MODEL", "diamonds_mlp")
spec = SPECS[model_name]
SPC = None if os.environ.get("SPC", "epoch") == "epoch" else int(os.environ["SPC"])


class SplitMLP(dense_mod.MLP):
    parts: int = 2

    @nn.compact
    def __call__(self, x, *, train=False):
        layers = [nn.Dense(w, kernel_init=dense_mod.KERNEL_INIT, name=f"dense_{i}") for i, w in enumerate(self.widths)]
        out = nn.Dense(self.out_features, kernel_init=dense_mod.KERNEL_INIT, name="output")
        outs = []
        for h in jnp.array_split(x, self.parts):
            for layer in layers:
                h = jax.nn.relu(layer(h))
            outs.append(out(h))
        return jnp.concatenate(outs).astype(jnp.float32)


def single_column_product(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None):
    """x @ kernel for a kernel of one column as a multiply and a row sum (an XLA fusion, not an Eigen call)."""
    if rhs.shape[-1] != 1:
        return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision, preferred_element_type)
    return jnp.sum(lhs * rhs[:, 0], axis=-1, keepdims=True)


class VecOutMLP(dense_mod.MLP):
    @nn.compact
    def __call__(self, x, *, train=False):
        h = x.reshape(x.shape[0], -1)
        for i, w in enumerate(self.widths):
            h = jax.nn.relu(nn.Dense(w, kernel_init=dense_mod.KERNEL_INIT, name=f"dense_{i}")(h))
        out = nn.Dense(
            self.out_features, kernel_init=dense_mod.KERNEL_INIT, name="output", dot_general=single_column_product
        )
        return out(h).astype(jnp.float32)


def make(opts=None, tx=None, split=0, model_cls=None):
    saved_mlp = dense_mod.MLP
    if split:
        dense_mod.MLP = lambda **kw: SplitMLP(**kw, parts=split)
    if model_cls is not None:
        dense_mod.MLP = model_cls
    saved = trainer_programs.CPU_COMPILER_OPTIONS
    trainer_programs.CPU_COMPILER_OPTIONS = E if opts is None else opts  # default: the options before Nov 30 b
    try:
        trainer, state, model = build(spec, SPC)
    finally:
        trainer_programs.CPU_COMPILER_OPTIONS = saved
        dense_mod.MLP = saved_mlp
    if tx is not None:
        state = train.create_train_state(model, tx, synthetic_data(spec, 2)[0], jax.random.key(0))
    return trainer_epoch(trainer, state, spec, SPC)


E = {"xla_cpu_experimental_ynn_fusion_type": ""}
VARIANTS = {}


def variant(name):
    def deco(f):
        VARIANTS[name] = f
        return f

    return deco


variant("base")(lambda: make())
variant("ynn")(lambda: make({}))
variant("onednn")(lambda: make({**E, "xla_cpu_experimental_onednn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}))
variant("onednn_cc")(lambda: make({**E, "xla_cpu_use_onednn": True, "xla_cpu_experimental_onednn_custom_call": True}))
variant("xnn")(lambda: make({**E, "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}))
variant("xnn_ind")(lambda: make({**E, "xla_cpu_experimental_xnn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"}))
variant("xnngreedy")(lambda: make({**E, "xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"}))
variant("preset1")(lambda: make({**E, "xla_cpu_opt_preset": 1}))
variant("sched1")(lambda: make({**E, "xla_cpu_scheduler_type": 1}))
variant("vw512")(lambda: make({**E, "xla_cpu_prefer_vector_width": 512}))
variant("conc")(lambda: make({**E, "xla_cpu_enable_concurrency_optimized_scheduler": True}))
variant("flatten")(
    lambda: make(
        tx=optax.inject_hyperparams(lambda learning_rate: optax.flatten(optax.adam(learning_rate, eps=1e-7)))(
            learning_rate=1e-3
        )
    )
)
variant("plainadam")(lambda: make(tx=optax.adam(1e-3, eps=1e-7)))
variant("injadam")(lambda: make(tx=optax.inject_hyperparams(optax.adam)(learning_rate=1e-3, eps=1e-7)))
variant("region")(lambda: make({**E, "xla_cpu_copy_insertion_use_region_analysis": True}))


def keras_adam_scale(b1=0.9, b2=0.999, eps=1e-7):
    def init(params):
        z = jax.tree.map(jnp.zeros_like, params)
        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=z, nu=jax.tree.map(jnp.zeros_like, params))

    def update(updates, state, params=None):
        count = optax.safe_increment(state.count)
        mu = jax.tree.map(lambda m, g: m + (g - m) * (1 - b1), state.mu, updates)
        nu = jax.tree.map(lambda v, g: v + (g * g - v) * (1 - b2), state.nu, updates)
        t = count.astype(jnp.float32)
        alpha = jnp.sqrt(1 - b2**t) / (1 - b1**t)
        out = jax.tree.map(lambda m, v: alpha * m / (jnp.sqrt(v) + eps), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def kadam_tx():
    from dlchapter.engine.optim import kernel_mask

    def factory(learning_rate, l2):
        adam = optax.chain(keras_adam_scale(), optax.scale_by_learning_rate(learning_rate))
        return optax.chain(optax.add_decayed_weights(2.0 * l2, mask=kernel_mask), adam)

    return optax.inject_hyperparams(factory)(learning_rate=1e-3, l2=0.0)


variant("kadam")(lambda: make(tx=kadam_tx()))
variant("libkadam")(lambda: make({**E, "xla_cpu_copy_insertion_use_region_analysis": True}, tx=kadam_tx()))
R = {"xla_cpu_copy_insertion_use_region_analysis": True}
variant("lib")(lambda: make({**E, **R}))
variant("split2ynn")(lambda: make(R, split=2))
variant("split2eig")(lambda: make({**E, **R}, split=2))
variant("sgd")(lambda: make(tx=optax.sgd(1e-3)))


def grads_first(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """`inner` with every gradient computed before any update starts (an optimization barrier on the tree)."""

    def update(updates, state, params=None):
        return inner.update(jax.lax.optimization_barrier(updates), state, params)

    return optax.GradientTransformation(inner.init, update)


def lib_tx():
    from dlchapter.engine.optim import OptimizerConfig, make_optimizer

    return make_optimizer(OptimizerConfig(spec.optimizer, spec.learning_rate), spec.steps_per_epoch)


def lib_flat_tx():
    """The library's Adam chain with Adam over one flat vector of every parameter (`optax.flatten`)."""
    from dlchapter.engine.optim import KERAS_EPSILON, kernel_mask

    def factory(learning_rate, l2):
        adam = optax.flatten(optax.adam(learning_rate, b1=0.9, b2=0.999, eps=KERAS_EPSILON))
        return optax.chain(optax.add_decayed_weights(2.0 * l2, mask=kernel_mask), adam)

    return optax.inject_hyperparams(factory)(learning_rate=spec.learning_rate, l2=0.0)


variant("libflat")(lambda: make({**E, **R}, tx=lib_flat_tx()))
variant("gradbarrier")(lambda: make({**E, **R}, tx=grads_first(lib_tx())))
variant("libtx")(lambda: make({**E, **R}, tx=lib_tx()))


def lib_l2_tx():
    """The library's chain with its L2 term of 0 (what make_optimizer built before the sixth session)."""
    from dlchapter.engine.optim import OptimizerConfig, make_optimizer

    config = OptimizerConfig(spec.optimizer, spec.learning_rate)
    return make_optimizer(config, spec.steps_per_epoch, l2_hyperparameter=True)


def no_metrics():
    from dlchapter.engine import train as train_mod

    saved = train_mod.TASKS[spec.task]
    train_mod.TASKS[spec.task] = train_mod.Task(saved.loss, ())
    try:
        return make({**E, **R})
    finally:
        train_mod.TASKS[spec.task] = saved


variant("nometrics")(no_metrics)
variant("outvec")(lambda: make({**E, **R}, model_cls=VecOutMLP))
variant("libl2")(lambda: make({**E, **R}, tx=lib_l2_tx()))


def adam_one_divide(b1=0.9, b2=0.999, eps=1e-7):
    """optax's Adam with the bias corrections folded into one scalar and epsilon: one divide per element."""

    def update(updates, state, params=None):
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        root_bc2 = jnp.sqrt(1 - b2**count)
        scale, eps_hat = root_bc2 / (1 - b1**count), eps * root_bc2
        out = jax.tree.map(lambda m, v: scale * m / (jnp.sqrt(v) + eps_hat), mu, nu)
        return out, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(optax.scale_by_adam().init, update)


def fast_tx(l2_chain: bool):
    from dlchapter.engine.optim import kernel_mask

    def factory(learning_rate, l2=None):
        adam = optax.chain(adam_one_divide(), optax.scale_by_learning_rate(learning_rate))
        return optax.chain(optax.add_decayed_weights(2.0 * l2, mask=kernel_mask), adam) if l2_chain else adam

    hyper = {"learning_rate": spec.learning_rate, **({"l2": 0.0} if l2_chain else {})}
    return optax.inject_hyperparams(factory)(**hyper)


variant("libfast")(lambda: make({**E, **R}, tx=fast_tx(True)))
variant("injfast")(lambda: make({**E, **R}, tx=fast_tx(False)))
variant("libplain")(lambda: make({**E, **R}, tx=optax.adam(spec.learning_rate, eps=1e-7)))
variant("libinj")(
    lambda: make({**E, **R}, tx=optax.inject_hyperparams(optax.adam)(learning_rate=spec.learning_rate, eps=1e-7))
)

if __name__ != "__main__":
    raise ImportError("benchmarks.mlp_variants is a script: python -m benchmarks.mlp_variants NAMES [ROUNDS]")
names = sys.argv[1].split(",")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 9


def flag_variant(name: str):
    """`+flag=value[+flag=value]`: the library's options plus these XLA:CPU compiler options (true/false/ints)."""
    extra = {}
    for item in name.lstrip("+").split("+"):
        flag, value = item.split("=")
        extra[flag] = {"true": True, "false": False}.get(value, int(value) if value.lstrip("-").isdigit() else value)
    return make({**E, **R, **extra})


epochs = {n: flag_variant(n) if n.startswith("+") else VARIANTS[n]() for n in names}
orders = epoch_orders(spec.n_rows, rounds + 2)
for o in orders[:2]:
    for f in epochs.values():
        f(o)
ms = {n: [] for n in names}
cpu = {n: [] for n in names}
for r, o in enumerate(orders[2:]):
    for n in names[r % len(names) :] + names[: r % len(names)]:
        t, c = time.perf_counter(), time.process_time()
        epochs[n](o)
        ms[n].append((time.perf_counter() - t) / spec.steps_per_epoch * 1e3)
        cpu[n].append((time.process_time() - c) / spec.steps_per_epoch * 1e3)
print(f"load {os.getloadavg()[0]:.2f}")
for n in names:
    rat = [a / b for a, b in zip(ms[names[0]], ms[n])]
    print(
        f"{n:14s} wall {statistics.median(ms[n]):.4f} [{min(ms[n]):.4f}-{max(ms[n]):.4f}] "
        f"cpu {statistics.median(cpu[n]):.4f}  "
        f"ratio first/this {statistics.median(rat):.3f} [{min(rat):.3f}-{max(rat):.3f}]"
    )
