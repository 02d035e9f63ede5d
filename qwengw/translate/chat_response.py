"""Ollama's native NDJSON lines → OpenAI chat completions (streamed chunks, or one answer).

Ollama always streams to us; ``ChatStream`` turns each line into OpenAI chunks, and
``aggregate_chat`` folds the same lines into one ``chat.completion``. Fields the SDKs type as
always present (``refusal``, ``logprobs``, ``system_fingerprint``, ``usage`` on chunks when usage
was asked for) are sent as ``null`` rather than left out.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import GatewayError, UpstreamError
from .chat_request import ChatRequest
from .native import compact, json_args, line_parts, usage_counts

_ALNUM = string.ascii_lowercase + string.digits


def random_id(prefix: str, n: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(n))


def new_call_id() -> str:
    return random_id("call_")


def _openai_tool_call(native: Mapping[str, Any], index: int) -> dict[str, Any]:
    name, args = json_args(native)
    call_id = native.get("id")
    return {
        "index": index,
        "id": call_id if isinstance(call_id, str) and call_id else new_call_id(),
        "type": "function",
        "function": {"name": name, "arguments": compact(args)},
    }


def finish_reason(done_reason: Any, saw_tool_call: bool, legacy: bool = False) -> str:
    """``length`` wins; a tool call turns ``stop`` into ``tool_calls``; else ``stop``."""
    if done_reason == "length":
        return "length"
    if saw_tool_call:
        return "function_call" if legacy else "tool_calls"
    return "stop"


def usage_from(final: Mapping[str, Any]) -> dict[str, int]:
    prompt, completion = usage_counts(final)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def check_line(line: Mapping[str, Any]) -> None:
    """A native ``{"error": ...}`` line ends the stream with that error."""
    if "error" in line:
        raise UpstreamError("the model failed while generating", code="upstream_error")


@dataclass
class ChatStream:
    """Native NDJSON lines → OpenAI ``chat.completion.chunk`` dicts, one instance per stream."""

    completion_id: str
    created: int
    model: str
    include_usage: bool = False
    legacy_functions: bool = False
    sent_role: bool = False
    tool_calls: int = 0
    usage: dict[str, int] | None = None
    finish: str | None = None

    named_events: ClassVar[bool] = False  # SSE `data:` lines only
    done_marker: ClassVar[bytes] = b"data: [DONE]\n\n"
    done_after_error: ClassVar[bool] = True

    @classmethod
    def for_request(cls, req: ChatRequest, completion_id: str, created: int) -> ChatStream:
        return cls(
            completion_id, created, req.public_model, req.include_usage, req.legacy_functions
        )

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.sent_role:
            delta = {"role": "assistant", **delta}
            if "tool_calls" not in delta and "function_call" not in delta:
                delta.setdefault("content", "")
            self.sent_role = True
        chunk = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def _calls_delta(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        if self.legacy_functions:
            name, args = json_args(calls[0])
            self.tool_calls += 1
            return {"content": None, "function_call": {"name": name, "arguments": compact(args)}}
        delta = {
            "content": None,
            "tool_calls": [_openai_tool_call(c, self.tool_calls + k) for k, c in enumerate(calls)],
        }
        self.tool_calls += len(calls)
        return delta

    def start(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        check_line(line)
        thinking, content, calls = line_parts(line)
        if thinking:
            yield self._chunk({"reasoning_content": thinking})
        if content:
            yield self._chunk({"content": content})
        if calls:
            yield self._chunk(self._calls_delta(calls))
        if line.get("done"):
            if not self.sent_role:
                yield self._chunk({})  # an empty completion still announces the role
            self.finish = finish_reason(
                line.get("done_reason"), self.tool_calls > 0, self.legacy_functions
            )
            self.usage = usage_from(line)
            yield self._chunk({}, self.finish)
            if self.include_usage:
                yield {
                    "id": self.completion_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": self.usage,
                }

    def fail(self, err: GatewayError) -> Iterator[dict[str, Any]]:
        """Headers are gone already: the error travels as one SSE event (then ``[DONE]``)."""
        yield err.body()


def aggregate_chat(
    lines: Iterable[Mapping[str, Any]],
    *,
    completion_id: str,
    created: int,
    model: str,
    legacy_functions: bool = False,
) -> dict[str, Any]:
    """Fold native stream lines into one OpenAI ``chat.completion``."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    final: Mapping[str, Any] | None = None
    for line in lines:
        check_line(line)
        think, text, native_calls = line_parts(line)
        content.append(text)
        thinking.append(think)
        for c in native_calls:
            calls.append(_openai_tool_call(c, len(calls)))
        if line.get("done"):
            final = line
            break
    if final is None:
        raise UpstreamError("the model's answer ended before it was complete")
    text = "".join(content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls and legacy_functions:
        message["function_call"] = calls[0]["function"]
    elif calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    if any(thinking):
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(
                    final.get("done_reason"), bool(calls), legacy_functions
                ),
            }
        ],
        "usage": usage_from(final),
    }
