"""Non-neural baselines the chapter sets beside its networks (XGBoost)."""

from __future__ import annotations

import numpy as np


def xgboost_regression(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    *,
    seed: int = 0,
    n_estimators: int = 500,
    learning_rate: float = 0.05,
    max_depth: int = 6,
) -> np.ndarray:
    """Fit an XGBoost regressor (squared error) and predict `x_test`.

    Needs the optional extra: `pip install -e '.[xgboost]'`.
    """
    try:
        import xgboost
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("the XGBoost baseline needs xgboost: pip install -e '.[xgboost]'") from error
    model = xgboost.XGBRegressor(
        n_estimators=n_estimators,
        learning_rate=learning_rate,
        max_depth=max_depth,
        random_state=seed,
        n_jobs=2,
        tree_method="hist",
    )
    model.fit(x_train, y_train)
    return model.predict(x_test).astype(np.float64)
