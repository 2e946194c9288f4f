"""Typed plugin parameters: validate a TOML table against a dataclass.

Every plugin declares ``Params``, a dataclass whose fields have defaults and a one-line doc given as
``field(default=..., metadata={"doc": "..."})`` (or through :func:`param`). The loader rejects unknown
keys with the list of valid ones and checks each value's type, so a typo never runs silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError


def param(default: Any, doc: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and a one-line doc (shown by ``hashbench plugins``)."""
    if isinstance(default, (list, dict, set)):
        return field(default_factory=lambda: type(default)(default), metadata={"doc": doc}, **kwargs)
    return field(default=default, metadata={"doc": doc}, **kwargs)


@dataclass(frozen=True)
class NoParams:
    """For plugins without parameters."""


def did_you_mean(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, where: str | None) -> Any:
    """Return ``value`` converted to ``tp`` or raise a ConfigError that names the key and the type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in args:
            try:
                return coerce(value, option, key, where)
            except ConfigError as exc:
                errors.append(exc)
        raise ConfigError(
            f"'{key}' = {value!r} has the wrong type: expected {' or '.join(_type_name(a) for a in args)}.",
            where,
        )
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"'{key}' must be empty (None).", where)
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"'{key}' = {value!r} is not valid: choose one of {list(args)}.", where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"'{key}' = {value!r} must be a list.", where)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"'{key}' must have {len(args)} items, got {len(value)}.", where)
            return tuple(coerce(v, a, key, where) for v, a in zip(value, args))
        item = args[0] if args else Any
        items = [coerce(v, item, key, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a table.", where)
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' = {value!r} must be true or false.", where)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"'{key}' = {value!r} must be an integer.", where)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # TOML allows inf and nan; no parameter means them
                raise ConfigError(f"'{key}' = {value!r} must be a finite number.", where)
            return float(value)
        raise ConfigError(f"'{key}' = {value!r} must be a number.", where)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"'{key}' = {value!r} must be a string.", where)
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"'{key}' = {value!r} must be of type {_type_name(tp)}.", where)


def is_sequence_type(tp: Any) -> bool:
    """True when a field takes a list as its value (so a list is not a grid to expand)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(is_sequence_type(a) for a in typing.get_args(tp))
    return origin in (list, tuple)


def field_types(params_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(params_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(params_cls)}


def build_params(params_cls: type, table: dict[str, Any], where: str | None = None) -> Any:
    """Validate ``table`` against ``params_cls`` and return an instance (defaults fill the gaps)."""
    types_by_name = field_types(params_cls)
    for key in table:
        if key not in types_by_name:
            valid = ", ".join(sorted(types_by_name)) or "(none)"
            raise ConfigError(f"unknown key '{key}'.{did_you_mean(key, types_by_name)} Valid keys: {valid}.", where)
    values = {k: coerce(v, types_by_name[k], k, where) for k, v in table.items()}
    try:
        instance = params_cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc), where) from None
    validate = getattr(instance, "validate", None)
    if callable(validate):
        try:
            validate()
        except ValueError as exc:
            raise ConfigError(str(exc), where) from None
    return instance


def params_to_dict(params: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a params instance (tuples become lists)."""
    out = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def describe_params(params_cls: type) -> list[dict[str, Any]]:
    """Name, type, default and doc of each field, for ``hashbench plugins``."""
    rows = []
    types_by_name = field_types(params_cls)
    for f in dataclasses.fields(params_cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        else:
            default = None
        rows.append(
            {
                "name": f.name,
                "type": _type_name(types_by_name[f.name]),
                "default": list(default) if isinstance(default, tuple) else default,
                "doc": f.metadata.get("doc", ""),
            }
        )
    return rows
