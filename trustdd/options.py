"""The one way a mapping from params.yaml becomes a typed object, and the protocol of every plug-in.

Every section of params.yaml and every plug-in's options (a method's ``distill.<name>``, a corruption's
``outliers.options.<name>``, a score's ``evaluate.score_options.<name>``) is a dataclass; :func:`build`
makes one from a mapping, refusing unknown keys and values of the wrong type with a :class:`ParamsError`
that names the key, the value and what is valid. Range rules are the object's own: a plug-in's ``check``.

A plug-in is a dataclass registered by name in its kind's :class:`~trustdd.registry.Registry`, subclassing
:class:`Plugin`: its fields are its options (their defaults are the defaults), ``check(**context)`` refuses
values out of range, and :func:`make` builds one by name and checks it. Only fields made with ``init=True``
are options: a plug-in keeps its state (e.g. a fitted feature bank) in ``field(init=False)``.
"""

from __future__ import annotations

import dataclasses
import re
import types
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from trustdd.registry import Registry


class ParamsError(ValueError):
    """A malformed or invalid value in params.yaml (the message starts with ``params:`` and names the key)."""


def invalid(key: str, value: Any, expected: str) -> ParamsError:
    return ParamsError(f"params: {key}: invalid value {value!r}; expected {expected}")


def at_least(key: str, value: int | float, low: int | float) -> None:
    if value < low:
        raise invalid(key, value, f"a value >= {low}")


def as_params_error(err: ValueError) -> ParamsError:
    """A plug-in's ValueError (which names its key) as the ParamsError the params check raises."""
    return err if isinstance(err, ParamsError) else ParamsError(f"params: {err}")


# 1e-07 is a float in YAML 1.2 (what DVC writes with `-S`) but a string to PyYAML, which reads YAML 1.1.
_YAML12_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if origin in (Union, types.UnionType):
        if type(None) in args and value is None:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(value, option, key)
            except ParamsError:
                continue
        expected = " or ".join(_SCALARS.get(a, getattr(a, "__name__", str(a))) for a in args if a is not type(None))
        raise invalid(key, value, expected + (" (or null)" if type(None) in args else ""))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise invalid(key, value, "a list")
        return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, str) and _YAML12_FLOAT.fullmatch(value):
        return float(value)
    if hint in _SCALARS:
        ok = isinstance(value, hint) if hint in (bool, str) else (
            not isinstance(value, bool) and isinstance(value, int if hint is int else (int, float))
        )
        if not ok:
            raise invalid(key, value, _SCALARS[hint])
        return hint(value)
    if hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise invalid(key, value, "a mapping")
        return value
    raise TypeError(f"no converter for {hint!r} at {key}")


def option_names(cls: type) -> list[str]:
    """The keys a dataclass takes from params.yaml: its fields made with ``init=True``."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def build(cls: type, data: Any, key: str = "") -> Any:
    """``cls(**data)`` with every value converted to its field's type; ``key`` is where ``data`` sits in
    params.yaml (``""`` for the whole file). Missing keys take the dataclass's defaults."""
    if data is None:
        data = {}
    names = option_names(cls)
    if not isinstance(data, dict):
        raise invalid(key or "params.yaml", data, f"a mapping of {', '.join(names) or 'no options'}")
    unknown = sorted(set(data) - set(names), key=str)
    if unknown:
        where = f"{key}." if key else ""
        raise ParamsError(
            f"params: unknown key(s) {', '.join(where + str(k) for k in unknown)}; valid keys: {', '.join(names) or 'none'}"
        )
    hints = get_type_hints(cls)
    values = {k: _convert(v, hints[k], f"{key}.{k}" if key else k) for k, v in data.items()}
    try:
        return cls(**values)
    except ValueError as err:  # a check run on construction (``__post_init__``), which names its key
        raise as_params_error(err) from None


class Plugin:
    """A registered, dataclass plug-in (a distillation method, a corruption, an OOD score).

    ``options_key`` is where its options live in params.yaml, with ``{name}`` for its registered name;
    ``check(**context)`` raises ValueError naming ``<options_key>.<option>``, the value and what is valid.
    It runs when the plug-in is made (no context) and again wherever more is known (the images' shape,
    the number of training images, the ipc): a plug-in takes the context it needs as keyword arguments
    with defaults of None, and ignores the rest."""

    options_key: ClassVar[str] = ""

    def check(self, **context: Any) -> None:
        """Nothing to check (a plug-in without options, or whose every value is valid)."""


def check_each(registry: Registry, options: dict, key: str, kind: str) -> None:
    """``options`` (``key`` in params.yaml, e.g. ``outliers.options``) maps names of ``registry`` to their
    options: each name must be a registered ``kind`` and each plug-in's options valid (checked without
    context; the params check runs them again with it)."""
    for name, values in options.items():
        if name not in registry:
            raise ParamsError(f"params: {key}: unknown {kind} {name!r}; valid: {', '.join(registry.names())}")
        make(registry, name, values)


def make(registry: Registry, name: str, options: dict | None = None, **context: Any) -> Any:
    """The plug-in ``name`` of ``registry`` with ``options`` (types checked by :func:`build`, ranges by its
    ``check``, given ``context``). Raises ParamsError naming the key, the value and what is valid."""
    cls = registry.get(name)
    plugin = build(cls, options, cls.options_key.format(name=name))
    try:
        plugin.check(**context)
    except ValueError as err:
        raise as_params_error(err) from None
    return plugin
