"""The one line a tabular experiment prints when it ends: the data it used and its headline test scores."""

from __future__ import annotations

from typing import Any


def _number(value: Any, spec: str) -> str:
    from dlchapter.reporting.scores import is_undefined

    return "undefined" if value is None or is_undefined(value) else format(value, spec)


def tabular_headline(label: str, config: Any, cmd: Any, result: Any) -> str:
    """`label (preset, seed N): <scores for config.task>; report in WORKDIR/summary.md`.

    Regression: test MSE and R2 (and corr^2 and XGBoost's MSE when the run has them); classification: test
    accuracy (and AUC for a binary task). An undefined score (`dlchapter.reporting.scores.Undefined`) reads "undefined".
    """
    m = result.metrics
    if config.task == "regression":
        scores = f"test MSE {_number(m.get('test_mse'), '.4g')}, R2 {_number(m.get('test_r2'), '.4f')}"
        if "test_r2_corr" in m:
            scores += f" (corr^2 {_number(m['test_r2_corr'], '.4f')})"
        if "xgb_test_mse" in m:
            scores += f", XGBoost MSE {_number(m['xgb_test_mse'], '.4f')}"
    else:
        scores = f"test accuracy {_number(m.get('test_accuracy'), '.4f')}"
        if config.task == "binary":
            scores += f", AUC {_number(m.get('test_auc'), '.4f')}"
    return (
        f"{label} ({cmd.config}, seed {config.seed}): {scores} after {m.get('epochs_run')} epochs; "
        f"report in {cmd.workdir}/summary.md"
    )
