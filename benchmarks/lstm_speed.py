"""LSTM sequence-op variants, one bare training step each, timed round-robin in one process.

    python -m benchmarks.lstm_speed --variants op,split2 --rounds 9

Each variant is a function with `recurrent_ops.lstm_sequence`'s signature (the layouts of
`benchmarks.lstm_layouts` included). The step is the
benchmark spec's model (28 steps of 28 features, LSTM(64), Dense 10 head, sparse CE, batch 128)
as a bare `jax.jit` of value_and_grad plus an SGD update (no Trainer: this isolates the op);
compiled with the options `RecurrentNet.cpu_compiler_options()` asks for, except ``prev`` (the op and
options before Nov 30's third session, `benchmarks.lstm_variants.previous_recurrent`). Per round
every variant runs `--steps` steps back to back (order rotating); printed: wall ms and process
CPU ms per step, median [min-max] over rounds, and each variant's per-round ratio to the first.
`benchmarks.paired` measures the winner inside the library's Trainer against PyTorch.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import lstm_layouts, lstm_variants
from dlchapter.models import recurrent_ops
from dlchapter.models.recurrent import RECURRENT_CPU_COMPILER_OPTIONS

T, B, F, H, C = 28, 128, 28, 64, 10


def _split(n: int) -> Callable:
    """The batch cut into n independent row blocks, each its own sequence op (independent loops)."""

    def fn(w_a, w_x, b, x, c0, a0, mask=None, unroll=1):
        outs = [
            recurrent_ops.lstm_sequence(w_a, w_x, b, xs, cs, as_, None, unroll)
            for xs, cs, as_ in zip(jnp.split(x, n, axis=1), jnp.split(c0, n), jnp.split(a0, n))
        ]
        c = jnp.concatenate([o[0][0] for o in outs])
        a = jnp.concatenate([o[0][1] for o in outs])
        return (c, a), jnp.concatenate([o[1] for o in outs], axis=1)

    return fn


VARIANTS: dict[str, Callable] = {
    "op": recurrent_ops.lstm_sequence,
    "autodiff": recurrent_ops.lstm_sequence_autodiff,
    "split2": _split(2),
    "split4": _split(4),
    "prev": lstm_variants.previous_op,
}
for _name in ("lstm_sequence_cat", "lstm_sequence_split", "lstm_sequence_hoist"):
    if hasattr(recurrent_ops, _name):
        VARIANTS[_name.removeprefix("lstm_sequence_")] = getattr(recurrent_ops, _name)
VARIANTS.update(lstm_layouts.VARIANTS)


def make_step(fn: Callable, unroll: int = 1, compiler_options: dict | None = None) -> Callable:
    def loss(p, x_BxTxF, y_B):
        (_, a), _ = fn(
            p["w_a"], p["w_x"], p["b"], jnp.swapaxes(x_BxTxF, 0, 1), jnp.zeros((B, H)), jnp.zeros((B, H)), None, unroll
        )
        logits = a @ p["head_w"] + p["head_b"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), y_B[:, None], axis=1))

    def step(p, x, y):
        value, g = jax.value_and_grad(loss)(p, x, y)
        return jax.tree.map(lambda a, b: a - 1e-3 * b, p, g), value

    options = RECURRENT_CPU_COMPILER_OPTIONS if compiler_options is None else compiler_options
    return jax.jit(step, donate_argnums=0, compiler_options=options if jax.default_backend() == "cpu" else None)


def init(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)

    def s(*shape):
        return jnp.asarray(rng.normal(size=shape) * 0.1, jnp.float32)

    return {"w_a": s(H, 4 * H), "w_x": s(F, 4 * H), "b": s(4 * H), "head_w": s(H, C), "head_b": s(C)}


def trainer_round(fn: Callable) -> tuple[Callable[[], None], int]:
    """One epoch (24 steps) of the library's Trainer program with `LSTMCell.sequence_fn` replaced by `fn`."""
    from benchmarks.paired import ours_epoch
    from benchmarks.specs import SPECS, ModelSpec, epoch_orders
    from dlchapter.models import recurrent

    kind = f"lstm-{id(fn)}"
    recurrent.CELLS[kind] = type("BenchLSTMCell", (recurrent.LSTMCell,), {"sequence_fn": staticmethod(fn)})
    spec = ModelSpec(**{**vars(SPECS["lstm"]), "kind": kind})
    epoch = ours_epoch(spec, None)
    order = epoch_orders(spec.n_rows, 1)[0]
    return (lambda: epoch(order)), spec.steps_per_epoch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="op,split2")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--unroll", type=int, default=1)
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(B, T, F)), jnp.float32)
    y = jnp.asarray(rng.integers(0, C, size=B), jnp.int32)
    rounds: dict[str, tuple[Callable[[], None], int]] = {}
    for name in names:
        prev = name.split("@")[0].removeprefix("trainer:") == "prev"
        if name.startswith("trainer:"):  # the library's whole training program, this op inside
            with lstm_variants.previous_recurrent() if prev else contextlib.nullcontext():
                rounds[name] = trainer_round(VARIANTS[name.removeprefix("trainer:")])
                rounds[name][0]()
            continue
        fn = VARIANTS[name.split("@")[0]]
        unroll = int(name.split("@")[1]) if "@" in name else args.unroll
        step, state = make_step(fn, unroll, {} if prev else None), [init()]
        t0 = time.perf_counter()
        state[0], v = step(state[0], x, y)
        jax.block_until_ready(v)
        print(f"{name}: first call {time.perf_counter() - t0:.2f} s, loss {float(v):.6f}")

        def run(step: Callable = step, state: list = state) -> None:
            for _ in range(args.steps):
                state[0], v = step(state[0], x, y)
            jax.block_until_ready(v)

        rounds[name] = (run, args.steps)
    wall = {n: [] for n in names}
    cpu = {n: [] for n in names}
    for r in range(args.rounds + 1):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run, n = rounds[name]
            t0, c0 = time.perf_counter(), time.process_time()
            run()
            if r:  # round 0 is a warm-up
                wall[name].append((time.perf_counter() - t0) / n * 1e3)
                cpu[name].append((time.process_time() - c0) / n * 1e3)
    print(f"load {os.getloadavg()[0]:.2f}; ms per step, median [min-max] over {args.rounds} rounds")
    for name in names:
        w, c = wall[name], cpu[name]
        ratio = [a / b for a, b in zip(wall[names[0]], w)]
        print(
            f"{name:16s} wall {statistics.median(w):6.3f} [{min(w):.3f}-{max(w):.3f}]  "
            f"cpu {statistics.median(c):6.3f} [{min(c):.3f}]  ratio first/this {statistics.median(ratio):.3f} "
            f"[{min(ratio):.3f}-{max(ratio):.3f}]"
        )


if __name__ == "__main__":
    main()
