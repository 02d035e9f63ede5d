"""OpenAI chat-completions request → Ollama ``/api/chat`` payload (pure: validation included).

The native request is built from scratch: unknown OpenAI fields are never forwarded and unset
sampling options are never sent, so the Modelfile's defaults stay in force. Every field is
type-checked before use (``fields``), so a wrong type is a 400 naming it, never a 500.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest
from . import fields as f
from .models import requested_model, resolve_model
from .native import CHAT, DEFAULT_BOUNDS, Bounds, NativeCall, chat_payload
from .tool_choice import ToolPolicy

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
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
THINK_LEVELS = ("low", "medium", "high", "max")
DATA_URL = re.compile(r"data:(?:image/(?:png|jpeg|jpg|webp|gif)|)(?:;[^,;]*)*;base64,(.*)", re.S)
SAMPLING = (  # OpenAI name (= Ollama option name), lowest, highest
    ("temperature", 0, 2),
    ("top_p", 0, 1),
    ("frequency_penalty", -2, 2),
    ("presence_penalty", -2, 2),
    ("min_p", 0, 1),
    ("repeat_penalty", 0, 100),
)


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: the native call plus what the response side needs."""

    call: NativeCall
    include_usage: bool = False
    legacy_functions: bool = False  # answer with `function_call`, as OpenAI does for `functions`

    @property
    def payload(self) -> dict[str, Any]:
        return self.call.payload

    @property
    def public_model(self) -> str:
        return self.call.public_model

    @property
    def stream(self) -> bool:
        return self.call.stream


def decode_image(url: Any, param: str) -> str:
    """A ``data:image/...;base64,`` URL → the base64 payload Ollama wants."""
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{param}' must be a data URL", param=param)
    if url.startswith(("http://", "https://")):
        # Fetching URLs for clients would make the gateway an SSRF vector into the LAN.
        raise InvalidRequest(
            "image URLs are not supported; send the image inline as a base64 data URL",
            param=param,
        )
    m = DATA_URL.fullmatch(url)
    if not m:
        raise InvalidRequest("image must be a data:image/...;base64, URL", param=param)
    return check_base64(m.group(1).strip(), param)


def check_base64(data: str, param: str) -> str:
    try:
        base64.b64decode(data, validate=True)
    except ValueError:
        raise InvalidRequest("image data is not valid base64", param=param) from None
    return data


def _content(msg: Mapping[str, Any], where: str) -> tuple[str, list[str]]:
    """Message content → (text, images). Text parts are joined with newlines."""
    content = msg.get("content")
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    parts = f.array(content, f"{where}.content")
    texts: list[str] = []
    images: list[str] = []
    for j, part in enumerate(parts):
        pw = f"{where}.content[{j}]"
        f.obj(part, pw)
        kind = part.get("type")
        if kind in ("text", "input_text"):
            texts.append(f.text(part.get("text"), f"{pw}.text"))
        elif kind == "refusal":  # an earlier refusal, replayed: the model reads it as text
            texts.append(f.text(part.get("refusal"), f"{pw}.refusal"))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            images.append(decode_image(url, f"{pw}.image_url"))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported", param=f"{pw}.type")
    return "\n".join(texts), images


def parse_arguments(args: Any, param: str) -> dict[str, Any]:
    """Tool-call arguments (a JSON string, or an object) → an object; ``""`` is ``{}``."""
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except (ValueError, RecursionError):
            raise InvalidRequest(f"'{param}' is not valid JSON", param=param) from None
    elif args is None:
        args = {}
    if not isinstance(args, dict):
        raise InvalidRequest(f"'{param}' must be a JSON object", param=param)
    return args


def _tool_calls(calls: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    native: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for k, call in enumerate(f.array(calls, f"{where}.tool_calls")):
        cw = f"{where}.tool_calls[{k}]"
        fn = f.obj(f.obj(call, cw).get("function"), f"{cw}.function")
        name = f.text(fn.get("name"), f"{cw}.function.name")
        args = parse_arguments(fn.get("arguments"), f"{cw}.function.arguments")
        item: dict[str, Any] = {"function": {"index": k, "name": name, "arguments": args}}
        call_id = f.opt_text(call, "id", cw)
        if call_id:
            item["id"] = call_id
            names[call_id] = name
        native.append(item)
    return native, names


def _messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    native: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        f.obj(msg, where)
        role = msg.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of: {', '.join(ROLES)}", param=f"{where}.role"
            )
        text, images = _content(msg, where)
        legacy_call = msg.get("function_call") if role == "assistant" else None
        calls = f.opt_array(msg, "tool_calls", where) if role == "assistant" else []
        has_calls = bool(calls or legacy_call)
        refusal = f.opt_text(msg, "refusal", where) if role == "assistant" else None
        if msg.get("content") is None and not (has_calls or refusal):
            raise InvalidRequest(f"'{where}.content' is required", param=f"{where}.content")
        if refusal and not text:
            text = refusal
        # Chat templates render only system/user/assistant/tool: `developer` would be dropped.
        native_role = {"developer": "system", "function": "tool"}.get(role, role)
        out: dict[str, Any] = {"role": native_role, "content": text}
        if images:
            out["images"] = images
        if role == "assistant":
            if calls:
                out["tool_calls"], names = _tool_calls(calls, where)
                call_names.update(names)
            elif legacy_call is not None:
                fn = f.obj(legacy_call, f"{where}.function_call")
                name = f.text(fn.get("name"), f"{where}.function_call.name")
                args = parse_arguments(fn.get("arguments"), f"{where}.function_call.arguments")
                out["tool_calls"] = [{"function": {"index": 0, "name": name, "arguments": args}}]
            thinking = msg.get("reasoning_content") or msg.get("reasoning")
            if isinstance(thinking, str) and thinking:
                out["thinking"] = thinking
        elif role == "tool":
            call_id = f.opt_text(msg, "tool_call_id", where)
            name = f.opt_text(msg, "name", where) or call_names.get(call_id or "")
            if name:
                out["tool_name"] = name
            if call_id:
                out["tool_call_id"] = call_id
        elif role == "function":  # the legacy form of a tool result
            out["tool_name"] = f.text(msg.get("name"), f"{where}.name")
        native.append(out)
    return native


def function_tool(spec: Any, param: str) -> dict[str, Any]:
    """One function definition (``{name, description?, parameters?}``) → a native tool."""
    f.obj(spec, param)
    fn: dict[str, Any] = {"name": f.text(spec.get("name"), f"{param}.name")}
    if not fn["name"]:
        raise InvalidRequest(f"'{param}.name' must not be empty", param=f"{param}.name")
    description = f.opt_text(spec, "description", param)
    if description is not None:
        fn["description"] = description
    parameters = f.opt_obj(spec, "parameters", param)
    if parameters is not None:
        fn["parameters"] = parameters
    return {"type": "function", "function": fn}


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Any, bool]:
    """(native tools, the tool choice as sent, legacy form?)."""
    if body.get("functions") is not None and body.get("tools") is None:
        specs = f.array(body["functions"], "functions")
        tools = [function_tool(s, f"functions[{i}]") for i, s in enumerate(specs)]
        choice = body.get("function_call")
        if isinstance(choice, dict):
            choice = {"type": "function", "function": choice}
        return tools, choice, True
    tools = []
    for i, tool in enumerate(f.opt_array(body, "tools")):
        f.obj(tool, f"tools[{i}]")
        if tool.get("type", "function") != "function":
            raise InvalidRequest(
                f"'tools[{i}].type' {tool.get('type')!r} is not supported; only function tools",
                param=f"tools[{i}].type",
            )
        tools.append(function_tool(tool.get("function"), f"tools[{i}].function"))
    return tools, body.get("tool_choice"), False


def tool_selection(
    tools: list[dict[str, Any]], choice: Any, param: str, *, single: bool = False
) -> tuple[list[dict[str, Any]], ToolPolicy | None]:
    """OpenAI-style ``tool_choice`` → (tools to offer, the policy that honours the choice)."""
    names = [t["function"]["name"] for t in tools]
    if choice is None or choice == "auto" or not tools:
        if isinstance(choice, dict) and not tools:
            raise InvalidRequest(f"'{param}' names a tool but no tools were given", param=param)
        if choice in ("required", "any") and not tools:
            raise InvalidRequest(
                f"'{param}' is {choice!r}, which needs tools, but no tools were given",
                param=param,
            )
        return tools, ToolPolicy(single=True) if single and tools else None
    if choice == "none":
        return [], None
    if choice in ("required", "any"):
        return tools, ToolPolicy(forced=tuple(names), single=single)
    if isinstance(choice, dict):
        fn = choice.get("function") if isinstance(choice.get("function"), dict) else choice
        name = fn.get("name")
        if name not in names:
            raise InvalidRequest(f"'{param}' names unknown tool {name!r}", param=param)
        return tools, ToolPolicy(forced=(name,), single=single)
    raise InvalidRequest(f"'{param}' must be 'none', 'auto', 'required' or a function", param=param)


def think_from(body: Mapping[str, Any]) -> bool | str | None:
    if body.get("think") is not None:
        think = body["think"]
        if isinstance(think, bool) or (isinstance(think, str) and think in THINK_LEVELS):
            return think
        raise InvalidRequest("'think' must be true, false or low|medium|high|max", param="think")
    effort = f.opt_choice(body, "reasoning_effort", list(EFFORT_TO_THINK))
    reasoning = f.opt_obj(body, "reasoning")
    if reasoning is not None and reasoning.get("effort") is not None:
        effort = f.opt_choice(reasoning, "effort", list(EFFORT_TO_THINK), "reasoning")
    return None if effort is None else EFFORT_TO_THINK[effort]


def json_format(kind: Any, schema: Any, param: str) -> str | dict[str, Any] | None:
    """A response format → Ollama's ``format``: None (text), ``"json"`` or a schema."""
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        # The schema is optional in the API: without one, JSON mode is the honest reading.
        return "json" if schema is None else f.obj(schema, f"{param}.schema")
    raise InvalidRequest(f"'{param}.type' must be text, json_object or json_schema", param=param)


def _format(body: Mapping[str, Any]) -> str | dict[str, Any] | None:
    rf = f.opt_obj(body, "response_format")
    if rf is None:
        return None
    spec = f.opt_obj(rf, "json_schema", "response_format") or {}
    f.opt_text(spec, "name", "response_format.json_schema")  # the SDKs always send one
    return json_format(rf.get("type"), spec.get("schema"), "response_format")


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    n = f.opt_int(body, "n", 1)
    if n is not None and n != 1:
        raise InvalidRequest("only n=1 is supported by this server", param="n")
    if body.get("logit_bias"):
        raise InvalidRequest("'logit_bias' is not supported by this server", param="logit_bias")
    if f.opt_bool(body, "logprobs") or body.get("top_logprobs") is not None:
        param = "logprobs" if body.get("logprobs") else "top_logprobs"
        raise InvalidRequest(f"'{param}' is not supported by this server", param=param)
    modalities = body.get("modalities")
    if modalities is not None:
        items = f.array(modalities, "modalities")
        if any(m != "text" for m in items):
            raise InvalidRequest("only text output is supported by this server", param="modalities")
    if body.get("audio") is not None:
        raise InvalidRequest("audio output is not supported by this server", param="audio")
    if body.get("prediction") is not None:
        raise InvalidRequest(
            "predicted outputs are not supported by this server", param="prediction"
        )


def sampling_options(
    body: Mapping[str, Any],
    bounds: Bounds,
    sampling: tuple[tuple[str, float, float], ...] = SAMPLING,
    max_fields: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
) -> dict[str, Any]:
    """Ollama ``options`` from the OpenAI-style fields that are set: the first of
    ``max_fields`` present, the ``sampling`` numbers (range-checked), seed, top_k, stop."""
    options: dict[str, Any] = {}
    for name in max_fields:
        max_tokens = f.opt_int(body, name, 1)
        if max_tokens is not None:
            options["num_predict"] = max_tokens
            break
    for name, lo, hi in sampling:
        value = f.opt_number(body, name, lo, hi)
        if value is not None:
            options[name] = value
    seed = f.opt_int(body, "seed", *f.INT64)
    if seed is not None:
        options["seed"] = seed
    top_k = f.opt_int(body, "top_k", 0)
    if top_k is not None:
        options["top_k"] = top_k
    stop = f.stop_list(body.get("stop"), "stop", bounds.max_stop)
    if stop:
        options["stop"] = stop
    return options


def end_user(body: Mapping[str, Any], name: str = "user") -> str | None:
    user = f.opt_text(body, name)
    return user[:128] if user else None


def chat_request_to_ollama(
    body: Any, models: Mapping[str, str], bounds: Bounds = DEFAULT_BOUNDS
) -> ChatRequest:
    """Validate an OpenAI chat-completions body and build the native ``/api/chat`` call."""
    model = requested_model(body)
    _refuse_unsupported(body)
    messages = _messages(body.get("messages"))
    stream = bool(f.opt_bool(body, "stream"))
    stream_options = f.opt_obj(body, "stream_options") or {}
    include_usage = bool(f.opt_bool(stream_options, "include_usage", "stream_options"))
    options = sampling_options(body, bounds)
    tools, choice, legacy = _tools(body)
    single = f.opt_bool(body, "parallel_tool_calls") is False
    tools, policy = tool_selection(
        tools, choice, "function_call" if legacy else "tool_choice", single=single or legacy
    )
    payload = chat_payload(
        resolve_model(model, models),
        messages,
        tools=tools,
        policy=policy,
        fmt=_format(body),
        think=think_from(body),
        options=options,
    )
    call = NativeCall(CHAT, payload, model, stream, policy, user=end_user(body))
    return ChatRequest(call, include_usage, legacy)
