"""A small checkpointed training run, started as a subprocess by tests/test_resume.py.

    python -m tests.resume_worker CHECKPOINT_DIR OUT.npz [--lr LR] [--width W] [--restart]

Exits 0 after writing the final parameters and history to OUT.npz, 3 after a
SIGTERM/SIGINT (checkpoint saved), 4 when training diverged.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from dlchapter.checkpoint.resume import CheckpointConfig, TrainingInterrupted
from dlchapter.engine.callbacks import EarlyStopping
from dlchapter.engine.optim import OptimizerConfig, make_optimizer
from dlchapter.engine.train import TASKS, FitConfig, Trainer, TrainingDiverged, create_train_state
from dlchapter.models.dense import MLP

EPOCHS, BATCH = 4, 32


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    return x, (x @ rng.normal(size=6) + 0.1 * rng.normal(size=200)).astype(np.float32)


def flat_params(params) -> dict[str, np.ndarray]:
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(params)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoints")
    parser.add_argument("out")
    parser.add_argument("--optimizer", default="adam")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--restart", action="store_true")
    parser.add_argument("--target-scale", type=float, default=1.0)
    args = parser.parse_args(argv)
    x, y = data()
    init_key, dropout_key = jax.random.split(jax.random.key(7))
    model = MLP((args.width, 16), 1, dropout=(0.1, 0.0))
    state = create_train_state(
        model, make_optimizer(OptimizerConfig(args.optimizer, learning_rate=args.lr)), x, init_key
    )
    trainer = Trainer(TASKS["regression"], steps_per_call=1)
    try:
        state, history = trainer.fit(
            state,
            x,
            y * args.target_scale,
            FitConfig(
                epochs=EPOCHS,
                batch_size=BATCH,
                validation_split=0.2,
                validation_mode="shuffled",
                seed=7,
                progress=False,
            ),
            dropout_key,
            early_stopping=EarlyStopping("val_loss", patience=100),
            checkpoint=CheckpointConfig(args.checkpoints, every_steps=1, keep_last=2, restart=args.restart),
        )
    except TrainingInterrupted as error:
        print(error, file=sys.stderr)
        return 3
    except TrainingDiverged as error:
        print(error, file=sys.stderr)
        return 4
    np.savez(
        args.out,
        loss=np.asarray(history.values["loss"]),
        val_loss=np.asarray(history.values["val_loss"]),
        best_epoch=history.best_epoch,
        **flat_params(state.params),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
