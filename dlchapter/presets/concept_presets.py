"""The chapter's concept demonstrations: activations, backprop by hand, batch size, optimizers,
overfitting and validation, each with one preset (the chapter's values).

    dlchapter run activations --workdir runs/activations [--leaky-alpha 0.3]
    dlchapter run backprop --workdir runs/backprop [--rows 500] [--steps 3000]
    dlchapter run batch_size --workdir runs/batch_size [--epochs 30] [--train-rows 8000]
    dlchapter run optimizers --workdir runs/optimizers [--epochs 20] [--decay 0.5]
    dlchapter run overfitting --workdir runs/overfitting [--l2 1e-2] [--dropout 0.5]
    dlchapter run validation --workdir runs/validation [--k 4] [--epochs 30]
"""

from __future__ import annotations

from typing import Any

from dlchapter.configs.config import CommandLine
from dlchapter.presets.recipe import Recipe
from dlchapter.presets.run_configs import (
    ActivationsConfig,
    BackpropConfig,
    BatchSizeConfig,
    OptimizersConfig,
    OverfittingConfig,
    ValidationConfig,
)
from dlchapter.presets.runners import (
    run_activations,
    run_backprop,
    run_batch_size,
    run_optimizers,
    run_overfitting,
    run_validation,
)


def _activations(config: ActivationsConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    probs = ", ".join(f"{p:.4f}" for p in m["softmax"])
    return (
        f"activations: softmax{tuple(config.softmax_inputs)} = ({probs}), sum {m['softmax_sum']:.6f}; "
        f"max |GELU - tanh GELU| {m['max_abs_gelu_minus_gelu_tanh']:.2e}; report in {cmd.workdir}/summary.md"
    )


def _backprop(config: BackpropConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    return (
        f"backprop: w = ({m['w'][0]:.4f}, {m['w'][1]:.4f}), b = {m['b']:.4f}; max |hand - jax.grad| gradient "
        f"{m['max_gradient_difference_hand_vs_jax_grad']:.2e}; max weight difference to sklearn "
        f"{m['max_weight_difference_to_sklearn']:.2e}; report in {cmd.workdir}/summary.md"
    )


def _batch_size(config: BatchSizeConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    parts = "; ".join(
        f"batch {r['batch_size']}: MSE {r['final_train_mse']:.3f} in {r['train_seconds']:.1f} s" for r in m["runs"]
    )
    return f"batch_size ({config.epochs} epochs): {parts}; report in {cmd.workdir}/summary.md"


def _optimizers(config: OptimizersConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    parts = ", ".join(f"{r['optimizer']} {r['final_val_loss']:.3f}" for r in m["runs"])
    return f"optimizers ({config.epochs} epochs), final validation MSE: {parts}; report in {cmd.workdir}/summary.md"


def _overfitting(config: OverfittingConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    parts = "; ".join(
        f"{r['variant']}: train {r['final_train_loss']:.3f}, val {r['final_val_loss']:.3f}" for r in m["runs"]
    )
    return f"overfitting ({config.epochs} epochs) final loss: {parts}; report in {cmd.workdir}/summary.md"


def _validation(config: ValidationConfig, cmd: CommandLine, m: dict[str, Any]) -> str:
    return (
        f"validation: {config.k}-fold accuracy {m['kfold_accuracy_mean']:.4f} +- {m['kfold_accuracy_std']:.4f}, "
        f"AUC {m['kfold_auc_mean']:.4f} +- {m['kfold_auc_std']:.4f}; hold-out accuracy {m['holdout_accuracy']:.4f}, "
        f"AUC {m['holdout_auc']:.4f}; report in {cmd.workdir}/summary.md"
    )


ACTIVATIONS = Recipe(
    ActivationsConfig,
    {"chapter": ActivationsConfig()},
    run_activations,
    _activations,
    "Each activation with its derivative (activations.png), and softmax vs hardmax on (1, -1, 0, 3).",
)
BACKPROP = Recipe(
    BackpropConfig,
    {"chapter": BackpropConfig()},
    run_backprop,
    _backprop,
    "Gradient descent on hand-written chain-rule gradients of 2-feature logistic regression, "
    "compared with jax.grad and scikit-learn.",
)
BATCH_SIZE = Recipe(
    BatchSizeConfig,
    {"chapter": BatchSizeConfig()},
    run_batch_size,
    _batch_size,
    "One network and optimizer, several batch sizes: loss against epochs and against seconds.",
)
OPTIMIZERS = Recipe(
    OptimizersConfig,
    {"chapter": OptimizersConfig()},
    run_optimizers,
    _optimizers,
    "SGD, momentum, RMSprop and Adam at Keras's default rates, and Adam with a = a0 / (1 + decay * epoch).",
)
OVERFITTING = Recipe(
    OverfittingConfig,
    {"chapter": OverfittingConfig()},
    run_overfitting,
    _overfitting,
    "A 4 x 512 network on 400 Pima rows with no regularization, L2, dropout, and both.",
)
VALIDATION = Recipe(
    ValidationConfig,
    {"chapter": ValidationConfig()},
    run_validation,
    _validation,
    "Hold-out and k-fold validation of the chapter's Pima network (accuracy and AUC per fold).",
)
