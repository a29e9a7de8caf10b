"""Typed configuration: frozen dataclasses, a TOML file, and ``--set a.b=value`` overrides.

Values apply in this order: the dataclass defaults (or a named preset), then the file, then each
``--set``. Every key and every value is checked against the dataclass field's type, so a typo or a bad
value is a usage error (exit 2) that names the key — never a silently ignored setting.

Supported field types: ``bool``, ``int``, ``float``, ``str``, ``Literal[...]``, ``X | None``,
``tuple[T, ...]`` and ``tuple[T1, T2]``, ``list[T]``, and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from acids_core.errors import UsageError

T = TypeVar("T")

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ConfigError(UsageError):
    """An unknown key or a value of the wrong type (exit 2)."""


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str, from_text: bool) -> Any:
    """Check (and for ``--set`` text, parse) ``value`` as type ``tp``; ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def bad(expected: str | None = None) -> ConfigError:
        return ConfigError(f"config key '{key}': expected {expected or _type_name(tp)}, got {value!r}")

    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None or (from_text and isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, from_text)
            except ConfigError as e:
                errors.append(e)
        raise bad()
    if origin is typing.Literal:
        for a in args:
            candidate = value
            if from_text and isinstance(value, str) and not isinstance(a, str):
                try:
                    candidate = _coerce(value, type(a), key, True)
                except ConfigError:
                    continue
            if candidate == a and type(candidate) is type(a):
                return a
        raise bad("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if from_text and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad("a table") from None
        if not isinstance(value, Mapping):
            raise bad("a table")
        return _apply(tp(), value, prefix=f"{key}.", from_text=from_text)
    if origin in (tuple, list):
        if from_text and isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise bad() from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()] if text else []
        if not isinstance(value, (list, tuple)):
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad(f"{len(args)} values")
            pairs = enumerate(zip(value, args, strict=True))
            return tuple(_coerce(v, a, f"{key}[{i}]", from_text) for i, (v, a) in pairs)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]", from_text) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if from_text and isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_text and isinstance(value, str):
            try:
                return int(value.replace("_", ""), 0)
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if from_text and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad("a number") from None
        raise bad("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise bad()


def _apply(cfg: T, values: Mapping[str, Any], prefix: str = "", from_text: bool = False) -> T:
    """Return ``cfg`` with ``values`` (a nested mapping) applied, checked field by field."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError("config objects are dataclass instances")
    fields = {f.name: f for f in dataclasses.fields(cfg) if f.init}
    hints = _hints(type(cfg))
    changes: dict[str, Any] = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key '{key}' (known here: {known})")
        tp = hints[name]
        current = getattr(cfg, name)
        if dataclasses.is_dataclass(current) and isinstance(value, Mapping):
            changes[name] = _apply(current, value, prefix=f"{key}.", from_text=from_text)
        else:
            changes[name] = _coerce(value, tp, key, from_text)
    return dataclasses.replace(cfg, **changes)  # type: ignore[type-var]


def parse_override(text: str) -> tuple[list[str], str]:
    """Split ``a.b=value`` into (["a", "b"], "value"); ConfigError when there is no ``=``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r}")
    return key.split("."), value.strip()


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Apply ``--set a.b=value`` strings in order."""
    for text in overrides:
        path, value = parse_override(text)
        nested: Any = value
        for part in reversed(path[1:]):
            nested = {part: nested}
        cfg = _apply(cfg, {path[0]: nested}, from_text=True)
    return cfg


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing or malformed file is a usage error naming it."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {p}: {e}") from None


def load(
    cls: type[T],
    source: str | Path | None = None,
    overrides: Iterable[str] = (),
    presets: Mapping[str, T | Callable[[], T]] | None = None,
) -> T:
    """Resolve a config: a preset or defaults, then a TOML file, then ``--set`` overrides.

    Args:
        cls: the frozen config dataclass.
        source: a preset name (a key of ``presets``), a TOML file path, or None for the defaults. A TOML
            file may start from a preset with a top-level ``preset = "name"`` key.
        overrides: ``a.b=value`` strings, applied in order.
        presets: named configs (or zero-argument factories).

    Raises:
        ConfigError: unknown preset, file, key, or a value of the wrong type.
    """
    presets = dict(presets or {})

    def preset(name: str) -> T:
        if name not in presets:
            choices = ", ".join(sorted(presets)) or "none"
            raise ConfigError(f"unknown config preset '{name}' (presets: {choices}; or give a .toml file)")
        p = presets[name]
        return p() if callable(p) and not dataclasses.is_dataclass(p) else p  # type: ignore[return-value]

    if source is None:
        cfg = cls()
    elif str(source) in presets:
        cfg = preset(str(source))
    elif Path(source).suffix == ".toml" or Path(source).exists():
        data = load_toml(source)
        base = data.pop("preset", None)
        cfg = preset(base) if base is not None else cls()
        cfg = _apply(cfg, data)
    else:
        preset(str(source))  # raises with the list of presets
        raise AssertionError("unreachable")
    return apply_overrides(cfg, overrides)


def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
    """Rebuild a config from :func:`to_dict` output (as stored in a checkpoint), strictly."""
    return _apply(cls(), data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/TOML-able dict of a config (tuples become lists)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return conv(cfg)


def to_toml(cfg: Any) -> str:
    """Render a config as TOML (for ``--dump-config`` and run directories). ``None`` values are omitted."""
    lines: list[str] = []

    def scalar(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(scalar(x) for x in v) + "]"
        raise TypeError(f"cannot write {type(v).__name__} to TOML")

    def table(d: dict[str, Any], name: str) -> None:
        simple = {k: v for k, v in d.items() if not isinstance(v, dict) and v is not None}
        nested = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name:
            lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {scalar(v)}" for k, v in simple.items())
        for k, v in nested.items():
            table(v, f"{name}.{k}" if name else k)

    table(to_dict(cfg), "")
    return "\n".join(lines).lstrip("\n") + "\n"


def config_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--config PRESET|FILE.toml`` and repeated ``--set KEY=VALUE`` to a click command.

    The command receives ``config`` (str or None) and ``overrides`` (tuple of str) and calls :func:`load`.
    """
    f = click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="KEY=VALUE",
        help="Override one config value (repeatable), e.g. --set encoder.channels=32.",
    )(f)
    f = click.option(
        "--config",
        "config",
        metavar="PRESET|FILE.toml",
        default=None,
        help='A named preset or a TOML file (which may say preset = "name" to start from one).',
    )(f)
    return f
