"""Where the LSTM training step's time goes on XLA:CPU: its parts as separate programs, timed round-robin.

    python -m benchmarks.lstm_parts --rounds 11

The benchmark model's shapes (T=28 steps, batch 128, 28 features, 64 units). Programs, each jitted alone:

* ``fwd_dots``: the forward loop with only its two matmuls per step (168 MFLOP in all);
* ``fwd_nosave``: the whole forward loop (gates, tanh/sigmoid), nothing saved for the backward pass;
* ``fwd_saved``: `recurrent_ops._forward` as the training step runs it (the residuals stacked per step);
* ``bwd_loop``: the op's backward loop alone; ``post``: the three matmuls over all T*B rows after it as
  plain transposed-operand dots, ``post_barrier`` as the op computes them (transposes materialised first);
* ``grad``: the op's forward and backward together (weights' gradients);
* ``one_batch`` / ``two_halves``: the forward loop at batch 128, and two independent loops of 64 rows
  in one program (equal time means XLA:CPU ran them one after the other, not on two cores);
* ``grad@<precision>``: ``grad`` under `jax.default_matmul_precision` (bfloat16, float32, highest).

Printed: wall and process-CPU ms per call, median [min] over rounds; load average at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from dlchapter.models import recurrent_ops as ro

T, B, F, H = 28, 128, 28, 64


def _cell_loop(w_a: jax.Array, w_x: jax.Array, b: jax.Array, x: jax.Array, dots_only: bool = False) -> jax.Array:
    def step(carry, x_t):
        c_prev, a_prev = carry
        z = x_t @ w_x + a_prev @ w_a + b
        if dots_only:
            return (z[:, :H], z[:, H : 2 * H]), ()
        c_tilde, g_u, g_f, g_o = ro._gates(z)
        c = g_u * c_tilde + g_f * c_prev
        return (c, g_o * jnp.tanh(c)), ()

    zeros = jnp.zeros((x.shape[1], H), x.dtype)
    return jax.lax.scan(step, (zeros, zeros), x)[0]


def programs() -> dict[str, tuple[Callable, tuple]]:
    rng = np.random.default_rng(0)

    def f32(*s):
        return jnp.asarray(rng.normal(size=s) * 0.1, jnp.float32)

    w_a, w_x, b, x, dys = f32(H, 4 * H), f32(F, 4 * H), f32(4 * H), f32(T, B, F), f32(T, B, H)
    c0 = jnp.zeros((B, H))
    _, ys, saved = jax.jit(ro._forward, static_argnums=7)(w_a, w_x, b, x, c0, c0, None, 1)

    def bwd_loop(w_a, saved, dys):
        res = ro._bwd(1, (w_a, w_x, x, c0, None, ys, saved), ((c0, c0), dys))
        return res[4], res[5]  # the carries' gradients only: `post`'s matmuls are dead code here

    def post(a_prev, x_n, dz):  # dots contracting both operands' major axis (the op before this session)
        return a_prev.T @ dz, x_n.T @ dz, dz.sum(0)

    def post_barrier(a_prev, x_n, dz):  # the transposes materialised first, as `recurrent_ops._bwd` does now
        a_t, x_t = jax.lax.optimization_barrier((a_prev.T, x_n.T))
        return a_t @ dz, x_t @ dz, dz.sum(0)

    def grad(w_a, w_x, b, x):
        def loss(*p):
            return jnp.sum(ro.lstm_sequence(*p, x, c0, c0)[1] * dys)

        return jax.grad(loss, argnums=(0, 1, 2))(w_a, w_x, b)

    def two_halves(w_a, w_x, b, x):
        return _cell_loop(w_a, w_x, b, x[:, : B // 2]), _cell_loop(w_a, w_x, b, x[:, B // 2 :])

    n = T * B
    progs = {
        "fwd_dots": (jax.jit(lambda *a: _cell_loop(*a, dots_only=True)), (w_a, w_x, b, x)),
        "fwd_nosave": (jax.jit(_cell_loop), (w_a, w_x, b, x)),
        "fwd_saved": (jax.jit(lambda *a: ro._forward(*a, c0, c0, None, 1)), (w_a, w_x, b, x)),
        "bwd_loop": (jax.jit(bwd_loop), (w_a, saved, dys)),
        "post": (jax.jit(post), (f32(n, H), f32(n, F), f32(n, 4 * H))),
        "post_barrier": (jax.jit(post_barrier), (f32(n, H), f32(n, F), f32(n, 4 * H))),
        "grad": (jax.jit(grad), (w_a, w_x, b, x)),
        "one_batch": (jax.jit(_cell_loop), (w_a, w_x, b, x)),
        "two_halves": (jax.jit(two_halves), (w_a, w_x, b, x)),
    }
    for precision in ("bfloat16", "float32", "highest"):
        with jax.default_matmul_precision(precision):
            progs[f"grad@{precision}"] = (jax.jit(grad).lower(w_a, w_x, b, x).compile(), (w_a, w_x, b, x))
    return progs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--calls", type=int, default=20, help="calls per program per round")
    args = parser.parse_args(argv)
    progs = programs()
    for fn, a in progs.values():
        jax.block_until_ready(fn(*a))
    wall: dict[str, list[float]] = {k: [] for k in progs}
    cpu: dict[str, list[float]] = {k: [] for k in progs}
    names = list(progs)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, a = progs[name]
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.calls):
                out = fn(*a)
            jax.block_until_ready(out)
            wall[name].append((time.perf_counter() - t0) / args.calls * 1e3)
            cpu[name].append((time.process_time() - c0) / args.calls * 1e3)
    print(f"load {os.getloadavg()[0]:.2f}; ms per call, median [min] over {args.rounds} rounds")
    for name in names:
        w, c = wall[name], cpu[name]
        print(
            f"{name:16s} wall {statistics.median(w):6.3f} [{min(w):.3f}]  "
            f"cpu {statistics.median(c):6.3f} [{min(c):.3f}]"
        )


if __name__ == "__main__":
    main()
