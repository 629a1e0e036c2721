"""Params overrides as DVC's ``-S`` takes them: nested mappings flattened to dotted keys and back,
values in Hydra's override grammar, and one mapping merged over another (presets and smoke runs)."""

from __future__ import annotations

import json
from typing import Any


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{a: {b: 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are values."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def hydra_value(value: Any) -> str:
    """A value in the override grammar DVC's ``-S`` uses (Hydra): JSON-like, strings unquoted when plain."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value.replace("_", "").replace("-", "").isalnum() else json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def merge(base: dict, preset: dict) -> dict:
    out = dict(base)
    for key, value in preset.items():
        out[key] = (
            merge(base[key], value) if isinstance(value, dict) and value and isinstance(base.get(key), dict) else value
        )
    return out


def unflatten(flat: dict[str, Any]) -> dict:
    """``{"a.b": 1}`` -> ``{a: {b: 1}}``."""
    out: dict = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return out
