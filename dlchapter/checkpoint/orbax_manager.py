"""Orbax's checkpoint manager as `dlchapter.checkpoint.store` uses it, and the quirks it smooths over.

`StepManager` is `orbax.checkpoint.CheckpointManager` except that a step whose metrics file is unreadable
is recorded in `bad_metrics`, not fatal; `DamagedStep` marks a step whose files cannot be read back intact;
importing this module filters two orbax log lines that repeat what dlchapter reports in one line itself.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import orbax.checkpoint as ocp


class _NoMetricsNoise(logging.Filter):
    """Drops orbax log lines that repeat what dlchapter reports in one line itself.

    A save without metrics (mid-epoch saves have none by design), and the traceback
    orbax logs from its writer thread before re-raising the same error to `save`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "did not provide metrics" not in message and "_SignalingThread.run() raised an exception" not in message


logging.getLogger("absl").addFilter(_NoMetricsNoise())


class DamagedStep(Exception):
    """Internal: the step's files cannot be read back intact."""


def short_error(err: BaseException, limit: int = 300) -> str:
    """The first line of `err` as "Type: message", cut to `limit` characters."""
    text = f"{type(err).__name__}: {err}".splitlines()[0]
    return text if len(text) <= limit else text[:limit] + "..."


class StepManager(ocp.CheckpointManager):
    """Orbax's manager, except that a step whose metrics file is unreadable is recorded, not fatal.

    Orbax reads every step's metrics when it opens a directory and raises on
    junk there; here such a step gets no metrics and is listed in `bad_metrics`
    so that `CheckpointStore.restore` sets it aside like any damaged step.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.bad_metrics: dict[int, str] = {}
        super().__init__(*args, **kwargs)

    def _get_metrics(self, step: int) -> Any:
        try:
            metrics = super()._get_metrics(step)
            if metrics is not None and not (
                isinstance(metrics, dict)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in metrics.values())
            ):
                raise ValueError(f"expected an object of numbers, got {json.dumps(metrics)[:80]}")
            return metrics
        except (ValueError, TypeError, UnicodeDecodeError) as err:
            self.bad_metrics[step] = f"its orbax metrics file is unreadable ({short_error(err)})"
            return None


__all__ = ["DamagedStep", "StepManager", "short_error"]
