"""The benchmarked models as plain data, shared by our worker and every peer's worker.

Each `ModelSpec` fixes what a fair comparison needs: input shape, layers,
task (loss), optimizer with Keras's defaults, batch size and the number of
rows in one benchmark "epoch". Nothing here imports JAX, Keras or PyTorch, so
any framework's process can read it. The data are synthetic (seeded): step
time does not depend on the values, and every framework sees the same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class ModelSpec:
    """One chapter model: `kind` is "mlp", "cnn", "gru" or "lstm"."""

    name: str
    kind: str
    input_shape: tuple[int, ...]  # one example, no batch axis
    task: str  # regression | binary | sparse_multiclass
    batch_size: int
    n_rows: int  # rows of one benchmark epoch (the "epoch" loop variant scans all of them)
    optimizer: str = "adam"
    learning_rate: float | None = None  # None: Keras's default (adam 1e-3, rmsprop 1e-3)
    clip_global_norm: float | None = None
    hidden: tuple[int, ...] = ()  # MLP widths, or (units,) of a recurrent layer
    dropout: tuple[float, ...] = ()  # MLP: a rate after each hidden layer
    out_features: int = 1
    chapter: str = ""  # where the chapter uses it

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.n_rows // self.batch_size)


SPECS: dict[str, ModelSpec] = {
    "diamonds_mlp": ModelSpec(
        "diamonds_mlp",
        "mlp",
        (26,),
        "regression",
        128,
        34_522,
        hidden=(200, 200, 200, 200),
        chapter="first net: 26 one-hot inputs, 4 x 200 relu, MSE, adam, batch 128 (34,522 training rows)",
    ),
    "california_mlp": ModelSpec(
        "california_mlp",
        "mlp",
        (8,),
        "regression",
        128,
        13_950,
        hidden=(100, 200),
        dropout=(0.2, 0.0),
        chapter="regression: 8 inputs, 100 relu, dropout 0.2, 200 relu, MSE, adam, batch 128",
    ),
    "pima_mlp": ModelSpec(
        "pima_mlp",
        "mlp",
        (8,),
        "binary",
        32,
        491,
        hidden=(100, 8),
        chapter="binary: 8 inputs, 100 relu, 8 relu, sigmoid, binary CE, adam, batch 32 (491 rows)",
    ),
    "mnist_cnn": ModelSpec(
        "mnist_cnn",
        "cnn",
        (28, 28, 1),
        "sparse_multiclass",
        64,
        64 * 24,
        optimizer="rmsprop",
        out_features=10,
        chapter=(
            "CNN: conv32-pool-conv64-pool-conv128-dense10, rmsprop, sparse CE, batch 64 (24 steps per benchmark epoch)"
        ),
    ),
    "gru": ModelSpec(
        "gru",
        "gru",
        (28, 28),
        "sparse_multiclass",
        128,
        128 * 24,
        learning_rate=2e-3,
        clip_global_norm=1.0,
        hidden=(64,),
        out_features=10,
        chapter=(
            "RNN: 28x28 images as 28 steps of 28 features, GRU(64) (reset gate before the matmul), "
            "dense 10, adam, batch 128"
        ),
    ),
    "lstm": ModelSpec(
        "lstm",
        "lstm",
        (28, 28),
        "sparse_multiclass",
        128,
        128 * 24,
        learning_rate=2e-3,
        clip_global_norm=1.0,
        hidden=(64,),
        out_features=10,
        chapter="RNN: 28x28 images as 28 steps of 28 features, LSTM(64), dense 10, adam, batch 128",
    ),
}

SMOKE_ROWS = {"diamonds_mlp": 512, "california_mlp": 512, "pima_mlp": 128, "mnist_cnn": 128, "gru": 256, "lstm": 256}
EVAL_BATCH = 1024


def smoke(spec: ModelSpec) -> ModelSpec:
    """The same model on a few batches only (for the test suite)."""
    return replace(spec, n_rows=SMOKE_ROWS.get(spec.name, 2 * spec.batch_size))


def synthetic_data(spec: ModelSpec, n_rows: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded (x, y) with the spec's shapes: float32 inputs; float32 targets or int32 labels."""
    n = spec.n_rows if n_rows is None else n_rows
    rng = np.random.default_rng(seed)
    x = rng.random((n, *spec.input_shape), dtype=np.float32)
    if spec.task == "regression":
        y = rng.normal(size=n).astype(np.float32)
    elif spec.task == "binary":
        y = rng.integers(0, 2, n).astype(np.float32)
    else:
        y = rng.integers(0, spec.out_features, n).astype(np.int32)
    return x, y


def epoch_orders(n_rows: int, n_epochs: int, seed: int = 0) -> list[np.ndarray]:
    """One seeded permutation per timed block, the same for every framework."""
    rng = np.random.default_rng([seed, 1])
    return [rng.permutation(n_rows) for _ in range(n_epochs)]
