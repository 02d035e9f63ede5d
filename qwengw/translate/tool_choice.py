"""Tool choices Ollama cannot express, honoured in the gateway (pure: native lines in and out).

Ollama has no ``tool_choice``. A *forced* call (OpenAI ``"required"`` or a named function,
Anthropic ``any`` / ``tool``, Responses ``required``) is honoured by constraining the generation
with Ollama's ``format``: a JSON schema that only admits ``{"name": <an offered tool>,
"arguments": <that tool's parameters>}``. The model's JSON answer is then turned back into a
native tool call on the ``done`` line, so every dialect's translator sees an ordinary tool call.
The cost: in that turn the model can write no free text (thinking still streams as it comes).

A *single* call (``parallel_tool_calls: false``, ``disable_parallel_tool_use``) keeps only the
first call the model made.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolPolicy:
    forced: tuple[str, ...] = ()  # the model must call one of these; () = not forced
    single: bool = False  # keep only the first call

    @property
    def active(self) -> bool:
        return bool(self.forced) or self.single


def _rebase_refs(schema: Any, base: str) -> Any:
    """Point every local ``$ref`` ("#", "#/$defs/X") at the schema's new home ``base``."""
    if isinstance(schema, dict):
        out = {}
        for key, value in schema.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#"):
                out[key] = base + value[1:]
            else:
                out[key] = _rebase_refs(value, base)
        return out
    if isinstance(schema, list):
        return [_rebase_refs(v, base) for v in schema]
    return schema


def _has_ref(schema: Any) -> bool:
    if isinstance(schema, dict):
        return "$ref" in schema or any(_has_ref(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_ref(v) for v in schema)
    return False


def forced_format(tools: Sequence[Mapping[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """The ``format`` schema that admits exactly one call to one of ``names``.

    ``tools`` are native (OpenAI-style) function tools. Parameters that use ``$ref`` (pydantic
    models with ``$defs``) move under the root's ``$defs`` with their references rebased, so
    the grammar Ollama builds from the schema resolves them.
    """
    by_name = {t["function"]["name"]: t["function"] for t in tools}
    defs: dict[str, Any] = {}
    variants = []
    for i, name in enumerate(names):
        params = by_name[name].get("parameters")
        if not isinstance(params, dict) or not params:
            params = {"type": "object"}
        params = copy.deepcopy(params)
        params.pop("$schema", None)
        if _has_ref(params):
            key = f"tool{i}"
            defs[key] = _rebase_refs(params, f"#/$defs/{key}")
            params = {"$ref": f"#/$defs/{key}"}
        variants.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": params},
                "required": ["name", "arguments"],
            }
        )
    schema: dict[str, Any] = variants[0] if len(variants) == 1 else {"oneOf": variants}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _decode_call(text: str, names: Sequence[str]) -> dict[str, Any] | None:
    """The model's constrained JSON → a native tool call, or None if it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("name") not in names:
        return None
    args = data.get("arguments", {})
    if isinstance(args, str):  # some models double-encode
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return {"function": {"name": data["name"], "arguments": args}}


def _call_name(call: Any) -> Any:
    function = call.get("function") if isinstance(call, dict) else None
    return function.get("name") if isinstance(function, dict) else None


def apply_tool_policy(
    lines: Iterable[Mapping[str, Any]], policy: ToolPolicy | None
) -> Iterator[Mapping[str, Any]]:
    """Native lines with the policy applied; unchanged when there is none."""
    if policy is None or not policy.active:
        yield from lines
        return
    buffered: list[str] = []
    calls_seen = 0
    for line in lines:
        msg = line.get("message")
        msg = dict(msg) if isinstance(msg, dict) else {}
        if not policy.forced and not msg.get("tool_calls"):
            yield line
            continue
        calls = msg.get("tool_calls") or []
        if policy.forced:
            # A native call made anyway (format is a constraint Ollama applies to content) must
            # still name a tool the client allowed.
            calls = [c for c in calls if _call_name(c) in policy.forced]
        if policy.single:
            calls = calls[: max(0, 1 - calls_seen)]
        calls_seen += len(calls)
        if policy.forced:
            buffered.append(msg.get("content") or "")
            msg["content"] = ""
            if line.get("done") and not calls_seen:
                text = "".join(buffered)
                call = _decode_call(text, policy.forced)
                if call is not None:
                    calls, calls_seen = [call], 1
                else:
                    msg["content"] = text  # not a call (e.g. cut by max tokens): say what came
        if calls:
            msg["tool_calls"] = calls
        else:
            msg.pop("tool_calls", None)
        yield {**line, "message": msg}
