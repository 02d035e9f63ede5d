"""What every dialect builds: one call to Ollama's native API, and the facts of its lines.

Each dialect's request translator returns a ``NativeCall``; the blueprint sends it the same way
whatever the dialect, and measures it (prompt size, counts) with the functions here, so that a
limit means the same thing on every endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..errors import GatewayError, InvalidRequest
from .tool_choice import ToolPolicy, forced_format

CHAT, GENERATE = "/api/chat", "/api/generate"


@dataclass(frozen=True)
class NativeCall:
    """A validated request, ready for Ollama: the native payload and how to read the answer."""

    path: str  # CHAT or GENERATE
    payload: dict[str, Any]
    public_model: str
    stream: bool  # does the *client* want a stream (Ollama is always streamed from)
    tool_policy: ToolPolicy | None = None
    user: str | None = None  # the caller's end user, for the audit record
    prompt_param: str = "messages"  # the field a too-long prompt is blamed on
    relax_think: bool = False  # drop `think` if the model cannot think (instead of a 400)
    extras: dict[str, Any] = field(default_factory=dict)  # dialect-specific response settings


class Streamer(Protocol):
    """A dialect's streaming state machine: native lines in, the dialect's SSE events out."""

    named_events: ClassVar[bool]  # frame as `event: <type>` + `data:` (Anthropic, Responses)
    done_marker: ClassVar[bytes]  # sent after the last event (`data: [DONE]`), or b""
    done_after_error: ClassVar[bool]  # ... also after an error event

    def start(self) -> Iterator[dict[str, Any]]: ...  # events before the first native line
    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]: ...
    def fail(self, err: GatewayError) -> Iterator[dict[str, Any]]: ...


def chat_payload(
    model: str,
    messages: list[dict[str, Any]],
    *,
    tools: list[dict[str, Any]],
    policy: ToolPolicy | None,
    fmt: str | dict[str, Any] | None,
    think: bool | str | None,
    options: dict[str, Any],
) -> dict[str, Any]:
    """The ``/api/chat`` payload every chat-like dialect sends (always streamed from Ollama:
    one code path, and per-line timeouts work). Only what the client set is sent."""
    payload: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
    if tools:
        payload["tools"] = tools
    if policy is not None and policy.forced:
        fmt = forced_format(tools, policy.forced)  # the call is the answer: see tool_choice.py
    if fmt is not None:
        payload["format"] = fmt
    if think is not None:
        payload["think"] = think
    if options:
        payload["options"] = options
    return payload


def _chars(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return len(value)
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def prompt_chars(payload: Mapping[str, Any]) -> int:
    """Every character the model will read: messages (text, thinking, tool calls and results),
    tool definitions, the prompt and suffix of a completion, and the stop strings."""
    total = _chars(payload.get("prompt")) + _chars(payload.get("suffix"))
    inputs = payload.get("input")  # embeddings
    total += sum(map(len, inputs)) if isinstance(inputs, list) else _chars(inputs)
    total += _chars(payload.get("system"))
    for msg in payload.get("messages") or ():
        total += _chars(msg.get("content")) + _chars(msg.get("thinking"))
        total += _chars(msg.get("tool_calls")) + _chars(msg.get("tool_name"))
    total += _chars(payload.get("tools"))
    stop = (payload.get("options") or {}).get("stop") or ()
    total += sum(len(s) for s in stop)
    return total


@dataclass(frozen=True)
class Bounds:
    """The request-size limits (``request:`` settings) as the translators see them."""

    max_prompt_chars: int = 32768
    max_messages: int = 4096
    max_tools: int = 256
    max_stop: int = 16
    max_inputs: int = 2048


DEFAULT_BOUNDS = Bounds()


def check_bounds(call: NativeCall, bounds: Bounds) -> int:
    """Refuse a request the limits do not allow; return its prompt size in characters."""
    payload = call.payload
    messages = payload.get("messages") or ()
    if len(messages) > bounds.max_messages:
        raise InvalidRequest(
            f"too many messages ({len(messages)}); this server accepts at most "
            f"{bounds.max_messages}",
            param=call.prompt_param,
        )
    tools = payload.get("tools") or ()
    if len(tools) > bounds.max_tools:
        raise InvalidRequest(
            f"too many tools ({len(tools)}); this server accepts at most {bounds.max_tools}",
            param="tools",
        )
    chars = prompt_chars(payload)
    if chars > bounds.max_prompt_chars:
        raise context_too_long(chars, bounds.max_prompt_chars, call.prompt_param)
    return chars


def context_too_long(chars: int, limit: int, param: str) -> InvalidRequest:
    # OpenAI's wording: litellm and LangChain recognise it as a context-window error.
    return InvalidRequest(
        f"This model's maximum context length is {limit} characters on this server; "
        f"your request has {chars} characters. Please reduce the length of the input.",
        param=param,
        code="context_length_exceeded",
    )


def usage_counts(final: Mapping[str, Any]) -> tuple[int, int]:
    """(prompt tokens, output tokens) from a native ``done`` line (thinking included)."""
    prompt, output = final.get("prompt_eval_count"), final.get("eval_count")
    return (
        prompt if isinstance(prompt, int) and prompt >= 0 else 0,
        output if isinstance(output, int) and output >= 0 else 0,
    )


def line_parts(line: Mapping[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(thinking, content, tool calls) of a native line, whatever Ollama left out or nulled."""
    msg = line.get("message")
    if not isinstance(msg, dict):  # /api/generate lines carry text at the top level
        msg = line
        content = msg.get("response")
    else:
        content = msg.get("content")
    thinking = msg.get("thinking")
    calls = msg.get("tool_calls")
    return (
        thinking if isinstance(thinking, str) else "",
        content if isinstance(content, str) else "",
        [c for c in calls if isinstance(c, dict)] if isinstance(calls, list) else [],
    )


def json_args(call: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """(name, arguments as an object) of a native tool call."""
    fn = call.get("function")
    fn = fn if isinstance(fn, dict) else {}
    name = fn.get("name")
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            args = {"_raw": args}
    return (name if isinstance(name, str) else "", args if isinstance(args, dict) else {})


def compact(obj: Any) -> str:
    """JSON as clients expect arguments: compact, key order kept, non-ASCII as is."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
