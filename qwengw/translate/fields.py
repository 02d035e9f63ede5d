"""Typed reads of request fields: every value is checked before it is used.

A wrong type, a non-finite number or an out-of-range value is a 400 that names the field, in
every dialect. Nothing here knows a dialect: callers pass the field's path for the message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import InvalidRequest

INT32_MAX = 2**31 - 1
INT64 = (-(2**63), 2**63 - 1)  # Ollama reads seeds and counts into Go ints


def where(path: str, name: str | int) -> str:
    """``messages[2]`` + ``content`` → ``messages[2].content``."""
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "an array", str: "a string"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def bad(param: str, expected: str, value: Any = ...) -> InvalidRequest:
    got = "" if value is ... else f", got {kind(value)}"
    return InvalidRequest(f"'{param}' must be {expected}{got}", param=param)


def obj(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad(param, "an object", value)
    return value


def array(value: Any, param: str, max_items: int | None = None) -> list[Any]:
    if not isinstance(value, list):
        raise bad(param, "an array", value)
    if max_items is not None and len(value) > max_items:
        raise InvalidRequest(f"'{param}' has {len(value)} items; at most {max_items}", param=param)
    return value


def text(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise bad(param, "a string", value)
    return value


def opt_array(body: Mapping[str, Any], name: str, path: str = "") -> list[Any]:
    """An optional array field: absent or null is empty; anything else must be an array."""
    value = body.get(name)
    return [] if value is None else array(value, where(path, name))


def opt_obj(body: Mapping[str, Any], name: str, path: str = "") -> dict[str, Any] | None:
    value = body.get(name)
    return None if value is None else obj(value, where(path, name))


def opt_text(body: Mapping[str, Any], name: str, path: str = "") -> str | None:
    value = body.get(name)
    return None if value is None else text(value, where(path, name))


def opt_bool(body: Mapping[str, Any], name: str, path: str = "") -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad(where(path, name), "true or false", value)
    return value


def opt_number(
    body: Mapping[str, Any], name: str, lo: float | None, hi: float | None, path: str = ""
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    param = where(path, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(param, "a number", value)
    if isinstance(value, float) and not math.isfinite(value):
        raise bad(param, "a finite number")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise bad(param, f"between {lo} and {hi}")
    return value


def opt_int(
    body: Mapping[str, Any],
    name: str,
    lo: int | None = None,
    hi: int | None = INT32_MAX,
    path: str = "",
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    param = where(path, name)
    if isinstance(value, float) and value.is_integer() and math.isfinite(value):
        value = int(value)  # 5.0 is an integer in JSON Schema, and clients send it
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(param, "an integer", value)
    if lo is not None and value < lo:
        raise bad(param, f"at least {lo}")
    if hi is not None and value > hi:
        raise bad(param, f"at most {hi}")
    return value


def opt_choice(body: Mapping[str, Any], name: str, choices: Sequence[str], path: str = "") -> Any:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        raise InvalidRequest(
            f"'{where(path, name)}' must be one of: {', '.join(map(str, choices))}",
            param=where(path, name),
        )
    return value


def stop_list(value: Any, param: str, max_items: int) -> list[str] | None:
    """A stop string or a list of them (OpenAI and Anthropic both allow either here)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value] if value else None
    items = array(value, param, max_items)
    for i, s in enumerate(items):
        text(s, where(param, i))
    return [s for s in items if s] or None
