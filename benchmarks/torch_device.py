"""PyTorch peers on the accelerator: the chapter's models in eager mode and through `torch.compile`.

    python -m benchmarks.torch_device --model mnist_cnn [--compile] [--device cuda|cpu] [--blocks 5]

`benchmarks.peers.run_torch` times PyTorch on the CPU; this times the same
network (`peers.torch_model`), optimizer (Keras's defaults), loss, batch size
and seeded epoch orders (`benchmarks.specs`) on the accelerator when there is
one (CUDA), else on the CPU: data, model and per-block orders live on the
device, each block is one benchmark epoch of eager steps (index a batch,
forward, loss, backward, optimizer step, running loss and metric sums on the
device) and ends by reading the sums back, which synchronizes. With
`--compile` the model is `torch.compile`d first (its compilation happens in
the untimed first block; `compile_s` is that block's excess over a warm one);
evaluation always runs eagerly (compiling it too would double the compile time).
Prints one JSON line; {"skipped": reason} when torch is absent or
`torch.compile` fails, never a crash.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.peers import _summary, _timed_blocks, torch_model
from benchmarks.specs import (
    EVAL_BATCH,
    SPECS,
    ModelSpec,
    epoch_orders,
    smoke,
    synthetic_data,
)

MODELS = ("mnist_cnn", "diamonds_mlp")  # the chapter's CNN (the target's peer) first, then its first MLP


def run(
    spec: ModelSpec, blocks: int = 5, warmup: int = 1, *, compile_model: bool = False, device: str | None = None
) -> dict[str, Any]:
    """Warm ms per step of `spec` in PyTorch on `device` (default: cuda if there); {"skipped": ...} if it cannot."""
    try:
        import torch
    except ImportError as err:
        return {"skipped": f"torch not installed ({err})"}
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = torch_model(torch, spec).to(device)
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
    forward = model
    if compile_model:
        try:
            forward = torch.compile(model)
        except Exception as err:  # noqa: BLE001 - an unusable compiler is a recorded result
            return {"skipped": f"torch.compile failed: {type(err).__name__}: {err}"[:400]}
    x_np, y_np = synthetic_data(spec)
    x = torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy() if spec.kind == "cnn" else x_np).to(device)
    y = (torch.from_numpy(y_np).long() if spec.task == "sparse_multiclass" else torch.from_numpy(y_np)).to(device)
    b = spec.batch_size

    def target(yb: Any) -> Any:
        return yb if spec.task == "sparse_multiclass" else yb[:, None]

    def metric(out: Any, yb: Any) -> Any:
        if spec.task == "regression":
            return (out[:, 0] - yb).abs().sum()
        if spec.task == "binary":
            return ((out[:, 0] > 0).float() == yb).float().sum()
        return (out.argmax(-1) == yb).float().sum()

    def block(order: Any) -> None:
        model.train()
        order_t = torch.from_numpy(order).to(device)
        loss_sum = torch.zeros((), device=device)
        metric_sum = torch.zeros((), device=device)
        for start in range(0, len(order), b):
            rows = order_t[start : start + b]
            xb, yb = x[rows], y[rows]
            opt.zero_grad(set_to_none=True)
            out = forward(xb)
            loss = loss_fn(out, target(yb))
            loss.backward()
            if spec.clip_global_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip_global_norm)
            opt.step()
            with torch.no_grad():
                loss_sum += loss.detach() * len(rows)
                metric_sum += metric(out, yb)
        float(loss_sum), float(metric_sum)  # reads back: the device has finished the block

    try:
        first, times = _timed_blocks(block, epoch_orders(spec.n_rows, blocks + warmup + 1), warmup)
    except Exception as err:
        if not compile_model:
            raise
        return {"skipped": f"torch.compile failed at the first step: {type(err).__name__}: {err}"[:400]}
    eval_s = []
    model.eval()
    evaluate = model  # eager, also with --compile
    for _ in range(3):
        started = time.perf_counter()
        with torch.inference_mode():
            total = torch.zeros((), device=device)
            for start in range(0, len(y), EVAL_BATCH):
                out = evaluate(x[start : start + EVAL_BATCH])
                total += loss_fn(out, target(y[start : start + EVAL_BATCH])) + metric(
                    out, y[start : start + EVAL_BATCH]
                )
            float(total)
        eval_s.append(time.perf_counter() - started)
    result = _summary(spec, first, times, eval_s[1:], len(y))
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    result.update(
        versions={
            "torch": torch.__version__,
            "device": name,
            "threads": torch.get_num_threads(),
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        },
        mode="compile" if compile_model else "eager",
        eval_mode="eager",
        params=sum(p.numel() for p in model.parameters()),
    )
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(SPECS), required=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--device", default=None)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    spec = smoke(SPECS[args.model]) if args.smoke else SPECS[args.model]
    result = {
        "model": args.model,
        **run(spec, args.blocks, args.warmup, compile_model=args.compile, device=args.device),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
