"""Typed experiment configs: dataclasses with the chapter's values as defaults.

`parse_config` turns a config class into a command line: `--config NAME`
picks a named preset (e.g. "chapter", "improved"), and every field can be
overridden as `--field-name VALUE`. Tuples are given comma-separated
(`--hidden 100,200`); booleans as true/false, or alone for true.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence, TypeVar

C = TypeVar("C")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _optional(kind: Any) -> tuple[Any, bool]:
    """(inner type, accepts None) for `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(kind))
    return kind, False


def _converter(kind: Any):
    inner, nullable = _optional(kind)
    if typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        convert_item = _converter(item)
        base = lambda text: tuple(convert_item(t) for t in text.split(",") if t.strip())  # noqa: E731
    elif inner is bool:
        base = _parse_bool
    else:
        base = inner
    if not nullable:
        return base
    return lambda text: None if text.lower() in ("none", "null", "") else base(text)


def parse_config(
    cls: type[C], argv: Sequence[str] | None, presets: Mapping[str, C], *, description: str = ""
) -> tuple[C, argparse.Namespace]:
    """Parse `--config`, `--workdir` and one flag per field of `cls`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", choices=sorted(presets), default=next(iter(presets)), help="named preset")
    parser.add_argument("--workdir", required=True, type=Path, help="directory for the run's outputs")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        flag, kind = f"--{f.name.replace('_', '-')}", hints[f.name]
        bare = {"nargs": "?", "const": True} if kind is bool else {}  # `--flag` alone means true
        parser.add_argument(flag, dest=f.name, type=_converter(kind), default=argparse.SUPPRESS, help=f"(type {kind})", **bare)
    args = parser.parse_args(argv)
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}  # type: ignore[arg-type]
    return dataclasses.replace(presets[args.config], **overrides), args  # type: ignore[type-var]


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
