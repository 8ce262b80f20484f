"""The sections of `benchmarks.accelerator_check`, each run in its own process with a time budget.

    python -m benchmarks.accel_sections SECTION --partial FILE --work DIR --budget-s S [--smoke] [--synthetic]

Each section writes its results so far to `--partial` (atomically, after
every measured item), so a section stopped at its budget still leaves what it
measured. Data: `$DLCHAPTER_DATA_DIR` (set by the orchestrator from
`--data-dir`) or the library's usual lookup; `--synthetic` uses seeded images
of Fashion-MNIST's shape instead. Sizes: the issue's on the accelerator,
a few hundred rows and tiny N with `--smoke` (the CPU test).
"""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CPU_REFERENCE = {
    "test_accuracy": 0.9041,
    "seconds": 67.0,
    "source": "README.md results table: Fashion-MNIST, the chapter preset, seed 0, 5 epochs on the 2-core CPU",
}
THROUGHPUT_ORDER = ("mnist_cnn", "diamonds_mlp", "california_mlp", "pima_mlp", "gru", "lstm")
Emit = Callable[[Any], None]


def write_atomic(path: Path, obj: Any) -> None:
    """JSON to `path` through a temporary file and `os.replace` (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str) + "\n")
    os.replace(tmp, path)


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(args: argparse.Namespace, emit: Emit) -> None:
    """Versions, backend, device kind and memory; the GPU as nvidia-smi sees it where it exists."""
    import jax

    from benchmarks.throughput import device_name, machine, versions

    info: dict[str, Any] = {
        **versions(),
        "orbax_checkpoint": _version("orbax-checkpoint"),
        "chex": _version("chex"),
        "numpy": np.__version__,
        "torch": _version("torch"),
        "machine": machine(),
    }
    device = jax.devices()[0]
    stats = device.memory_stats() or {}
    info.update(
        device_name=device_name(info),
        platform_version=getattr(getattr(device, "client", None), "platform_version", None),
        default_matmul_precision=str(getattr(jax.config, "jax_default_matmul_precision", "unknown")),
        memory_limit_gib=stats["bytes_limit"] / 2**30 if "bytes_limit" in stats else None,
        memory_note=None if stats else f"{jax.default_backend()}: device.memory_stats() reports nothing",
        xla_flags=os.environ.get("XLA_FLAGS", ""),
        jax_platforms=os.environ.get("JAX_PLATFORMS", ""),
    )
    if shutil.which("nvidia-smi"):
        query = "name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu"
        proc = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        info["nvidia_smi"] = proc.stdout.strip() or proc.stderr.strip()
    emit(info)


def _images(rows: int, synthetic: bool) -> tuple[np.ndarray, np.ndarray, str]:
    from benchmarks.cnn_epoch import images

    return images(rows, synthetic)


def cnn_epoch(args: argparse.Namespace, emit: Emit) -> None:
    """`benchmarks.cnn_epoch.measure` with one step per call, then the whole epoch per call."""
    from benchmarks.cnn_epoch import measure

    rows, epochs = (128, 2) if args.smoke else (60_000, 3)
    results = []
    for steps_per_call in (1, 0):
        results.append(measure(rows, epochs, steps_per_call, args.synthetic))
        emit(results)


def _torch(args: argparse.Namespace, emit: Emit, compile_model: bool) -> None:
    from benchmarks import torch_device
    from benchmarks.specs import SPECS, smoke

    results: dict[str, Any] = {}
    for name in torch_device.MODELS:
        spec = smoke(SPECS[name]) if args.smoke else SPECS[name]
        blocks, warmup = (1, 0) if args.smoke else (5, 1)
        results[name] = {
            "batch_size": spec.batch_size,
            **torch_device.run(spec, blocks, warmup, compile_model=compile_model),
        }
        emit(results)


def torch_eager(args: argparse.Namespace, emit: Emit) -> None:
    """PyTorch eager on the accelerator for the chapter's MLP and CNN (`benchmarks.torch_device`)."""
    _torch(args, emit, False)


def torch_compile(args: argparse.Namespace, emit: Emit) -> None:
    """The same through `torch.compile` (recorded as skipped where it does not work)."""
    _torch(args, emit, True)


def _many(args: argparse.Namespace, emit: Emit, precision: str) -> None:
    from benchmarks import many_models

    smoke_ns = (1, 2) if precision == "fp32" else (2,)
    ns, steps, rows, min_s = (smoke_ns, 2, 256, 0.0) if args.smoke else ((1, 16, 64, 256), 20, 60_000, 0.3)
    x, y, source = _images(rows, args.synthetic)
    many_models.run(ns, precision, x, y, steps, min_s, emit=lambda done: emit({"data": source, "rows": done}))


def many_models_fp32(args: argparse.Namespace, emit: Emit) -> None:
    """N chapter CNNs at once in float32 (`benchmarks.many_models`)."""
    _many(args, emit, "fp32")


def many_models_bf16(args: argparse.Namespace, emit: Emit) -> None:
    """N chapter CNNs at once in bf16 compute."""
    _many(args, emit, "bf16")


def write_synthetic_idx(directory: Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Four gz IDX files of seeded noise in Fashion-MNIST's shapes and names under `directory/fashion-mnist`."""
    target = directory / "fashion-mnist"
    target.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        (target / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes(), 1))
        header = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big")
        (target / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(header + labels.tobytes(), 1))
    return directory


def experiment(args: argparse.Namespace, emit: Emit) -> None:
    """`python -m experiments.mnist_cnn --dataset fashion_mnist` (the chapter preset, 5 epochs) in a fresh process."""
    data_dir = os.environ.get("DLCHAPTER_DATA_DIR")
    source = f"Fashion-MNIST ({data_dir or 'the library lookup'})"
    if args.synthetic:
        data_dir = str(
            write_synthetic_idx(
                args.work / "synthetic-data", 2_000 if args.smoke else 60_000, 500 if args.smoke else 10_000
            )
        )
        source = "synthetic images of Fashion-MNIST's shape (accuracy meaningless)"
    workdir = args.work / "experiment-run"
    shutil.rmtree(workdir, ignore_errors=True)
    argv = [
        sys.executable,
        "-m",
        "experiments.mnist_cnn",
        "--dataset",
        "fashion_mnist",
        "--workdir",
        str(workdir),
        "--progress",
        "false",
    ]
    argv += ["--data-dir", data_dir] if data_dir else []
    argv += ["--max-train", "300", "--max-test", "100", "--epochs", "1"] if args.smoke else []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    proc = subprocess.run(
        argv, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(args.budget_s - 5, 5)
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        emit({"error": f"exit {proc.returncode}: {proc.stderr.strip()[-800:]}", "command": " ".join(argv[1:])})
        return
    m = json.loads((workdir / "metrics.json").read_text())
    result = {
        "command": " ".join(argv[1:]),
        "data": source,
        "process_wall_s": wall,
        "compile_s": m["compile_seconds"],
        "train_s": m["train_seconds"],
        "epoch_s": m["epoch_seconds"],
        "epochs": m["epochs_run"],
        "n_train": m["n_train"],
        "n_validation": m["n_validation"],
        "test_accuracy": m["test_accuracy"],
        "steps_per_call": m["steps_per_call"],
        "cpu_reference": CPU_REFERENCE,
    }
    if not args.synthetic and not args.smoke:
        result["accuracy_minus_cpu"] = m["test_accuracy"] - CPU_REFERENCE["test_accuracy"]
    emit(result)


def numerics(args: argparse.Namespace, emit: Emit) -> None:
    """The model tests through pytest on this backend (`benchmarks.numerics_check`)."""
    from benchmarks import numerics_check

    emit(numerics_check.check(args.smoke, args.work, max(args.budget_s - 8, 5)))


def throughput(args: argparse.Namespace, emit: Emit) -> None:
    """`benchmarks.throughput.measure_ours` for every model and loop variant (smoke: one model)."""
    from benchmarks.specs import SPECS, smoke
    from benchmarks.throughput import VARIANTS, measure_ours

    models = ("diamonds_mlp",) if args.smoke else THROUGHPUT_ORDER
    blocks, warmup = (1, 0) if args.smoke else (5, 1)
    results: dict[str, Any] = {}
    for name in models:
        spec = smoke(SPECS[name]) if args.smoke else SPECS[name]
        results[name] = {"batch_size": spec.batch_size, "steps_per_epoch": spec.steps_per_epoch, "variants": {}}
        for variant in VARIANTS:
            results[name]["variants"][variant] = measure_ours(spec, variant, blocks, warmup)
            emit(results)


SECTIONS: dict[str, Callable[[argparse.Namespace, Emit], None]] = {
    "environment": environment,
    "cnn_epoch": cnn_epoch,
    "torch_eager": torch_eager,
    "many_models_fp32": many_models_fp32,
    "many_models_bf16": many_models_bf16,
    "experiment": experiment,
    "numerics": numerics,
    "throughput": throughput,
    "torch_compile": torch_compile,
}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=sorted(SECTIONS))
    parser.add_argument("--partial", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, required=True)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--synthetic", action="store_true")
    args = parser.parse_args(argv)
    SECTIONS[args.section](args, lambda obj: write_atomic(args.partial, obj))


if __name__ == "__main__":
    main()
