"""Variants of the chapter CNN's library train program, paired in one process (the Nov 30 b measurements).

    python -m benchmarks.cnn_variants canonprev,lib 11          # variant names, rounds (one step per call)
    SPC=epoch python -m benchmarks.cnn_variants lib,lib+region 9

Variants (a suffix sets the compiler options, else the model's own, as `throughput.build` picks them:
"+region" Eigen with region analysis, "+ynn" XLA's defaults, "+st" single-threaded Eigen, "+eigen" the
Trainer's default (the CNN's), "+fmm" that plus fast min/max, "+ynndot" that with YNNPACK for dots only,
"+ynnconv" / "+ynnred" / "+ynndotred" / "+ynnelt" / "+ynnfdot" other YNNPACK fusion kinds,
"+conc" the concurrency-optimized scheduler): lib (the library), nophase (the
library with im2col rows in plain (b, h, w) order), relufirst (the library with the relu before each
pool), noeven (the library without `Conv2D.even_block`). The others are
the code before session 3 (`nn.Conv` with its own bias add, relu before pool, plain im2col rows) with
these convolutions:
nnconv (the library before session 3), canonprev (every convolution through conv_canonical with dX as
the 'full' convolution: the library before Nov 30 b), prev (im2col where the library picks it, full-conv
dX), canon (no im2col, dX by taps), all (im2col everywhere), mm0 / mm2 / mm02 (im2col for the first /
last / both convolutions by shape). Prints wall and process CPU ms per step,
median [min-max], and the per-round ratio first/this.
"""

import os
import statistics
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from benchmarks.specs import SPECS, epoch_orders
from benchmarks.throughput import build, trainer_epoch
from dlchapter.engine import trainer_programs
from dlchapter.models import conv as conv_mod
from dlchapter.models import conv_ops

spec = SPECS["mnist_cnn"]
SPC = None if os.environ.get("SPC", "1") == "epoch" else int(os.environ.get("SPC", "1"))


def im2col_conv(x, w):
    kh, kw, c, f = w.shape
    H, W = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    patches = jnp.concatenate([x[:, i : i + H, j : j + W, :] for i in range(kh) for j in range(kw)], axis=-1)
    return jax.lax.dot_general(patches, w.reshape(kh * kw * c, f), (((3,), (0,)), ((), ())))


def make_conv_fn(which):
    def fn(
        lhs,
        rhs,
        window_strides,
        padding,
        lhs_dilation=None,
        rhs_dilation=None,
        dimension_numbers=None,
        feature_group_count=1,
        precision=None,
        **kw,
    ):
        if which(lhs.shape, rhs.shape):
            return im2col_conv(lhs, rhs)
        return conv_ops.canonical_conv_general_dilated(
            lhs,
            rhs,
            window_strides,
            padding,
            lhs_dilation,
            rhs_dilation,
            dimension_numbers,
            feature_group_count,
            precision,
            **kw,
        )

    return fn


class ReluFirstCNN(conv_mod.ChapterCNN):
    """The chapter CNN with the relu before each max-pool (the library before session 3)."""

    @nn.compact
    def __call__(self, x, *, train=False):
        x = conv_mod._as_nhwc(x)
        for i, width in enumerate(self.features):
            x = nn.relu(conv_mod.Conv2D(width, conv_mod.KERNEL_SIZE, name=f"conv_{i}")(x))
            if i < len(self.features) - 1:
                x = conv_mod._max_pool(x)
        return nn.Dense(self.num_classes, kernel_init=conv_mod.KERNEL_INIT, name="dense")(x.reshape(x.shape[0], -1))


def nn_conv(conv_fn):
    """`conv.Conv2D`'s stand-in for the variants before session 3: `nn.Conv` (its own bias add) with `conv_fn`."""

    def factory(features, kernel_size, dtype=None, param_dtype=jnp.float32, name=None):
        return nn.Conv(
            features,
            kernel_size,
            padding="VALID",
            kernel_init=conv_mod.KERNEL_INIT,
            dtype=dtype,
            param_dtype=param_dtype,
            conv_general_dilated=conv_fn,
            name=name,
        )

    return factory


RULES = {
    "noeven": None,
    "nophase": None,
    "relufirst": None,
    "nnconv": None,
    "base": None,
    "canon": None,
    "lib": None,
    "all": None,
    "prev": None,
    "canonprev": None,
    "mm0": lambda xs, ws: ws[2] == 1,
    "mm2": lambda xs, ws: xs[1] == 5,
    "mm02": lambda xs, ws: ws[2] == 1 or xs[1] == 5,
    "mmall": lambda xs, ws: True,
}


def make(rule, opts=None):
    saved_max = conv_ops.IM2COL_MAX_PATCH_BYTES
    conv_ops.IM2COL_MAX_PATCH_BYTES = {"canon": 0, "canonprev": 0, "all": 2**40}.get(rule, saved_max)
    saved_taps = conv_ops._dx_by_taps
    if rule in ("prev", "canonprev"):

        def full(g, w, x_shape):
            return conv_ops._dx_full_conv(g, w, x_shape)

        conv_ops._dx_by_taps = full
    saved_conv2d = conv_mod.Conv2D
    saved_pm = conv_ops.IM2COL_PHASE_ROWS
    saved_even, conv_mod.EVEN_BLOCKS = conv_mod.EVEN_BLOCKS, rule in ("lib", "nophase")
    session3 = rule in ("lib", "nophase", "relufirst", "noeven")
    conv_ops.IM2COL_PHASE_ROWS = rule not in ("nophase",) and session3
    saved_cnn = conv_mod.ChapterCNN
    if rule == "relufirst" or not session3:
        conv_mod.ChapterCNN = ReluFirstCNN
    if not session3:
        fn = conv_ops.canonical_conv_general_dilated if RULES[rule] is None else make_conv_fn(RULES[rule])
        conv_mod.Conv2D = nn_conv(fn)
    trainer, state, _ = build(spec, SPC, "model" if opts is None else opts)  # None: the CNN's own options
    epoch = trainer_epoch(trainer, state, spec, SPC, first_call=True)  # compiled while the patches are in place
    conv_mod.Conv2D = saved_conv2d
    conv_ops.IM2COL_PHASE_ROWS = saved_pm
    conv_mod.EVEN_BLOCKS = saved_even
    conv_mod.ChapterCNN = saved_cnn
    conv_ops.IM2COL_MAX_PATCH_BYTES = saved_max
    conv_ops._dx_by_taps = saved_taps
    return epoch


T = "LIBRARY_FUSION_TYPE_"
YNN_TYPES = {  # XLA:CPU's YNNPACK fusion kinds (jaxlib 0.10.2), with the library's other options
    "ynnconv": f"{T}INDIVIDUAL_DOT,{T}INDIVIDUAL_CONVOLUTION",
    "ynnred": f"{T}REDUCE",
    "ynndotred": f"{T}INDIVIDUAL_DOT,{T}REDUCE",
    "ynnelt": f"{T}ELTWISE",
    "ynnfdot": f"{T}DOT",
}

if __name__ != "__main__":
    raise ImportError("benchmarks.cnn_variants is a script: python -m benchmarks.cnn_variants NAMES [ROUNDS]")
names = sys.argv[1].split(",")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 7
epochs = {}
for n in names:
    rule, _, opt = n.partition("+")
    OPTS = {
        "": None,
        "ynn": {},
        "eigen": trainer_programs.CPU_COMPILER_OPTIONS,  # the Trainer's default, which the CNN uses
        "st": {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_multi_thread_eigen": False},
        "region": {"xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_copy_insertion_use_region_analysis": True},
        "ynndot": {
            **trainer_programs.CPU_COMPILER_OPTIONS,
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
        },
        "fmm": {**trainer_programs.CPU_COMPILER_OPTIONS, "xla_cpu_enable_fast_min_max": True},
        **{
            name: {**trainer_programs.CPU_COMPILER_OPTIONS, "xla_cpu_experimental_ynn_fusion_type": types}
            for name, types in YNN_TYPES.items()
        },
        "conc": {**trainer_programs.CPU_COMPILER_OPTIONS, "xla_cpu_enable_concurrency_optimized_scheduler": True},
        "ynndotconc": {
            **trainer_programs.CPU_COMPILER_OPTIONS,
            "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
            "xla_cpu_enable_concurrency_optimized_scheduler": True,
        },
    }
    epochs[n] = make(rule, OPTS[opt])
orders = epoch_orders(spec.n_rows, rounds + 1)
for f in epochs.values():
    f(orders[0])
ms = {n: [] for n in names}
cpu = {n: [] for n in names}
for r, o in enumerate(orders[1:]):
    for n in names[r % len(names) :] + names[: r % len(names)]:
        t, c = time.perf_counter(), time.process_time()
        epochs[n](o)
        ms[n].append((time.perf_counter() - t) / spec.steps_per_epoch * 1e3)
        cpu[n].append((time.process_time() - c) / spec.steps_per_epoch * 1e3)
print(f"load {os.getloadavg()[0]:.2f} spc {SPC}")
for n in names:
    rat = [a / b for a, b in zip(ms[names[0]], ms[n])]
    print(
        f"{n:14s} wall {statistics.median(ms[n]):.3f} [{min(ms[n]):.3f}-{max(ms[n]):.3f}] "
        f"cpu {statistics.median(cpu[n]):.3f}  "
        f"ratio first/this {statistics.median(rat):.3f} [{min(rat):.3f}-{max(rat):.3f}]"
    )
