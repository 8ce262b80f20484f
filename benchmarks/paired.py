"""Ours and the peers in ONE process, epochs interleaved round by round: ratios that hold on a loaded machine.

    /work/peers-venv/bin/python -m benchmarks.paired --models lstm,diamonds_mlp,mnist_cnn \\
        --contenders ours,keras_jax,torch --rounds 9

`benchmarks.throughput` runs every framework in its own process, one after the other; when the
machine is shared, the load changes between them and the ratios move with it. Here every contender
is built and warmed up once, then each round times one epoch of every contender back to back (the
order rotates each round), so the contenders of one round see the same load. Per contender: the
median ms per step over rounds, min and max; per peer: the median of the per-round ratios
ours / peer, min and max. Keras on TensorFlow cannot share a process with Keras on JAX (Keras
reads its backend once, at import): it is measured by `benchmarks.throughput` only.

Contenders: ``ours`` (the library's `Trainer.train_program` with `--steps-per-call`, as `Trainer.fit`
calls it; `ours@N` for another steps-per-call, `ours@epoch` for the whole epoch in one call),
``ours-generic`` (recurrent models only: the library's per-step cell under `nn.scan`, the path
before the fused sequence op), ``ours-autodiff`` (LSTM: the fused op differentiated by JAX),
``ours-unrollN`` (recurrent: `RecurrentNet(unroll=N)`), a suffix ``+ynn`` (ours compiled with XLA's
default YNNPACK dots instead of `dlchapter.engine.train.CPU_COMPILER_OPTIONS`),
``ours-prev`` (the library's code paths as they
were before Nov 30 b, at ours' steps per call: no copy-insertion region analysis, no im2col convolutions,
dX as the 'full' convolution; for the recurrent models, as before Nov 30 c: the LSTM op's gates through
`jax.nn.sigmoid` and XLA's default CPU options; benchmarks/NOTES.md), ``ours-fused`` (LSTM: the gates stored
fused, `benchmarks.lstm_variants.FusedLSTMCell`), ``keras_jax``, ``torch``
(`benchmarks.peers`, the same specs and data) and ``torch1`` (PyTorch with one intra-op thread: torch's
second OpenMP thread spins and loses its slice on a loaded machine; a contender after it in the same
process keeps one thread too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.specs import SPECS, ModelSpec, epoch_orders, smoke

ROOT = Path(__file__).resolve().parent.parent


def ours_epoch(
    spec: ModelSpec, steps_per_call: int | None, generic: bool = False, variant: str = ""
) -> Callable[[Any], None]:
    """One epoch of our library's training program over `spec`'s synthetic rows, ended by block_until_ready."""

    from benchmarks.throughput import build, trainer_epoch
    from dlchapter.models import recurrent

    if generic:  # the per-step cell under nn.scan: the same parameters, no fused sequence op
        cell = recurrent.CELLS[spec.kind]
        recurrent.CELLS[f"{spec.kind}-generic"] = type(f"Generic{cell.__name__}", (cell,), {"sequence_op": False})
        spec = ModelSpec(**{**vars(spec), "kind": f"{spec.kind}-generic"})
    elif variant == "autodiff":  # the fused sequence op differentiated by JAX instead of its hand-written VJP
        from dlchapter.models.recurrent_ops import lstm_sequence_autodiff

        cell = recurrent.CELLS[spec.kind]
        attrs = {"sequence_fn": staticmethod(lstm_sequence_autodiff)}
        recurrent.CELLS[f"{spec.kind}-autodiff"] = type(f"Autodiff{cell.__name__}", (cell,), attrs)
        spec = ModelSpec(**{**vars(spec), "kind": f"{spec.kind}-autodiff"})
    if variant.startswith("unroll"):  # RecurrentNet(unroll=N) through the same factory
        n_unroll = int(variant.removeprefix("unroll"))

        class Unrolled(recurrent.RecurrentNet):
            unroll: int = n_unroll

        saved, recurrent.RecurrentNet = recurrent.RecurrentNet, Unrolled
        try:
            trainer, state, _ = build(spec, steps_per_call)
        finally:
            recurrent.RecurrentNet = saved
    else:
        trainer, state, _ = build(spec, steps_per_call)
    return trainer_epoch(trainer, state, spec, steps_per_call)


YNN_DOTS = "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT"


def contender_epoch(name: str, spec: ModelSpec, steps_per_call: int | None) -> Callable[[Any], None]:
    """One epoch of contender `name`; a suffix "+ynn" compiles ours with XLA:CPU's default YNNPACK dots,
    "+ynndot" with the Trainer's default options but YNNPACK for the dots only (models without options of
    their own: `throughput.build`)."""
    from benchmarks import lstm_variants, peers
    from dlchapter.engine import trainer_programs as train  # where the Trainer reads CPU_COMPILER_OPTIONS

    if name.endswith("+ynndot"):  # the Trainer's default options with YNNPACK for dots only
        saved = train.CPU_COMPILER_OPTIONS
        train.CPU_COMPILER_OPTIONS = {**saved, "xla_cpu_experimental_ynn_fusion_type": YNN_DOTS}
        try:
            return contender_epoch(name.removesuffix("+ynndot"), spec, steps_per_call)
        finally:
            train.CPU_COMPILER_OPTIONS = saved
    if name.endswith("+ynn"):
        saved, train.CPU_COMPILER_OPTIONS = train.CPU_COMPILER_OPTIONS, {}
        try:
            return contender_epoch(name.removesuffix("+ynn"), spec, steps_per_call)
        finally:
            train.CPU_COMPILER_OPTIONS = saved

    if name == "ours-fused":  # LSTM: the gates stored fused (benchmarks/lstm_variants.py), not adopted
        return ours_epoch(lstm_variants.fused_spec(spec), steps_per_call)
    if name == "ours-prev":  # patched while the program is traced and compiled (its first call)
        from dlchapter.models import conv_ops

        saved = train.CPU_COMPILER_OPTIONS, conv_ops.IM2COL_MAX_PATCH_BYTES, conv_ops._dx_by_taps
        train.CPU_COMPILER_OPTIONS = {
            k: v for k, v in saved[0].items() if k != "xla_cpu_copy_insertion_use_region_analysis"
        }
        conv_ops.IM2COL_MAX_PATCH_BYTES, conv_ops._dx_by_taps = 0, conv_ops._dx_full_conv
        try:
            with lstm_variants.previous_recurrent():  # recurrent models: the gates and options before Nov 30 c
                epoch = ours_epoch(spec, steps_per_call)
                epoch(epoch_orders(spec.n_rows, 1)[0])
            return epoch
        finally:
            train.CPU_COMPILER_OPTIONS, conv_ops.IM2COL_MAX_PATCH_BYTES, conv_ops._dx_by_taps = saved
    if name in ("torch", "torch1"):  # torch1: one intra-op thread (no spinning second thread on a loaded machine)
        if name == "torch1":
            import torch

            torch.set_num_threads(1)
        return peers.torch_epoch(spec)[0]
    if name == "keras_jax":
        return peers.keras_epoch(name, spec)[0]
    if name == "ours-generic":
        return ours_epoch(spec, steps_per_call, generic=True)
    if name.startswith("ours-unroll"):
        return ours_epoch(spec, steps_per_call, variant=name.removeprefix("ours-"))
    if name == "ours-autodiff":
        return ours_epoch(spec, steps_per_call, variant="autodiff")
    if name.startswith("ours@"):
        n = name.split("@", 1)[1]
        return ours_epoch(spec, None if n == "epoch" else int(n))
    return ours_epoch(spec, steps_per_call)


def measure(
    spec: ModelSpec, contenders: Sequence[str], rounds: int, warmup: int, steps_per_call: int | None
) -> dict[str, Any]:
    """ms per step of every contender per round (interleaved), and per-round ratios of ours to each."""
    epochs = {name: contender_epoch(name, spec, steps_per_call) for name in contenders}
    orders = epoch_orders(spec.n_rows, rounds + warmup)
    for order in orders[:warmup]:
        for fn in epochs.values():
            fn(order)
    ms: dict[str, list[float]] = {name: [] for name in contenders}
    cpu_ms: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for r, order in enumerate(orders[warmup:]):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            started, cpu_started = time.perf_counter(), time.process_time()
            epochs[name](order)
            ms[name].append((time.perf_counter() - started) / spec.steps_per_epoch * 1e3)
            cpu_ms[name].append((time.process_time() - cpu_started) / spec.steps_per_epoch * 1e3)
    base = names[0]
    summary = {name: _stats(v) for name, v in ms.items()}
    ratios = {name: _stats([a / b for a, b in zip(ms[base], ms[name])]) for name in names[1:]}
    return {
        "ms_per_step": ms,
        "cpu_ms_per_step": cpu_ms,
        "summary": summary,
        "ratio_to_first": ratios,
        "cpu_summary": {name: _stats(v) for name, v in cpu_ms.items()},
        "first": base,
    }


def _stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def markdown(report: dict[str, Any]) -> str:
    lines = [
        (
            f"## Paired, one process ({report['cpu']}, {report['cores']} cores; load average "
            f"{report['load_start']:.2f} at start, {report['load_end']:.2f} at end)"
        ),
        "",
        (
            f"Command: `{report['command']}`; ms per step, median [min-max] over {report['rounds']} rounds; "
            "ratio = first contender / this one, per round, median [min-max]."
        ),
        "",
        "CPU ms = process CPU time per step (all threads; a spinning thread counts).",
        "",
        "| model | batch | contender | ms per step | ratio | CPU ms per step |",
        "|---|---|---|---|---|---|",
    ]
    for model, res in report["models"].items():
        for name, s in res["summary"].items():
            r, c = res["ratio_to_first"].get(name), res["cpu_summary"][name]
            ratio = "-" if r is None else f"{r['median']:.3g} [{r['min']:.3g}-{r['max']:.3g}]"
            lines.append(
                f"| {model} | {report['batch'][model]} | {name} | {s['median']:.3g} "
                f"[{s['min']:.3g}-{s['max']:.3g}] | {ratio} | {c['median']:.3g} [{c['min']:.3g}-{c['max']:.3g}] |"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lstm", help="comma-separated, among: " + ", ".join(SPECS))
    parser.add_argument(
        "--contenders", default="ours,torch", help="comma-separated; the first is the ratios' numerator"
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs of each contender first")
    parser.add_argument(
        "--steps-per-call",
        default="default",
        help="ours: an int, 'epoch', or 'default' (the library's CPU default for the model)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few batches per model (for the test suite)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON here (and .md beside)")
    args = parser.parse_args(argv)
    from benchmarks.throughput import machine

    report: dict[str, Any] = {
        "command": " ".join(["python -m benchmarks.paired", *(sys.argv[1:] if argv is None else argv)]),
        "rounds": args.rounds,
        **{k: machine()[k] for k in ("cpu", "cores")},
        "load_start": os.getloadavg()[0],
        "models": {},
        "batch": {},
    }
    for model in args.models.split(","):
        spec = smoke(SPECS[model]) if args.smoke else SPECS[model]
        spc = _steps_per_call(model, args.steps_per_call)
        report["models"][model] = measure(spec, args.contenders.split(","), args.rounds, args.warmup, spc)
        report["batch"][model] = spec.batch_size
        print(f"{model} done (load {os.getloadavg()[0]:.2f})", file=sys.stderr)
    report["load_end"] = os.getloadavg()[0]
    text = markdown(report)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)
    return report


def _steps_per_call(model: str, value: str) -> int | None:
    """The library's CPU default per model (dlchapter/runs/*.py), or what --steps-per-call says."""
    if value == "epoch":
        return None
    if value != "default":
        return int(value)
    return {"mnist_cnn": 32, "gru": None, "lstm": None}.get(model)  # MLPs: None (whole epoch)


if __name__ == "__main__":
    main()
