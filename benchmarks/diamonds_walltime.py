"""Whole-experiment wall time of the chapter's first network (diamonds): ours against the chapter's Keras code.

    python -m benchmarks.diamonds_walltime [--peers-python /work/peers-venv/bin/python] [--repeats 2]

Each contender runs in a fresh process, as a user would run it: read
diamonds.csv, one-hot encode, split 80/20, build the 4 x 200 MLP, fit 3
epochs of batch 128 with validation_split=0.2, evaluate on the test rows.
Reported: the process's wall time (Python start-up and imports included) and,
inside it, imports, loading, fitting (compilation included) and evaluation.
"ours" is the library path (`prepare`, `Trainer.fit`, `Trainer.evaluate`);
"ours_experiment" is `python -m experiments.diamonds` (which also writes the
report and its figures); "keras_tf"/"keras_jax" is the chapter's Keras code.
Every run compiles afresh, like the Keras runs: the persistent compilation cache is off
(DLCHAPTER_COMPILATION_CACHE=0); `benchmarks/cold_start.py` measures what it gives.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports, so the worker can time them

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data"
CONTENDERS = ("ours", "ours_experiment", "keras_tf", "keras_jax")


def data_dir() -> Path:
    return Path(os.environ.get("DLCHAPTER_DATA_DIR") or DEFAULT_DATA_DIR)


def run_ours() -> dict[str, Any]:
    """The library's path for the chapter preset, stage by stage."""
    import jax  # noqa: PLC0415

    from dlchapter.engine.optim import OptimizerConfig, make_optimizer  # noqa: PLC0415
    from dlchapter.engine.train import TASKS, FitConfig, Trainer, create_train_state  # noqa: PLC0415
    from dlchapter.models.dense import MLP  # noqa: PLC0415
    from dlchapter.runs.tabular_prep import prepare  # noqa: PLC0415
    from experiments.diamonds import CHAPTER  # noqa: PLC0415

    stages = {"import_s": time.perf_counter() - STARTED}
    t = time.perf_counter()
    config = dataclasses.replace(
        CHAPTER, data_dir=str(data_dir()), drop_implausible=False
    )  # every row, as the Keras script reads them
    data = prepare(config)
    stages["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    fit_config = FitConfig(
        epochs=config.epochs,
        batch_size=config.batch_size,
        validation_split=config.validation_split,
        validation_mode=config.validation_mode,
        seed=config.seed,
        progress=False,
    )
    steps_per_epoch = -(-int(len(data.y_train) * (1 - config.validation_split)) // config.batch_size)
    tx = make_optimizer(OptimizerConfig(config.optimizer), steps_per_epoch)
    init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
    state = create_train_state(MLP(widths=config.hidden), tx, data.x_train, init_key)
    trainer = Trainer(TASKS[config.task], steps_per_call=config.steps_per_call)
    state, history = trainer.fit(state, data.x_train, data.y_train, fit_config, dropout_key)
    stages["fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    test = trainer.evaluate(state, data.x_test, data.y_test)
    stages["evaluate_s"] = time.perf_counter() - t
    return {
        **stages,
        "epoch_s": history.values["epoch_seconds"],
        "test_mse": test["loss"],
        "val_mse": history.values["val_loss"][-1],
    }


def run_keras(backend: str) -> dict[str, Any]:
    """The chapter's Keras code (pandas get_dummies, sklearn split, Sequential, fit, evaluate)."""
    os.environ["KERAS_BACKEND"] = backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras  # noqa: PLC0415
    import pandas as pd  # noqa: PLC0415
    from sklearn.model_selection import train_test_split  # noqa: PLC0415

    stages = {"import_s": time.perf_counter() - STARTED}
    t = time.perf_counter()
    df = pd.read_csv(data_dir() / "diamonds.csv")
    x = pd.get_dummies(df.drop(columns="price"), dtype=int).to_numpy("float32")
    y = df["price"].to_numpy("float32")
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0)
    stages["load_s"] = time.perf_counter() - t
    t = time.perf_counter()
    model = keras.Sequential(
        [
            keras.Input((x.shape[1],)),
            *[keras.layers.Dense(200, activation="relu") for _ in range(4)],
            keras.layers.Dense(1),
        ]
    )
    model.compile(loss="mse", optimizer="adam")
    history = model.fit(x_train, y_train, epochs=3, batch_size=128, validation_split=0.2, verbose=0)
    stages["fit_s"] = time.perf_counter() - t
    t = time.perf_counter()
    test_mse = model.evaluate(x_test, y_test, verbose=0)
    stages["evaluate_s"] = time.perf_counter() - t
    return {**stages, "test_mse": float(test_mse), "val_mse": float(history.history["val_loss"][-1])}


def _process(argv: list[str], python: str, timeout: float = 900) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        env = {**os.environ, "DLCHAPTER_DATA_DIR": str(data_dir()), "DLCHAPTER_COMPILATION_CACHE": "0"}
        proc = subprocess.run([python, *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    result = json.loads(lines[-1]) if lines else {}
    return {"process_s": wall, **result}


def measure(peers_python: str | None = None, repeats: int = 1) -> dict[str, Any]:
    """Time each contender `repeats` times (fresh processes); the run with the median process time is kept."""
    commands = {"ours": (["-m", "benchmarks.diamonds_walltime", "--worker", "ours"], sys.executable)}
    with tempfile.TemporaryDirectory() as workdir:
        commands["ours_experiment"] = (["-m", "experiments.diamonds", "--workdir", workdir], sys.executable)
        if peers_python:
            for name in ("keras_tf", "keras_jax"):
                commands[name] = (["-m", "benchmarks.diamonds_walltime", "--worker", name], peers_python)
        results: dict[str, Any] = {}
        for name, (argv, python) in commands.items():
            runs = [_process(argv, python) for _ in range(repeats)]
            ok = sorted((r for r in runs if "process_s" in r), key=lambda r: r["process_s"])
            results[name] = {**ok[len(ok) // 2], "process_s_all": [r["process_s"] for r in ok]} if ok else runs[-1]
    return {"load_avg": os.getloadavg()[0], "repeats": repeats, "results": results}


def markdown(report: dict[str, Any]) -> list[str]:
    """Markdown lines: one row per contender, and ours' ratios against the chapter's Keras code."""
    rows = report["results"]
    lines = [
        "## Diamonds, whole experiment (load, 3 epochs, evaluate), seconds",
        "",
        f"Fresh process each; load average {report['load_avg']:.2f}; median of {report['repeats']} run(s).",
        "",
        "| contender | process wall | imports | load | fit (compile included) | evaluate | test MSE |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | error: {r['error'][:120]} | | | | | |")
            continue
        cells = [f"{r[k]:.2f}" if k in r else "-" for k in ("process_s", "import_s", "load_s", "fit_s", "evaluate_s")]
        cells.append(f"{r['test_mse']:.3g}" if "test_mse" in r else "-")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ours = rows.get("ours", {})
    for peer in ("keras_tf", "keras_jax"):
        if "process_s" in ours and "process_s" in rows.get(peer, {}):
            lines.append(
                f"\nours / {peer}: process {ours['process_s'] / rows[peer]['process_s']:.2f}, "
                f"fit {ours['fit_s'] / rows[peer]['fit_s']:.2f}."
            )
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--peers-python", default=None, help="a python with the [peers] extra (Keras); omitted: ours only"
    )
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", choices=("ours", "keras_tf", "keras_jax"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = (
            run_ours()
            if args.worker == "ours"
            else run_keras({"keras_tf": "tensorflow", "keras_jax": "jax"}[args.worker])
        )
        print(json.dumps(result))
        return result
    report = measure(args.peers_python, args.repeats)
    print("\n".join(markdown(report)))
    return report


if __name__ == "__main__":
    main()
