"""How a setting is declared, and everything derived from that one declaration.

Every settings class (`[vocab]` in vocab.py, `[model]` beside the model, `[train]`, `[score]` ... in
config.py, ingest's options in ingest/options.py) is a frozen dataclass made by `@settings`: a pydantic
dataclass with strict types (no "5" for 5, no `true` for 1), finite floats (no `inf`, no `nan`: every
float setting is a rate, a share or a threshold) and no unknown keys. Each field is one line
`name: type = setting(default, "meaning", ge=..., ...)`: its type, its default, its range and its meaning.

From that declaration come the checks of a TOML file, of `--set` and of a loaded model's config
(`build`), the subcommands' flags (`add_flags`, `given_flags`), `pipeline config --schema` (pydantic's
JSON Schema) and the help texts. An error names the key, where it came from, and a hint.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, TypeVar

import pydantic
from pydantic import ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError

T = TypeVar("T")

STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def settings(cls: type[T]) -> type[T]:
    """A frozen dataclass whose fields are checked, strictly, whenever one is made (`replace` too)."""
    return pydantic.dataclasses.dataclass(frozen=True, config=STRICT)(cls)  # type: ignore[return-value]


def setting(default: Any, description: str, **constraints: Any) -> Any:
    """One setting: its default, its meaning (help text and schema), and pydantic's constraints
    (`ge`, `gt`, `le`, `lt`)."""
    return Field(default, description=description, **constraints)


def fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls)}


def description(cls: type, name: str) -> str:
    return cls.__pydantic_fields__[name].description or ""  # type: ignore[attr-defined]


def default(cls: type, name: str) -> Any:
    return cls.__pydantic_fields__[name].get_default(call_default_factory=True)  # type: ignore[attr-defined]


def build(cls: type[T], values: dict[str, Any], *, where: str, section: str = "") -> T:
    """`cls(**values)` with TOML's lists as tuples; any error a `ConfigError` naming the key and `where`."""
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**values)
    except ValidationError as e:
        raise ConfigError(explain(e, cls, where=where, section=section)) from None


def explain(e: ValidationError, cls: type, *, where: str, section: str = "") -> str:
    """A pydantic error as one line: where, the key, what was wrong, what was given, and a hint."""
    err = e.errors()[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    name = f"{section}.{key}" if section else key
    if err["type"] in ("unexpected_keyword_argument", "extra_forbidden"):
        known = sorted(fields(cls))
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        return f"{where}: unknown key `{name}`; hint: {hint}"
    meaning = description(cls, key) if key in fields(cls) else ""
    msg = err["msg"][0].lower() + err["msg"][1:]
    given = f", got {err['input']!r}" if "input" in err and not isinstance(err["input"], dict) else ""
    hint = f"; hint: {meaning}" if meaning else ""
    return f"{where}: `{name}`: {msg}{given}{hint}"


def json_schema(cls: type) -> dict[str, Any]:
    return pydantic.TypeAdapter(cls).json_schema()


# ---------------------------------------------------------------------------- command-line flags


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    names: list[str],
    *,
    flags: dict[str, str] | None = None,
    notes: dict[str, str] | None = None,
    metavars: dict[str, str] | None = None,
    types: dict[str, Any] | None = None,
) -> None:
    """A flag for each setting in `names`, typed and explained by its declaration. An unset flag is None
    (`given_flags` leaves it out), so the config file or the default keeps its value.

    bool -> `--x/--no-x`; tuple -> repeatable; Literal -> choices; `flags` renames a flag, `notes` adds
    to its help (e.g. how to write an empty value), `types` gives a flag its own parser (one value: a
    file the setting is read from, say), `metavars` the name of its value.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    for name in names:
        tp = _plain(hints[name])
        flag = (flags or {}).get(name, "--" + name.replace("_", "-"))
        text = description(cls, name)
        if notes and name in notes:
            text += f"; {notes[name]}"
        kw: dict[str, Any] = {"dest": name, "default": None}
        if types and name in types:
            kw["type"] = types[name]
        elif tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is tuple:
            kw["action"] = "append"
        elif typing.get_origin(tp) is Literal:
            kw["choices"] = list(typing.get_args(tp))
        elif tp in (int, float):
            kw["type"] = tp
            kw["metavar"] = "N" if tp is int else "X"
        if metavars and name in metavars:
            kw["metavar"] = metavars[name]
        parser.add_argument(flag, help=f"{text} (default: {_show(default(cls, name))})", **kw)


def given_flags(args: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    """The settings among `names` given on the command line."""
    return {n: getattr(args, n) for n in names if getattr(args, n, None) is not None}


def _plain(tp: Any) -> Any:
    """`Annotated[X, ...] | None` -> X."""
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = args[0] if len(args) == 1 else tp
    if typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _show(value: Any) -> str:
    if value is None:
        return "none"
    if value == "":
        return "''"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
