"""Experiment configs on the command line, through tyro.

`parse_config(cls, argv, presets)` turns a flat config dataclass into a
command line: `--config NAME` picks a named preset, and then every field can be
overridden as `--field-name VALUE` (the preset's value is the default shown in
`--help`). Tuples are comma-separated (`--hidden 100,200`, `--hidden ''` for an
empty one); booleans take true/false or stand alone for true
(`--holdout-from-test`); optional values take `none`.

The config classes stay flat (the runs read `config.hidden`); for `--help`
the fields are shown in sections a researcher recognises (data, model,
optimizer, fit, runtime) by a nested tyro view built from the class, with
`tyro.conf.OmitArgPrefixes` so the sections group flags without renaming them.
Each field's description is the comment beside it in the class (tyro reads
those), its default is the chosen preset's value, and fields with a fixed
set of values list them. Parse errors become one `ConfigError` line.
The sections and descriptions are `dlchapter.configs.config_help`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from dlchapter.configs.config_errors import (
    ConfigError,
)  # re-exported: `from dlchapter.configs.config import ConfigError` works
from dlchapter.configs.config_help import SECTION_TITLES, SECTIONS, field_description, section_of

if TYPE_CHECKING:  # tyro is imported when a command line is parsed, so `dlchapter list` stays light
    from tyro.constructors import PrimitiveConstructorSpec

C = TypeVar("C")


_NONE = ("none", "null")


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def _optional(kind: Any) -> tuple[Any, bool]:
    """(inner type, accepts None) for `X | None`."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(kind))
    return kind, False


def _scalar(kind: Any) -> tuple[Callable[[str], Any], str]:
    if kind is bool:
        return _parse_bool, "true|false"
    if kind is int:
        return int, "INT"
    if kind is float:
        return _parse_float, "FLOAT"
    return str, "STR"


def _spec(kind: Any, choices: tuple[str, ...] | None) -> PrimitiveConstructorSpec:
    """How one field's text becomes a value (and back, for the default shown in --help)."""
    from tyro.constructors import PrimitiveConstructorSpec

    inner, nullable = _optional(kind)
    is_tuple = typing.get_origin(inner) is tuple
    convert, metavar = _scalar(typing.get_args(inner)[0] if is_tuple else inner)
    if choices:
        metavar = "{" + ",".join(choices) + "}"
    if is_tuple:
        metavar = f"{metavar},..."

    def from_text(text: str) -> Any:
        if nullable and text.lower() in _NONE:
            return None
        if is_tuple:
            return tuple(convert(t.strip()) for t in text.split(",") if t.strip())
        return convert(text)

    def parse(args: list[str]) -> Any:
        return True if inner is bool and not args else from_text(args[0])

    def to_text(value: Any) -> list[str]:
        if value is None:
            return ["none"]
        if isinstance(value, tuple):
            return [",".join(str(v).lower() if isinstance(v, bool) else str(v) for v in value)]
        return [str(value).lower() if isinstance(value, bool) else str(value)]

    return PrimitiveConstructorSpec(
        nargs=(0, 1) if inner is bool and not nullable else 1,
        metavar=f"{{none}}|{metavar}" if nullable else (f"[{metavar}]" if inner is bool else metavar),
        instance_from_str=parse,
        is_instance=lambda value: True,
        str_from_instance=to_text,
    )


@dataclasses.dataclass(frozen=True)
class CommandLine:
    """What the command line says beside the config: the preset's name and the run directory."""

    config: str
    workdir: Path


def _view(cls: type, preset: Any, name: str, presets: Sequence[str]) -> tuple[type, Any]:
    """A nested dataclass (one member per section) with `preset`'s values as defaults, and its instance."""
    import tyro

    from dlchapter.configs.config_checks import choices_for  # imports the library's registries of names

    hints = typing.get_type_hints(cls)
    grouped: dict[str, list[tuple[str, Any, Any]]] = {}
    for f in dataclasses.fields(cls):
        if f.name in getattr(cls, "CLI_HIDDEN", ()):
            continue  # meaningless for this experiment: not a flag, the preset's value stays
        choices = choices_for(cls, f.name)
        value = getattr(preset, f.name)
        shown = {}
        if isinstance(value, str) and "'" in value:  # tyro would shell-quote it: Keras'"'"'s
            shown["help_behavior_hint"] = f"(default: {json.dumps(value, ensure_ascii=False)})"
        argument = tyro.conf.arg(help=field_description(cls, f.name), **shown)
        # `object`, not `Any`: tyro checks each default against the field's type, with typeguard (a 50 ms import)
        # for anything but a plain class; the constructor spec does the parsing either way
        kind = Annotated[object, _spec(hints[f.name], choices), argument]
        if f.name in getattr(cls, "CLI_REQUIRED", ()) and not value:
            value = tyro.MISSING  # shown as (required); left out, one error line names the flag
        grouped.setdefault(section_of(f.name), []).append((f.name, kind, value))
    for section, items in grouped.items():  # within a section, the order SECTIONS gives (subclass fields too)
        order = SECTIONS.get(section, ())
        items.sort(key=lambda item: order.index(item[0]) if item[0] in order else len(order))
    run_fields = [
        (
            "config",
            Annotated[
                object, _spec(str, tuple(presets)), tyro.conf.arg(help="named preset; the flags below override it")
            ],
            name,
        ),
        (
            "workdir",
            Annotated[object, _spec(str, None), tyro.conf.arg(help="directory for the run's outputs", metavar="DIR")],
            tyro.MISSING,
        ),
    ]
    sections = [("run", run_fields)] + [(s, grouped[s]) for s in (*SECTIONS, "experiment") if s in grouped]
    members, values = [], {}
    for section, items in sections:
        sub = dataclasses.make_dataclass(section, [(name, kind) for name, kind, _ in items], frozen=True)
        members.append(
            (section, Annotated[sub, tyro.conf.arg(help=SECTION_TITLES.get(section, "where and how to run"))])
        )
        values[section] = sub(**{name: value for name, _, value in items})
    view = dataclasses.make_dataclass(cls.__name__ + "Flags", members, frozen=True)
    return view, view(**values)


def _one_line(text: str) -> str:
    """tyro's boxed error message as one line (its first block, box drawing removed)."""
    lines = []
    for raw in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
        if raw.strip().startswith("╭"):
            continue  # the box's title
        line = raw.strip().strip("│╰╯").strip()
        if re.fullmatch(r"[─╭╮╰╯]*", line):
            if lines:
                break
            continue
        lines.append(line.strip("─ "))
    return " ".join(lines) or "invalid command line"


def _missing_flags(text: str) -> str | None:
    """tyro's "Missing from ..." box as one line naming the required flags left out; None for other errors."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
    if "Missing from" not in plain and "Required options" not in plain:
        return None
    # each missing flag starts a line of the box; its help text and the "run --help" hint do not
    flags = list(dict.fromkeys(re.findall(r"^[\s│]*(--[a-z][a-z0-9-]*)", plain, flags=re.MULTILINE)))
    return f"required flag(s) not given: {', '.join(flags)} (see --help)" if flags else None


def _preset_name(argv: Sequence[str], presets: Mapping[str, Any]) -> str:
    name = next(iter(presets))
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            name = argv[i + 1]
        elif token.startswith("--config="):
            name = token.split("=", 1)[1]
    if name not in presets:
        raise ConfigError(f"--config {name!r} is not a preset of this experiment; choose one of {', '.join(presets)}")
    return name


def parse_config(
    cls: type[C],
    argv: Sequence[str] | None,
    presets: Mapping[str, C],
    *,
    description: str = "",
    prog: str | None = None,
) -> tuple[C, CommandLine]:
    """The config `argv` asks for: the `--config` preset (default: the first) with each given flag applied.

    Raises ConfigError for an unknown flag or preset, or a value of the wrong type, with
    one line naming the flag. `--help` prints the grouped flags and exits 0 (SystemExit).
    """
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    name = _preset_name(argv, presets)
    view, defaults = _view(cls, presets[name], name, list(presets))
    help_asked = "-h" in argv or "--help" in argv
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured) if not help_asked else contextlib.nullcontext():
            flags = tyro.cli(
                view,
                args=argv,
                default=defaults,
                prog=prog,
                description=description or cls.__doc__,
                config=(tyro.conf.OmitArgPrefixes,),
            )
    except SystemExit as stop:
        if stop.code in (0, None):
            raise
        raise ConfigError(_missing_flags(captured.getvalue()) or _one_line(captured.getvalue())) from None
    values: dict[str, Any] = {}
    for section in dataclasses.fields(flags):
        values.update(dataclasses.asdict(getattr(flags, section.name)))
    values.pop("config")
    workdir = values.pop("workdir")
    if not str(workdir).strip():
        raise ConfigError("--workdir is empty: give the directory for the run's outputs")
    return dataclasses.replace(presets[name], **values), CommandLine(name, Path(workdir))  # type: ignore[type-var]


def config_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))
