"""The same models in Keras 3 (TensorFlow or JAX backend) and PyTorch, timed the way their users train.

    python -m benchmarks.peers --framework keras_tf --model diamonds_mlp [--blocks 5]

Prints one JSON line. Each framework is imported lazily, inside this process
only (Keras reads KERAS_BACKEND once, at import, so `throughput.py` runs one
process per framework and model); a framework that is not installed gives
{"skipped": "<reason>"}. Install them with the optional extra `[peers]`
(keras, tensorflow-cpu, a CPU build of torch), best in a separate venv.

What is timed, per block (one epoch of the spec's rows, in a seeded order
shared with our benchmark): Keras `model.fit(..., epochs=1, shuffle=True)`,
the chapter's own call; PyTorch an eager loop (index a batch, forward, loss,
backward, optional clipping, optimizer step, running loss/metric sums).
The step time is the median over blocks of block time / steps. Shapes,
layers, losses, metrics, optimizers (Keras defaults: adam 1e-3, rmsprop 1e-3
with rho 0.9, epsilon 1e-7) and batch sizes are those of `benchmarks.specs`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.specs import EVAL_BATCH, SPECS, ModelSpec, epoch_orders, smoke, synthetic_data

FRAMEWORKS = ("keras_tf", "keras_jax", "torch")
KERAS_BACKENDS = {"keras_tf": "tensorflow", "keras_jax": "jax"}
KERAS_LOSSES = {
    "regression": "mse",
    "binary": "binary_crossentropy",
    "sparse_multiclass": "sparse_categorical_crossentropy",
}
HEADS = {"regression": None, "binary": "sigmoid", "sparse_multiclass": "softmax"}


def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_blocks(run_block: Callable[[Any], None], orders: list, warmup: int) -> tuple[float, list[float]]:
    """Seconds of the first (cold) block, then seconds of each later block after `warmup` more."""
    started = time.perf_counter()
    run_block(orders[0])
    first = time.perf_counter() - started
    times = []
    for i, order in enumerate(orders[1:]):
        started = time.perf_counter()
        run_block(order)
        if i >= warmup:
            times.append(time.perf_counter() - started)
    return first, times


def _summary(spec: ModelSpec, first_s: float, block_s: list[float], eval_s: list[float], n_eval: int) -> dict[str, Any]:
    steps = spec.steps_per_epoch
    step_ms = statistics.median(block_s) / steps * 1e3
    return {
        "step_ms": step_ms,
        "step_ms_blocks": [t / steps * 1e3 for t in block_s],
        "samples_per_s": spec.batch_size / step_ms * 1e3,
        "first_epoch_s": first_s,
        "compile_s": max(first_s - statistics.median(block_s), 0.0),  # first epoch's excess over a warm one
        "eval_samples_per_s": n_eval / statistics.median(eval_s),
        "peak_rss_mib": peak_rss_mib(),
    }


# ---------------------------------------------------------------- Keras 3
def keras_model(keras: Any, spec: ModelSpec) -> Any:
    """The chapter's Keras model for `spec` (activation on the last layer, as the chapter writes it)."""
    layers = keras.layers
    stack: list = [keras.Input(spec.input_shape)]
    if spec.kind == "mlp":
        for i, width in enumerate(spec.hidden):
            stack.append(layers.Dense(width, activation="relu"))
            if i < len(spec.dropout) and spec.dropout[i]:
                stack.append(layers.Dropout(spec.dropout[i]))
    elif spec.kind == "cnn":
        stack += [
            layers.Conv2D(32, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(128, 3, activation="relu"),
            layers.Flatten(),
        ]
    elif spec.kind == "gru":
        stack.append(layers.GRU(spec.hidden[0], reset_after=False))  # the chapter's cell: reset gate before the matmul
    elif spec.kind == "lstm":
        stack.append(layers.LSTM(spec.hidden[0]))
    stack.append(layers.Dense(spec.out_features, activation=HEADS[spec.task]))
    return keras.Sequential(stack)


def keras_optimizer(keras: Any, spec: ModelSpec) -> Any:
    lr = spec.learning_rate or 1e-3
    if spec.optimizer == "rmsprop":
        return keras.optimizers.RMSprop(lr, global_clipnorm=spec.clip_global_norm)
    return keras.optimizers.Adam(lr, global_clipnorm=spec.clip_global_norm)


def keras_epoch(framework: str, spec: ModelSpec) -> tuple[Callable[[Any], None], Any, Any]:
    """(one epoch of `model.fit` as a function of the order, the compiled model, keras) for `spec`."""
    os.environ["KERAS_BACKEND"] = KERAS_BACKENDS[framework]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415 - lazy: optional, and the backend is read at import

    keras.utils.set_random_seed(0)
    model = keras_model(keras, spec)
    metrics = ["mae", keras.metrics.RootMeanSquaredError()] if spec.task == "regression" else ["accuracy"]
    model.compile(optimizer=keras_optimizer(keras, spec), loss=KERAS_LOSSES[spec.task], metrics=metrics)
    x, y = synthetic_data(spec)

    def block(order: Any) -> None:  # Keras draws its own order (shuffle=True), as the chapter's fit does
        del order
        model.fit(x, y, batch_size=spec.batch_size, epochs=1, shuffle=True, verbose=0)

    return block, model, keras


def run_keras(framework: str, spec: ModelSpec, blocks: int, warmup: int) -> dict[str, Any]:
    block, model, keras = keras_epoch(framework, spec)
    x, y = synthetic_data(spec)
    first, times = _timed_blocks(block, epoch_orders(spec.n_rows, blocks + warmup + 1), warmup)
    eval_s = []
    for _ in range(3):
        started = time.perf_counter()
        model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0)
        eval_s.append(time.perf_counter() - started)
    result = _summary(spec, first, times, eval_s[1:], len(y))
    versions = {
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "jit_compile": str(getattr(model, "jit_compile", "?")),
    }
    if framework == "keras_tf":
        import tensorflow as tf  # noqa: PLC0415

        versions["tensorflow"] = tf.__version__
    else:
        import jax  # noqa: PLC0415

        versions["jax"] = jax.__version__
    result.update(versions=versions, params=int(model.count_params()))
    return result


# ---------------------------------------------------------------- PyTorch
def torch_model(torch: Any, spec: ModelSpec) -> Any:
    """The same network in PyTorch (logits out; NCHW images; nn.GRU is the reset-after cell)."""
    nn = torch.nn
    if spec.kind == "mlp":
        layers, width_in = [], spec.input_shape[0]
        for i, width in enumerate(spec.hidden):
            layers += [nn.Linear(width_in, width), nn.ReLU()]
            if i < len(spec.dropout) and spec.dropout[i]:
                layers.append(nn.Dropout(spec.dropout[i]))
            width_in = width
        return nn.Sequential(*layers, nn.Linear(width_in, spec.out_features))
    if spec.kind == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3 * 3 * 128, spec.out_features),
        )
    rnn_class = nn.GRU if spec.kind == "gru" else nn.LSTM

    class Recurrent(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnn_class(spec.input_shape[1], spec.hidden[0], batch_first=True)
            self.head = nn.Linear(spec.hidden[0], spec.out_features)

        def forward(self, x: Any) -> Any:
            return self.head(self.rnn(x)[0][:, -1])

    return Recurrent()


def torch_epoch(spec: ModelSpec) -> tuple[Callable[[Any], None], Any, dict[str, Any]]:
    """(one eager training epoch as a function of the order, the model, what evaluation needs) for `spec`."""
    import torch  # noqa: PLC0415 - lazy: optional

    torch.manual_seed(0)
    model = torch_model(torch, spec)
    lr = spec.learning_rate or 1e-3
    if spec.optimizer == "rmsprop":
        opt = torch.optim.RMSprop(model.parameters(), lr=lr, alpha=0.9, eps=1e-7)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    losses = {
        "regression": torch.nn.MSELoss(),
        "binary": torch.nn.BCEWithLogitsLoss(),
        "sparse_multiclass": torch.nn.CrossEntropyLoss(),
    }
    loss_fn = losses[spec.task]
    x_np, y_np = synthetic_data(spec)
    x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy() if spec.kind == "cnn" else x_np)
    y = torch.from_numpy(y_np).long() if spec.task == "sparse_multiclass" else torch.from_numpy(y_np)
    b = spec.batch_size

    def metric(out: Any, yb: Any) -> Any:
        if spec.task == "regression":
            return (out[:, 0] - yb).abs().sum()
        if spec.task == "binary":
            return ((out[:, 0] > 0).float() == yb).float().sum()
        return (out.argmax(-1) == yb).float().sum()

    def target(yb: Any) -> Any:
        return yb if spec.task == "sparse_multiclass" else yb[:, None]

    def block(order: Any) -> None:
        model.train()
        order_t = torch.from_numpy(order)
        loss_sum, metric_sum = torch.zeros(()), torch.zeros(())
        for start in range(0, len(order), b):
            rows = order_t[start : start + b]
            xb, yb = x[rows], y[rows]
            opt.zero_grad(set_to_none=True)
            out = model(xb)
            loss = loss_fn(out, target(yb))
            loss.backward()
            if spec.clip_global_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_global_norm)
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(rows)
                metric_sum += metric(out, yb)
        float(loss_sum), float(metric_sum)

    return block, model, {"torch": torch, "x": x, "y": y, "loss_fn": loss_fn, "metric": metric, "target": target}


def run_torch(spec: ModelSpec, blocks: int, warmup: int) -> dict[str, Any]:
    block, model, parts = torch_epoch(spec)
    torch, x, y, loss_fn, metric, target = (parts[k] for k in ("torch", "x", "y", "loss_fn", "metric", "target"))
    first, times = _timed_blocks(block, epoch_orders(spec.n_rows, blocks + warmup + 1), warmup)
    eval_s = []
    model.eval()
    for _ in range(3):
        started = time.perf_counter()
        with torch.inference_mode():
            total = torch.zeros(())
            for start in range(0, len(y), EVAL_BATCH):
                out = model(x[start : start + EVAL_BATCH])
                total += loss_fn(out, target(y[start : start + EVAL_BATCH])) + metric(
                    out, y[start : start + EVAL_BATCH]
                )
            float(total)
        eval_s.append(time.perf_counter() - started)
    result = _summary(spec, first, times, eval_s[1:], len(y))
    result.update(
        versions={"torch": torch.__version__, "threads": torch.get_num_threads()},
        params=sum(p.numel() for p in model.parameters()),
    )
    return result


def run(framework: str, spec: ModelSpec, blocks: int = 5, warmup: int = 1) -> dict[str, Any]:
    """Time `spec` in `framework`; {"skipped": reason} when the framework is not installed."""
    try:
        if framework == "torch":
            return run_torch(spec, blocks, warmup)
        return run_keras(framework, spec, blocks, warmup)
    except ImportError as err:
        return {"skipped": f"{framework} not installed ({err}); install the [peers] extra"}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--framework", choices=FRAMEWORKS, required=True)
    parser.add_argument("--model", choices=sorted(SPECS), required=True)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    spec = smoke(SPECS[args.model]) if args.smoke else SPECS[args.model]
    result = run(args.framework, spec, args.blocks, args.warmup)
    sys.stdout.flush()
    print(json.dumps({"framework": args.framework, "model": args.model, **result}))


if __name__ == "__main__":
    main()
