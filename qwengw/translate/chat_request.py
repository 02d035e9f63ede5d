"""OpenAI chat-completions request → Ollama ``/api/chat`` payload (pure: validation included).

The native request is built from scratch: unknown OpenAI fields are never forwarded and unset
sampling options are never sent, so the Modelfile's defaults stay in force.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from .models import requested_model, resolve_model

ROLES = {"system", "developer", "user", "assistant", "tool"}
# What `reasoning_effort` means natively (Ollama's own table, openai/openai.go).
EFFORT_TO_THINK: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
    "xhigh": "max",
    "ultra": "max",
}
THINK_LEVELS = {"low", "medium", "high", "max"}
DATA_URL = re.compile(r"data:(?:image/(?:png|jpeg|jpg|webp|gif)|)(?:;[^,;]*)*;base64,(.*)", re.S)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: the native payload plus what the response side needs."""

    payload: dict[str, Any]
    public_model: str
    stream: bool
    include_usage: bool
    prompt_chars: int


def _number(body: Mapping[str, Any], name: str, lo: float | None, hi: float | None) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"'{name}' must be a number", param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidRequest(f"'{name}' must be between {lo} and {hi}", param=name)
    return value


def _integer(body: Mapping[str, Any], name: str, minimum: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"'{name}' must be an integer", param=name)
    if minimum is not None and value < minimum:
        raise InvalidRequest(f"'{name}' must be at least {minimum}", param=name)
    return value


def _image_from_part(part: Mapping[str, Any], where: str) -> str:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest(
            f"'{where}.image_url.url' must be a data URL", param=f"{where}.image_url"
        )
    if url.startswith(("http://", "https://")):
        # Fetching URLs for clients would make the gateway an SSRF vector into the LAN.
        raise InvalidRequest(
            "image URLs are not supported; send the image inline as a base64 data URL",
            param=f"{where}.image_url",
        )
    m = DATA_URL.fullmatch(url)
    if not m:
        raise InvalidRequest(
            "image must be a data:image/...;base64, URL", param=f"{where}.image_url"
        )
    data = m.group(1).strip()
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidRequest("image data is not valid base64", param=f"{where}.image_url") from None
    return data


def _content(msg: Mapping[str, Any], where: str) -> tuple[str, list[str]]:
    """Message content → (text, images). Text parts are joined with newlines."""
    content = msg.get("content")
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    if not isinstance(content, list):
        raise InvalidRequest(
            f"'{where}.content' must be a string or an array of parts", param=f"{where}.content"
        )
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(content):
        pw = f"{where}.content[{j}]"
        if not isinstance(part, dict):
            raise InvalidRequest(f"'{pw}' must be an object", param=pw)
        kind = part.get("type")
        if kind == "text" or kind == "input_text":
            text = part.get("text")
            if not isinstance(text, str):
                raise InvalidRequest(f"'{pw}.text' must be a string", param=f"{pw}.text")
            texts.append(text)
        elif kind == "image_url":
            images.append(_image_from_part(part, pw))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported", param=f"{pw}.type")
    return "\n".join(texts), images


def _tool_calls_to_ollama(calls: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    if not isinstance(calls, list):
        raise InvalidRequest(f"'{where}.tool_calls' must be an array", param=f"{where}.tool_calls")
    native: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for k, call in enumerate(calls):
        cw = f"{where}.tool_calls[{k}]"
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest(f"'{cw}.function.name' is required", param=f"{cw}.function")
        args = fn.get("arguments", "")
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except ValueError:
                raise InvalidRequest(
                    f"'{cw}.function.arguments' is not valid JSON", param=f"{cw}.function.arguments"
                ) from None
        if not isinstance(args, dict):
            raise InvalidRequest(
                f"'{cw}.function.arguments' must be a JSON object", param=f"{cw}.function.arguments"
            )
        item: dict[str, Any] = {"function": {"index": k, "name": fn["name"], "arguments": args}}
        if isinstance(call.get("id"), str):
            item["id"] = call["id"]
            names[call["id"]] = fn["name"]
        native.append(item)
    return native, names


def _messages_to_ollama(messages: Any) -> tuple[list[dict[str, Any]], int]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    native: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    chars = 0
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise InvalidRequest(f"'{where}' must be an object", param=where)
        role = msg.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of {sorted(ROLES)}", param=f"{where}.role"
            )
        text, images = _content(msg, where)
        if msg.get("content") is None and not (role == "assistant" and msg.get("tool_calls")):
            raise InvalidRequest(f"'{where}.content' is required", param=f"{where}.content")
        chars += len(text)
        # Chat templates render only system/user/assistant/tool: `developer` would be dropped.
        out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
        if images:
            out["images"] = images
        if role == "assistant":
            if msg.get("tool_calls"):
                out["tool_calls"], names = _tool_calls_to_ollama(msg["tool_calls"], where)
                call_names.update(names)
            thinking = msg.get("reasoning_content") or msg.get("reasoning")
            if isinstance(thinking, str) and thinking:
                out["thinking"] = thinking
        if role == "tool":
            call_id = msg.get("tool_call_id")
            name = msg.get("name") or (
                call_names.get(call_id) if isinstance(call_id, str) else None
            )
            if isinstance(name, str):
                out["tool_name"] = name
            if isinstance(call_id, str):
                out["tool_call_id"] = call_id
        native.append(out)
    return native, chars


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type", "function") != "function"
            or not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
        ):
            raise InvalidRequest(
                f"'tools[{i}]' must be a function with a name", param=f"tools[{i}]"
            )
    if choice in (None, "auto"):
        return tools or None
    if choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        # Ollama cannot force a call; offering only the named tool is the closest it can honour.
        name = choice["function"].get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise InvalidRequest(f"tool_choice names unknown tool {name!r}", param="tool_choice")
        return chosen
    raise InvalidRequest(
        "tool_choice 'required' cannot be honoured by Ollama; use 'auto'", param="tool_choice"
    )


def _think(body: Mapping[str, Any]) -> bool | str | None:
    if "think" in body and body["think"] is not None:
        think = body["think"]
        if isinstance(think, bool) or think in THINK_LEVELS:
            return think
        raise InvalidRequest("'think' must be true, false or low|medium|high|max", param="think")
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        effort = reasoning["effort"]
    if effort is None:
        return None
    if effort not in EFFORT_TO_THINK:
        raise InvalidRequest(
            f"'reasoning_effort' must be one of {sorted(EFFORT_TO_THINK)}", param="reasoning_effort"
        )
    return EFFORT_TO_THINK[effort]


def _format(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    rf = body.get("response_format")
    if rf is None:
        return None
    kind = rf.get("type") if isinstance(rf, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        schema = rf.get("json_schema")
        schema = schema.get("schema") if isinstance(schema, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "'response_format.json_schema.schema' must be an object", param="response_format"
            )
        return schema
    raise InvalidRequest(
        "'response_format.type' must be text, json_object or json_schema", param="response_format"
    )


def _unsupported(body: Mapping[str, Any]) -> None:
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("only n=1 is supported by this server", param="n")
    if body.get("logit_bias"):
        raise InvalidRequest("'logit_bias' is not supported by this server", param="logit_bias")
    if body.get("audio") is not None or "audio" in (body.get("modalities") or []):
        raise InvalidRequest("audio output is not supported by this server", param="modalities")
    if body.get("logprobs") or body.get("top_logprobs"):
        raise InvalidRequest("'logprobs' is not supported by this server", param="logprobs")


def chat_request_to_ollama(body: Any, models: Mapping[str, str]) -> ChatRequest:
    """Validate an OpenAI chat-completions body and build the native ``/api/chat`` payload."""
    model = requested_model(body)
    _unsupported(body)
    messages, chars = _messages_to_ollama(body.get("messages"))
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false", param="stream")
    stream_options = body.get("stream_options")
    if stream_options is not None and not isinstance(stream_options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    include_usage = bool(stream_options and stream_options.get("include_usage"))

    options: dict[str, Any] = {}
    max_tokens = _integer(body, "max_completion_tokens", 1)
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens", 1)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for name, lo, hi in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("frequency_penalty", -2, 2),
        ("presence_penalty", -2, 2),
        ("min_p", 0, 1),
        ("repeat_penalty", 0, None),
    ):
        value = _number(body, name, lo, hi)
        if value is not None:
            options[name] = value
    for name in ("seed", "top_k"):
        value = _integer(body, name)
        if value is not None:
            options[name] = value
    stop = body.get("stop")
    if isinstance(stop, str):
        options["stop"] = [stop]
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if stop:
            options["stop"] = stop
    elif stop is not None:
        raise InvalidRequest("'stop' must be a string or an array of strings", param="stop")

    payload: dict[str, Any] = {
        "model": resolve_model(model, models),
        "messages": messages,
        "stream": True,  # always stream upstream: one code path, and per-line timeouts work
    }
    tools = _tools(body)
    if tools:
        payload["tools"] = tools
    fmt = _format(body)
    if fmt is not None:
        payload["format"] = fmt
    think = _think(body)
    if think is not None:
        payload["think"] = think
    if options:
        payload["options"] = options
    return ChatRequest(payload, model, stream, include_usage, chars)
