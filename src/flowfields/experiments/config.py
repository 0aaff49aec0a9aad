"""Experiment configurations: presets, ``--set key=value`` overrides, JSON round trips.

A ``Config`` is a dataclass; every field's annotation says how a command-line string parses
(:func:`parse_value`), so ``--set`` checks each value against its field and names the field,
the text given and the type expected when it does not fit.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowfields.errors import FlowfieldsError, check

__all__ = [
    "apply_overrides",
    "build_config",
    "config_from_dict",
    "config_types",
    "parse_value",
]

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}
_NONE = {"none", "null"}


def config_types(cfg_cls: type) -> dict[str, Any]:
    """Field name -> resolved type annotation of a ``Config`` dataclass."""
    check(dataclasses.is_dataclass(cfg_cls), "Config", cfg_cls, "a dataclass")
    module = sys.modules.get(cfg_cls.__module__)
    try:
        hints = typing.get_type_hints(cfg_cls, vars(module) if module else None)
    except Exception:  # unresolvable annotations: fall back to the raw ones
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cfg_cls)}


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _strip_quotes(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def parse_value(text: str, tp: Any, key: str = "value") -> Any:
    """Parse the command-line string ``text`` as type ``tp``.

    Supports ``int``, ``float``, ``bool`` (true/false/yes/no/1/0/on/off), ``str``, ``Path``,
    ``X | None`` (``none``/``null``), ``Literal[...]``, ``tuple[T, ...]``, ``tuple[A, B]`` and
    ``list[T]`` (comma-separated, brackets optional: ``1,2,3`` or ``(1, 2, 3)``).

    Raises:
        FlowfieldsError: naming ``key``, the text given and the type expected.
    """
    text = text.strip()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str | None = None) -> FlowfieldsError:
        want = expected or f"a value of type {_type_name(tp)}"
        return FlowfieldsError(f"--set {key}: got {text!r}, expected {want}.")

    if tp is Any or tp is None:
        return _strip_quotes(text)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        if type(None) in args and text.lower() in _NONE:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return parse_value(text, option, key)
            except FlowfieldsError:
                continue
        raise fail(" or ".join(_type_name(a) for a in args))
    if origin is typing.Literal:
        for choice in args:
            if str(choice) == _strip_quotes(text):
                return choice
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if origin in (tuple, list) or tp in (tuple, list):
        inner = text
        if inner[:1] in "([" and inner[-1:] in ")]":
            inner = inner[1:-1]
        parts = [p for p in (s.strip() for s in inner.split(",")) if p != ""]
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(parts) != len(args):
                raise fail(f"{len(args)} comma-separated values ({_type_name(tp)})")
            return tuple(parse_value(p, a, key) for p, a in zip(parts, args))
        elem = args[0] if args else str
        values = [parse_value(p, elem, key) for p in parts]
        return list(values) if (origin is list or tp is list) else tuple(values)
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise fail("a boolean (true/false, yes/no, 1/0, on/off)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                raise fail("an integer") from None
            if as_float.is_integer():
                return int(as_float)
            raise fail("an integer") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise fail("a number") from None
    if tp is str:
        return _strip_quotes(text)
    if isinstance(tp, type):
        try:
            return tp(_strip_quotes(text))
        except Exception:
            raise fail() from None
    return _strip_quotes(text)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a JSON-loaded value (lists for tuples, ...) back to the field's type."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _coerce(value, options[0], key) if len(options) == 1 else value
    if (origin is tuple or tp is tuple) and isinstance(value, list):
        if args and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(_coerce(v, a, key) for v, a in zip(value, args))
        elem = args[0] if args else Any
        return tuple(_coerce(v, elem, key) for v in value)
    if tp is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    return value


def _valid_keys(cfg_cls: type) -> str:
    return ", ".join(f"{k} ({_type_name(t)})" for k, t in config_types(cfg_cls).items())


def apply_overrides(cfg: Any, overrides: Mapping[str, Any] | Sequence[str]) -> Any:
    """Return a copy of ``cfg`` with ``overrides`` applied.

    Args:
        cfg: a ``Config`` dataclass instance.
        overrides: ``["key=value", ...]`` (strings parsed by the field's type) or a mapping
            ``{key: value}`` (strings parsed, other values used as they are).

    Raises:
        FlowfieldsError: for an unknown key (listing the valid ones), a malformed
            ``key=value`` or a value that does not parse as the field's type.
    """
    types_ = config_types(type(cfg))
    if isinstance(overrides, Mapping):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if not isinstance(item, str) or "=" not in item:
                raise FlowfieldsError(
                    f"--set: got {item!r}, expected key=value (e.g. --set steps=2000)."
                )
            k, v = item.split("=", 1)
            items.append((k.strip(), v))
    changes: dict[str, Any] = {}
    for key, value in items:
        if key not in types_:
            raise FlowfieldsError(
                f"--set: got unknown key {key!r} for {type(cfg).__module__}.Config, expected one "
                f"of: {_valid_keys(type(cfg))}."
            )
        changes[key] = parse_value(value, types_[key], key) if isinstance(value, str) else value
    return dataclasses.replace(cfg, **changes)


def config_from_dict(cfg_cls: type, data: Any, source: str = "config") -> Any:
    """Rebuild a ``Config`` from ``config.json`` content (unknown keys are ignored).

    Raises:
        FlowfieldsError: naming ``source`` when ``data`` is not a mapping of the fields or a
            value does not fit its field.
    """
    if not isinstance(data, Mapping):
        raise FlowfieldsError(
            f"{source}: got {type(data).__name__}, expected a JSON object of "
            f"{cfg_cls.__name__} fields."
        )
    types_ = config_types(cfg_cls)
    kwargs = {k: _coerce(v, types_[k], k) for k, v in data.items() if k in types_}
    for key, value in kwargs.items():
        if not _fits(value, types_[key]):
            raise FlowfieldsError(
                f"{source}: field {key!r} is {value!r}, expected a value of type "
                f"{_type_name(types_[key])}. The file is damaged or was edited by hand."
            )
    try:
        return cfg_cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise FlowfieldsError(
            f"{source}: does not describe a {cfg_cls.__module__}.Config ({err})."
        ) from None


def _fits(value: Any, tp: Any) -> bool:
    """Whether a JSON-loaded (and coerced) ``value`` is of the field type ``tp``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, str):
        return True
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        return any(_fits(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list):
        if not isinstance(value, (tuple, list)):
            return False
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
        return all(_fits(v, args[0]) for v in value) if args else True
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return True


def build_config(
    cfg_cls: type,
    *,
    quick: bool = False,
    overrides: Mapping[str, Any] | Sequence[str] = (),
    seed: int | None = None,
    device: str | None = None,
    base: Any = None,
) -> Any:
    """The preset (``quick()`` or ``full()``, or ``base``) of ``cfg_cls`` with overrides applied.

    ``seed`` and ``device`` (when given) are applied after ``overrides``; ``device`` is
    checked with :func:`flowfields.engine.resolve_device` (``"auto"`` is resolved).
    """
    from flowfields.engine.device import resolve_device

    check(
        dataclasses.is_dataclass(cfg_cls) and isinstance(cfg_cls, type),
        "Config",
        cfg_cls,
        "a Config dataclass",
    )
    if base is None:
        base = cfg_cls.quick() if quick else cfg_cls.full()  # type: ignore[attr-defined]
    cfg = apply_overrides(base, overrides)
    extra: dict[str, Any] = {}
    names = config_types(cfg_cls)
    if seed is not None:
        check(
            isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**32,
            "--seed",
            seed,
            "an integer in [0, 2**32)",
        )
        extra["seed"] = seed
    if device is not None:
        extra["device"] = device
    if extra:
        cfg = apply_overrides(cfg, {k: v for k, v in extra.items() if k in names})
    if "device" in names and isinstance(cfg.device, str):
        cfg = dataclasses.replace(cfg, device=str(resolve_device(cfg.device)))
    return cfg
