"""Ollama's native NDJSON lines → OpenAI chat completions (streamed chunks, or one answer).

Ollama always streams to us; ``ChatStream`` turns each line into OpenAI chunks, and
``aggregate_chat`` folds the same lines into one ``chat.completion``.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UpstreamError

_ALNUM = string.ascii_lowercase + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _openai_tool_call(native: Mapping[str, Any], index: int) -> dict[str, Any]:
    fn = native.get("function") or {}
    args = fn.get("arguments", {})
    return {
        "index": index,
        "id": native.get("id") or new_call_id(),
        "type": "function",
        "function": {
            "name": fn.get("name", ""),
            "arguments": args
            if isinstance(args, str)
            else json.dumps(args, ensure_ascii=False, separators=(",", ":")),
        },
    }


def finish_reason(done_reason: Any, saw_tool_call: bool) -> str:
    """``length`` wins; a tool call turns ``stop`` into ``tool_calls``; else ``stop``."""
    if done_reason == "length":
        return "length"
    return "tool_calls" if saw_tool_call else "stop"


def usage_from(final: Mapping[str, Any]) -> dict[str, int]:
    prompt = int(final.get("prompt_eval_count") or 0)
    completion = int(final.get("eval_count") or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def check_line(line: Mapping[str, Any]) -> None:
    """A native ``{"error": ...}`` line ends the stream with that error."""
    if "error" in line:
        raise UpstreamError(
            f"the model failed while generating: {line['error']}", code="upstream_error"
        )


@dataclass
class ChatStream:
    """Native NDJSON lines → OpenAI ``chat.completion.chunk`` dicts, one instance per stream."""

    completion_id: str
    created: int
    model: str
    include_usage: bool = False
    sent_role: bool = False
    tool_calls: int = 0
    usage: dict[str, int] | None = None
    finish: str | None = None
    output_lines: int = 0  # lines with output: ≈ tokens seen, for an answer cut short

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self.sent_role:
            delta = {"role": "assistant", **delta}
            delta.setdefault("content", "")
            self.sent_role = True
        return {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        check_line(line)
        msg = line.get("message") or {}
        thinking, content = msg.get("thinking") or "", msg.get("content") or ""
        calls = msg.get("tool_calls") or []
        if thinking or content or calls:
            self.output_lines += 1
        if thinking:
            yield self._chunk({"reasoning_content": thinking})
        if content or calls:
            delta: dict[str, Any] = {"content": content} if content else {}
            if calls:
                delta["tool_calls"] = [
                    _openai_tool_call(c, self.tool_calls + k) for k, c in enumerate(calls)
                ]
                self.tool_calls += len(calls)
            yield self._chunk(delta)
        if line.get("done"):
            if not self.sent_role:
                yield self._chunk({})  # an empty completion still announces the role
            self.finish = finish_reason(line.get("done_reason"), self.tool_calls > 0)
            self.usage = usage_from(line)
            yield self._chunk({}, self.finish)
            if self.include_usage:
                yield {
                    "id": self.completion_id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": self.usage,
                }


def aggregate_chat(
    lines: Iterable[Mapping[str, Any]], *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    """Fold native stream lines into one OpenAI ``chat.completion``."""
    content: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    final: Mapping[str, Any] | None = None
    for line in lines:
        check_line(line)
        msg = line.get("message") or {}
        content.append(msg.get("content") or "")
        thinking.append(msg.get("thinking") or "")
        for c in msg.get("tool_calls") or []:
            calls.append(_openai_tool_call(c, len(calls)))
        if line.get("done"):
            final = line
            break
    if final is None:
        raise UpstreamError("the model's answer ended before it was complete")
    text = "".join(content)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = [{k: v for k, v in c.items() if k != "index"} for c in calls]
    if any(thinking):
        message["reasoning_content"] = "".join(thinking)
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(final.get("done_reason"), bool(calls)),
            }
        ],
        "usage": usage_from(final),
    }
