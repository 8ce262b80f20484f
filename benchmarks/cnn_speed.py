"""Prototypes for the CNN's CPU speed gap, timed through the library's Trainer.

    python -m benchmarks.cnn_speed [--variants base,pool,im2col,...] [--blocks 5]

Each CNN variant is the chapter's CNN (same parameter tree as `ChapterCNN`, so
the same 104,202 parameters and the same function up to float rounding)
trained with rmsprop at batch 64 through a Trainer's `train_program(n)`
(`--steps-per-call`): "base" is the library's `ChapterCNN` (canonical-gradient
convolution of dlchapter/models/conv_ops.py, reshape max-pool), "pool" the
library before that convolution (XLA's own convolution gradients), "xla_conv"
the library before the reshape max-pool too (`nn.max_pool`), "canonical"
`conv_canonical` called directly (as "base"), "im2col" and "nchw" other
convolutions; "mlp", "gru", "lstm" are the other chapter models. A variant
name without "@" runs through the library's `Trainer` as it is (on CPU it
compiles without YNNPACK fusions, `dlchapter.engine.train.CPU_COMPILER_OPTIONS`);
"<variant>@<options>" compiles with those XLA compiler options instead:
"default" (XLA's own defaults, YNNPACK on), "ynn_dot" or "no_ynn", e.g.
"base@default". Variants are timed round-robin in one process, so a machine
loaded by others slows all of them alike. XLA flags and thread settings act
per process: run this script once per setting (`XLA_FLAGS=... python -m
benchmarks.cnn_speed`) and compare the "base" rows. What each attempt gave is
in benchmarks/NOTES.md.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.specs import SPECS, synthetic_data
from dlchapter.engine.loop import batch_plan, eval_chunk, train_chunk
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, Trainer, create_train_state
from dlchapter.models.conv import CONV_FEATURES, KERNEL_INIT, NUM_CLASSES, ChapterCNN
from dlchapter.models.conv import _max_pool as pool_reshape  # the library's reshape + max 2x2 pool
from dlchapter.models.conv_ops import DN_NHWC, conv_canonical
from dlchapter.models.dense import MLP
from dlchapter.models.recurrent import RecurrentNet


def conv_im2col(x_BxHxWxC: jax.Array, kernel_KxKxCxF: jax.Array) -> jax.Array:
    """'valid' 3x3 convolution as 9 shifted slices concatenated and one matmul (im2col)."""
    kh, kw, c, f = kernel_KxKxCxF.shape
    b, h, w, _ = x_BxHxWxC.shape
    ho, wo = h - kh + 1, w - kw + 1
    patches = jnp.concatenate([x_BxHxWxC[:, i : i + ho, j : j + wo, :] for i in range(kh) for j in range(kw)], axis=-1)
    return patches @ kernel_KxKxCxF.reshape(kh * kw * c, f)


def conv_nchw(x_BxCxHxW: jax.Array, kernel_KxKxCxF: jax.Array) -> jax.Array:
    """'valid' convolution with channels-first activations (PyTorch's layout)."""
    return jax.lax.conv_general_dilated(
        x_BxCxHxW, kernel_KxKxCxF, (1, 1), "VALID", dimension_numbers=("NCHW", "HWIO", "NCHW")
    )


def pool_nchw(x_BxCxHxW: jax.Array) -> jax.Array:
    b, c, h, w = x_BxCxHxW.shape
    x = x_BxCxHxW[:, :, : h // 2 * 2, : w // 2 * 2]
    return x.reshape(b, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


class ConvParams(nn.Module):
    """A 3x3 conv's `kernel` and `bias`, named as in `nn.Conv` (so trees match `ChapterCNN`'s)."""

    in_features: int
    features: int

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        kernel = self.param("kernel", KERNEL_INIT, (3, 3, self.in_features, self.features))
        return kernel, self.param("bias", nn.initializers.zeros_init(), (self.features,))


class ProtoCNN(nn.Module):
    """The chapter's CNN with swappable pieces; parameters named like `ChapterCNN`'s.

    conv: "xla" (lax.conv, NHWC, autodiff's gradients), "canonical" (the
    library's `conv_canonical`), "im2col" or "nchw"; pool: "window"
    (nn.max_pool, XLA reduce_window) or "reshape" (the library's).
    """

    conv: str = "xla"
    pool: str = "window"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        x = (x if x.ndim == 4 else x[..., None]).astype(self.dtype)
        if self.conv == "nchw":
            x = x.transpose(0, 3, 1, 2)
        for i, width in enumerate(CONV_FEATURES):
            kernel, bias = ConvParams(x.shape[1 if self.conv == "nchw" else -1], width, name=f"conv_{i}")()
            kernel, bias = kernel.astype(self.dtype), bias.astype(self.dtype)
            if self.conv == "nchw":
                x = nn.relu(conv_nchw(x, kernel) + bias[:, None, None])
                x = pool_nchw(x) if i < 2 else x
                continue
            if self.conv == "im2col":
                y = conv_im2col(x, kernel)
            elif self.conv == "canonical":
                y = conv_canonical(x, kernel)
            else:
                y = jax.lax.conv_general_dilated(x, kernel, (1, 1), "VALID", dimension_numbers=DN_NHWC)
            x = nn.relu(y + bias)
            if i < 2:
                x = pool_reshape(x) if self.pool == "reshape" else nn.max_pool(x, (2, 2), (2, 2), "VALID")
        if self.conv == "nchw":
            x = x.transpose(0, 2, 3, 1)  # flatten in NHWC order, as ChapterCNN does
        x = x.reshape(x.shape[0], -1)
        return nn.Dense(NUM_CLASSES, kernel_init=KERNEL_INIT, dtype=self.dtype, name="dense")(x).astype(jnp.float32)


class SplitBatch(nn.Module):
    """Runs `inner` on `parts` slices of the batch and concatenates the outputs.

    The same function and parameters (shared, so the tree gains no level but
    the wrapper's `inner` prefix); the slices' forward and backward passes are
    independent branches of the program, which XLA's CPU runtime may run
    concurrently on its threads, where one convolution uses one core.
    """

    inner: nn.Module
    parts: int = 2

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if x.shape[0] % self.parts:  # e.g. the one-example batch of init
            return self.inner(x, train=train)
        return jnp.concatenate([self.inner(chunk, train=train) for chunk in jnp.split(x, self.parts)], axis=0)


COMPILER_OPTIONS: dict[str, dict[str, str] | None] = {
    "default": None,
    # XLA:CPU hands convolutions to YNNPACK by default, which runs each on one thread; without it
    # they go to Eigen's multi-threaded convolution. Only one enum value fits a compiler option.
    "ynn_dot": {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"},
    "no_ynn": {"xla_cpu_experimental_ynn_fusion_type": ""},
}


class OptionsTrainer(Trainer):
    """`Trainer` compiling its programs with the given XLA `compiler_options`.

    The library's `Trainer` passes `dlchapter.engine.train.CPU_COMPILER_OPTIONS` on CPU
    (none elsewhere); this one passes `compiler_options` on every backend.
    """

    def __init__(self, *args: Any, compiler_options: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.compiler_options = compiler_options

    def train_program(self, n_steps: int) -> Callable:
        if n_steps not in self._train_programs:
            fn = functools.partial(train_chunk, step_fn=self._step_fn, n_steps=n_steps)
            self._train_programs[n_steps] = jax.jit(
                self._counted("train", fn), donate_argnums=self._donate, compiler_options=self.compiler_options
            )
        return self._train_programs[n_steps]

    def _eval_program(self, n_steps: int, apply_fn: Callable) -> Callable:
        key = (n_steps, apply_fn)
        if key not in self._eval_programs:
            step = functools.partial(self._eval_fn, apply_fn=apply_fn)
            fn = functools.partial(eval_chunk, step_fn=lambda params, batch: step(params, batch=batch), n_steps=n_steps)
            self._eval_programs[key] = jax.jit(
                self._counted("eval", fn), donate_argnums=(1,), compiler_options=self.compiler_options
            )
        return self._eval_programs[key]


class ProtoLSTM(nn.Module):
    """The chapter's LSTM classifier (64 units, head on the last output) with fused gate kernels.

    Same function and parameter count as `RecurrentNet(cell="lstm")`, but the
    four gates' kernels are stored already concatenated, (in, 4H) and (H, 4H),
    so the scan body does no per-step concatenation; with `hoist` the input
    projection x<t> @ W_x + b of all timesteps is one matmul before the scan
    and each step only adds a<t-1> @ W_a.
    """

    hidden: int = 64
    out_features: int = 10
    hoist: bool = False

    @nn.compact
    def __call__(self, x_BxTxF: jax.Array, *, train: bool = False) -> jax.Array:
        h, f = self.hidden, x_BxTxF.shape[-1]
        w_x = self.param("W_x", nn.initializers.glorot_uniform(), (f, 4 * h))
        w_a = self.param("W_a", nn.initializers.orthogonal(), (h, 4 * h))
        b = self.param("b", nn.initializers.zeros_init(), (4 * h,))
        xs_TxBxF = x_BxTxF.transpose(1, 0, 2)
        inputs = xs_TxBxF @ w_x + b if self.hoist else xs_TxBxF

        def step(carry, z_in):
            c_prev, a_prev = carry
            z = a_prev @ w_a + (z_in if self.hoist else z_in @ w_x + b)
            z_c, z_u, z_f, z_o = jnp.split(z, 4, axis=-1)
            c = jax.nn.sigmoid(z_u) * jnp.tanh(z_c) + jax.nn.sigmoid(z_f) * c_prev
            a = jax.nn.sigmoid(z_o) * jnp.tanh(c)
            return (c, a), None

        zeros = jnp.zeros((x_BxTxF.shape[0], h), x_BxTxF.dtype)
        (_, a_last), _ = jax.lax.scan(step, (zeros, zeros), inputs)
        return nn.Dense(self.out_features, name="head")(a_last)


def _diamonds_mlp() -> nn.Module:
    spec = SPECS["diamonds_mlp"]
    return MLP(widths=spec.hidden, out_features=spec.out_features)


def _variants() -> dict[str, tuple[Callable[[], nn.Module], int] | tuple[Callable[[], nn.Module], int, str]]:
    """name -> (model factory, batch size[, spec name: default mnist_cnn])."""
    return {
        "mlp": (_diamonds_mlp, 128, "diamonds_mlp"),
        "mlp_split2": (lambda: SplitBatch(_diamonds_mlp()), 128, "diamonds_mlp"),
        "mlp_b256": (_diamonds_mlp, 256, "diamonds_mlp"),
        "gru": (lambda: RecurrentNet(cell="gru", hidden=64, out_features=10), 128, "gru"),
        "lstm": (lambda: RecurrentNet(cell="lstm", hidden=64, out_features=10), 128, "lstm"),
        "lstm_fused": (lambda: ProtoLSTM(), 128, "lstm"),
        "lstm_hoisted": (lambda: ProtoLSTM(hoist=True), 128, "lstm"),
        **{
            f"lstm_unroll{u}": (
                functools.partial(RecurrentNet, cell="lstm", hidden=64, out_features=10, unroll=u),
                128,
                "lstm",
            )
            for u in (2, 4, 7)
        },
        "base": (lambda: ChapterCNN(), 64),
        "bf16": (lambda: ChapterCNN(dtype=jnp.bfloat16), 64),
        "xla_conv": (lambda: ProtoCNN(conv="xla", pool="window"), 64),
        "pool": (lambda: ProtoCNN(conv="xla", pool="reshape"), 64),
        "canonical": (lambda: ProtoCNN(conv="canonical", pool="reshape"), 64),
        "im2col": (lambda: ProtoCNN(conv="im2col", pool="reshape"), 64),
        "im2col_bf16": (lambda: ProtoCNN(conv="im2col", pool="reshape", dtype=jnp.bfloat16), 64),
        "nchw": (lambda: ProtoCNN(conv="nchw"), 64),
        "split2": (lambda: SplitBatch(ChapterCNN()), 64),
        "pool_split2": (lambda: SplitBatch(ProtoCNN(conv="xla", pool="reshape")), 64),
        "pool_split4": (lambda: SplitBatch(ProtoCNN(conv="xla", pool="reshape"), 4), 64),
        "pool_b128": (lambda: ProtoCNN(conv="xla", pool="reshape"), 128),
        "base_b128": (lambda: ChapterCNN(), 128),
        "base_b256": (lambda: ChapterCNN(), 256),
        "im2col_b256": (lambda: ProtoCNN(conv="im2col", pool="reshape"), 256),
    }


class Runner:
    """One variant's Trainer, state and device data, stepping one epoch per `block()`."""

    def __init__(
        self,
        model: nn.Module,
        batch: int,
        steps: int,
        n_steps: int = 1,
        options: str | None = None,
        spec_name: str = "mnist_cnn",
    ):
        """`options`: a key of `COMPILER_OPTIONS`, or None for the library's `Trainer` as it is."""
        spec = SPECS[spec_name]
        self.batch, self.steps, self.n_steps = batch, steps, n_steps
        self.cores: list[float] = []
        x, y = synthetic_data(spec, batch * steps)
        if options is None:
            self.trainer = Trainer(TASKS[spec.task], steps_per_call=n_steps)
        else:
            self.trainer = OptionsTrainer(
                TASKS[spec.task], steps_per_call=n_steps, compiler_options=COMPILER_OPTIONS[options]
            )
        optimizer = OptimizerConfig(spec.optimizer, spec.learning_rate, clip_global_norm=spec.clip_global_norm)
        self.state = create_train_state(model, make_optimizer(optimizer), x, jax.random.key(0))
        self.data = {"x": jnp.asarray(x), "y": jnp.asarray(y)}
        idx, w = batch_plan(np.arange(batch * steps), batch, n_steps)
        self.idx, self.w = jnp.asarray(idx), jnp.asarray(w)
        self.sums = self.trainer._zero_sums(self.state, self.data, batch)
        self.nonfinite, self.key = jnp.asarray(-1, jnp.int32), jax.random.key(1)
        self.program = self.trainer.train_program(n_steps)
        started = time.perf_counter()
        self.program.lower(self.state, self.sums, self.nonfinite, self.data, self.idx, self.w, 0, self.key).compile()
        self.compile_s = time.perf_counter() - started
        self.block()  # warm-up

    def block(self) -> float:
        """Milliseconds per step over one epoch of `steps` steps (`self.cores`: CPU time / wall time)."""
        started, cpu = time.perf_counter(), time.process_time()
        for start in range(0, self.idx.shape[0], self.n_steps):
            self.state, self.sums, self.nonfinite = self.program(
                self.state, self.sums, self.nonfinite, self.data, self.idx, self.w, start, self.key
            )
        jax.block_until_ready(self.state)
        wall = time.perf_counter() - started
        self.cores.append((time.process_time() - cpu) / wall)
        return wall / self.steps * 1e3


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="base,pool,im2col,bf16")
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=16, help="steps per timed block")
    parser.add_argument("--steps-per-call", type=int, default=1, help="steps per compiled call (lax.scan when > 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON line instead of a table")
    args = parser.parse_args(argv)
    table = _variants()
    runners = {}
    for name in args.variants.split(","):  # "variant" or "variant@options"
        variant, _, options = name.partition("@")
        factory, batch, *spec_name = table[variant]
        runners[name] = Runner(factory(), batch, args.steps, args.steps_per_call, options or None, *spec_name)
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.blocks):
        for name, runner in runners.items():
            times[name].append(runner.block())
    result = {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_avg": os.getloadavg()[0],
        "variants": {
            n: {
                "batch": r.batch,
                "compile_s": r.compile_s,
                "step_ms": statistics.median(times[n]),
                "us_per_sample": statistics.median(times[n]) * 1e3 / r.batch,
                "blocks_ms": times[n],
                "cores_used": statistics.median(r.cores[1:]),
            }
            for n, r in runners.items()
        },
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"XLA_FLAGS={result['xla_flags']!r} load {result['load_avg']:.2f}")
        for n, v in result["variants"].items():
            print(
                f"{n:14s} batch {v['batch']:4d} compile {v['compile_s']:6.2f} s  step {v['step_ms']:8.2f} "
                f"ms  {v['us_per_sample']:7.1f} us/sample  cores {v['cores_used']:.2f}  blocks "
                f"{[round(t, 1) for t in v['blocks_ms']]}"
            )
    return result


if __name__ == "__main__":
    main()
