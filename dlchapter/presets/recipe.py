"""`Recipe`: how to run one experiment, the `RECIPE` each preset module (dlchapter/presets/*.py) defines.

Apart from the registry in `dlchapter.presets` (which imports the preset
modules), so that the preset modules import it without importing the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dlchapter.configs.config import CommandLine


@dataclass(frozen=True)
class Recipe:
    """How to run one experiment: its config class, named presets, the run, and the line printed after it."""

    config_class: type
    presets: Mapping[str, Any]
    run: Callable[[Any, Path], Any]
    headline: Callable[[Any, CommandLine, Any], str]
    description: str
    prefetch: Callable[[Any], None] | None = None  # starts loading the config's data (helper process), before `run`
    prefetch_imports: tuple[str, ...] = ()  # what `prefetch`'s job imports: loaded there while the flags are parsed
