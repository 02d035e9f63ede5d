"""Anthropic Messages (``/v1/messages``) ⇄ Ollama ``/api/chat`` (pure).

Request: system (string or text blocks), messages of string or blocks (text, image, document,
tool_use, tool_result, thinking) → one native conversation; ``tool_choice`` through the shared
tool policy; ``thinking`` → ``think``. Response: ``MessagesStream`` turns native lines into
Anthropic's event sequence (a new block index per block, closed before the next opens), and
``aggregate_message`` folds the same events into one ``Message``, so both always agree.

Stop sequences are matched here, not by Ollama: Ollama reports a matched stop sequence as a
plain ``stop``, and Anthropic clients are told which sequence matched (``stop_sequence``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import GatewayError, InvalidRequest, UpstreamError, anthropic_error
from . import fields as f
from .chat_request import (
    EFFORT_TO_THINK,
    check_base64,
    function_tool,
    json_format,
    tool_selection,
)
from .chat_response import check_line, random_id
from .models import requested_model, resolve_model
from .native import (
    CHAT,
    DEFAULT_BOUNDS,
    Bounds,
    NativeCall,
    chat_payload,
    compact,
    json_args,
    line_parts,
)

IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# Claude Code's first system block changes on every request (`cch=`): kept, it would defeat
# Ollama's prompt cache for the whole conversation.
BILLING_HEADER = "x-anthropic-billing-header:"
# Anthropic's own tools run on Anthropic's servers; a local model has nothing to call for them.
SERVER_TOOL_PREFIXES = (
    "web_search",
    "web_fetch",
    "code_execution",
    "bash",
    "text_editor",
    "computer",
    "memory",
    "tool_search",
    "mcp",
)
ANTHROPIC_EFFORT = {**EFFORT_TO_THINK, "xhigh": "max"}
# Content blocks of the Messages API that carry nothing a local model can read (results of
# Anthropic's server tools, encrypted thinking): accepted and left out. Any other type is a 400.
UNREAD_BLOCKS = (
    "redacted_thinking",
    "server_tool_use",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "tool_reference",
)


def _unread_block(kind: Any, where: str) -> None:
    """Accept a block type left out on purpose; refuse one the Messages API does not have."""
    if isinstance(kind, str) and (kind in UNREAD_BLOCKS or kind.endswith("_tool_result")):
        return
    raise InvalidRequest(
        f"'{where}.type' {kind!r} is not a content block type this gateway reads "
        "(text, image, document, search_result, tool_use, tool_result, thinking)",
        param=f"{where}.type",
    )


@dataclass(frozen=True)
class MessagesRequest:
    call: NativeCall
    stop_sequences: tuple[str, ...] = ()


def _text_of(blocks: Any, param: str, images: list[str] | None = None) -> str:
    """A string, or text blocks (images collected when allowed) → text joined by blank lines."""
    if isinstance(blocks, str):
        return blocks
    texts = []
    for i, block in enumerate(f.array(blocks, param)):
        where = f"{param}[{i}]"
        f.obj(block, where)
        kind = block.get("type")
        if kind == "text":
            texts.append(f.text(block.get("text"), f"{where}.text"))
        elif kind == "image" and images is not None:
            images.append(_image(block, where))
        elif kind == "document":
            texts.append(_document(block, where))
        elif kind == "search_result":
            texts.append(_text_of(f.opt_array(block, "content"), f"{where}.content"))
        else:
            _unread_block(kind, where)
    return "\n\n".join(t for t in texts if t)


def _image(block: Mapping[str, Any], where: str) -> str:
    source = f.obj(block.get("source"), f"{where}.source")
    kind = source.get("type")
    if kind != "base64":
        # Fetching URLs for clients would make the gateway an SSRF hop into the LAN.
        raise InvalidRequest(
            f"{where}.source.type: only base64 images are supported (got {kind!r}); "
            "send the image inline",
            param=f"{where}.source.type",
        )
    media = source.get("media_type")
    if media not in IMAGE_TYPES:
        raise InvalidRequest(
            f"{where}.source.media_type must be one of {', '.join(IMAGE_TYPES)}",
            param=f"{where}.source.media_type",
        )
    return check_base64(f.text(source.get("data"), f"{where}.source.data"), f"{where}.source")


def _document(block: Mapping[str, Any], where: str) -> str:
    source = f.obj(block.get("source"), f"{where}.source")
    if source.get("type") == "text":
        return f.text(source.get("data"), f"{where}.source.data")
    if source.get("type") == "content":
        return _text_of(f.opt_array(source, "content"), f"{where}.source.content")
    raise InvalidRequest(
        f"{where}.source.type: only text documents are supported", param=f"{where}.source.type"
    )


def _system(system: Any) -> list[str]:
    if system is None:
        return []
    if isinstance(system, str):
        return [system] if system else []
    texts = []
    for i, block in enumerate(f.array(system, "system")):
        f.obj(block, f"system[{i}]")
        text = f.text(block.get("text"), f"system[{i}].text")
        if text and not text.startswith(BILLING_HEADER):
            texts.append(text)
    return texts


def _tool_result(block: Mapping[str, Any], where: str, names: dict[str, str]) -> dict[str, Any]:
    call_id = f.text(block.get("tool_use_id"), f"{where}.tool_use_id")
    images: list[str] = []
    content = block.get("content")
    text = "" if content is None else _text_of(content, f"{where}.content", images)
    if f.opt_bool(block, "is_error", where):
        text = f"Error: {text}"  # Ollama has no error flag on tool results
    out: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": call_id}
    if call_id in names:
        out["tool_name"] = names[call_id]
    if images:
        out["images"] = images
    return out


def _message(msg: Any, i: int, names: dict[str, str]) -> list[dict[str, Any]]:
    """One Anthropic message → native messages (tool results first, as their own messages)."""
    where = f"messages[{i}]"
    f.obj(msg, where)
    role = msg.get("role")
    if role not in ("user", "assistant", "system"):
        raise InvalidRequest(f"{where}.role must be 'user' or 'assistant'", param=f"{where}.role")
    content = msg.get("content")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    texts: list[str] = []
    thinking: list[str] = []
    images: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for j, block in enumerate(f.array(content, f"{where}.content")):
        bw = f"{where}.content[{j}]"
        f.obj(block, bw)
        kind = block.get("type")
        if kind == "text":
            texts.append(f.text(block.get("text"), f"{bw}.text"))
        elif kind == "image":
            images.append(_image(block, bw))
        elif kind == "document":
            texts.append(_document(block, bw))
        elif kind == "tool_use" and role == "assistant":
            call_id = f.text(block.get("id"), f"{bw}.id")
            name = f.text(block.get("name"), f"{bw}.name")
            args = block.get("input")
            args = {} if args is None else f.obj(args, f"{bw}.input")
            names[call_id] = name
            calls.append({"id": call_id, "function": {"name": name, "arguments": args}})
        elif kind == "tool_result":
            results.append(_tool_result(block, bw, names))
        elif kind == "thinking":
            thinking.append(f.text(block.get("thinking"), f"{bw}.thinking"))
        elif kind == "search_result":
            texts.append(_text_of(f.opt_array(block, "content"), f"{bw}.content"))
        elif kind == "tool_use":
            raise InvalidRequest(
                f"'{bw}': tool_use blocks belong in assistant messages", param=f"{bw}.type"
            )
        else:
            _unread_block(kind, bw)
    out: list[dict[str, Any]] = list(results)
    text = "\n\n".join(t for t in texts if t)
    if text or images or calls or thinking or not results:
        native: dict[str, Any] = {"role": role, "content": text}
        if images:
            native["images"] = images
        if calls:
            native["tool_calls"] = calls
        if thinking:
            native["thinking"] = "".join(thinking)
        out.append(native)
    return out


def _messages(messages: Any, system: list[str]) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    native: list[dict[str, Any]] = []
    names: dict[str, str] = {}
    for i, msg in enumerate(messages):
        for m in _message(msg, i, names):
            if m["role"] != "system":
                native.append(m)
            elif not native:  # leading system items join the system prompt
                system.append(m["content"])
            elif m["content"]:
                # Later ones stay where they are, as Claude Code's own reminders do: folding
                # them into the system prompt would change the prompt's prefix and lose
                # Ollama's cache of it.
                text = f"<system-reminder>\n{m['content']}\n</system-reminder>"
                native.append({"role": "user", "content": text})
    if system:
        native.insert(0, {"role": "system", "content": "\n\n".join(system)})
    return native


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for i, tool in enumerate(f.opt_array(body, "tools")):
        where = f"tools[{i}]"
        f.obj(tool, where)
        kind = tool.get("type")
        if isinstance(kind, str) and kind != "custom" and kind.startswith(SERVER_TOOL_PREFIXES):
            continue  # an Anthropic server tool: nothing here can run it
        schema = tool.get("input_schema")
        spec = {
            "name": tool.get("name"),
            "description": tool.get("description"),
            "parameters": {"type": "object"}
            if schema is None
            else f.obj(schema, f"{where}.input_schema"),
        }
        tools.append(function_tool({k: v for k, v in spec.items() if v is not None}, where))
    return tools


def _tool_choice(body: Mapping[str, Any]) -> tuple[Any, bool]:
    """Anthropic's ``tool_choice`` → (the OpenAI-style choice, one call only?)."""
    choice = f.opt_obj(body, "tool_choice")
    if choice is None:
        return None, False
    single = bool(f.opt_bool(choice, "disable_parallel_tool_use", "tool_choice"))
    kind = f.opt_choice(choice, "type", ("auto", "any", "tool", "none"), "tool_choice")
    if kind == "tool":
        return {"name": f.text(choice.get("name"), "tool_choice.name")}, single
    return {"any": "required"}.get(kind or "auto", kind), single


def _think(body: Mapping[str, Any]) -> bool | str | None:
    thinking = f.opt_obj(body, "thinking")
    config = f.opt_obj(body, "output_config") or {}
    effort = f.opt_choice(config, "effort", list(ANTHROPIC_EFFORT), "output_config")
    kind = None
    if thinking is not None:
        kind = f.opt_choice(thinking, "type", ("enabled", "disabled", "adaptive"), "thinking")
        f.opt_int(thinking, "budget_tokens", 0, None, "thinking")  # checked; Ollama has no budget
    if kind == "disabled":
        return False
    if effort is not None:
        return ANTHROPIC_EFFORT[effort]
    return True if kind == "enabled" else None


def messages_request(
    body: Any,
    models: Mapping[str, str],
    bounds: Bounds = DEFAULT_BOUNDS,
    *,
    counting: bool = False,
) -> MessagesRequest:
    """Validate a Messages body (or a count_tokens body, which has no ``max_tokens``)."""
    model = requested_model(body)
    options: dict[str, Any] = {}
    max_tokens = f.opt_int(body, "max_tokens", 1)
    if max_tokens is None and not counting:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for name, hi in (("temperature", 1), ("top_p", 1)):
        value = f.opt_number(body, name, 0, hi)
        if value is not None:
            options[name] = value
    top_k = f.opt_int(body, "top_k", 0)
    if top_k is not None:
        options["top_k"] = top_k
    stops = f.stop_list(body.get("stop_sequences"), "stop_sequences", bounds.max_stop) or []
    stream = bool(f.opt_bool(body, "stream"))
    messages = _messages(body.get("messages"), _system(body.get("system")))
    tools = _tools(body)
    choice, single = _tool_choice(body)
    tools, policy = tool_selection(tools, choice, "tool_choice", single=single)
    config = f.opt_obj(body, "output_config") or {}
    out_format = f.opt_obj(config, "format", "output_config") or {}
    fmt = json_format(out_format.get("type"), out_format.get("schema"), "output_config.format")
    payload = chat_payload(
        resolve_model(model, models),
        messages,
        tools=tools,
        policy=policy,
        fmt=fmt,
        think=_think(body),
        options=options,
    )
    metadata = f.opt_obj(body, "metadata") or {}
    user = f.opt_text(metadata, "user_id", "metadata")
    call = NativeCall(
        CHAT, payload, model, stream, policy, user=user[:128] if user else None, relax_think=True
    )
    return MessagesRequest(call, tuple(stops))


# --------------------------------------------------------------------------- response


@dataclass
class StopMatcher:
    """Finds the first stop sequence in streamed text, holding back what could start one."""

    stops: tuple[str, ...]
    held: str = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """(text safe to emit, the stop sequence that matched or None)."""
        buf = self.held + text
        hits = [(buf.find(s), s) for s in self.stops if s in buf]
        if hits:
            at, stop = min(hits)
            self.held = ""
            return buf[:at], stop
        keep = 0
        for s in self.stops:  # the longest tail of buf that is a prefix of a stop sequence
            for n in range(min(len(s) - 1, len(buf)), keep, -1):
                if buf.endswith(s[:n]):
                    keep = n
                    break
        self.held = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], None

    def flush(self) -> str:
        held, self.held = self.held, ""
        return held


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


@dataclass
class MessagesStream:
    """Native lines → Anthropic stream events (dicts whose ``type`` is the SSE event name)."""

    message_id: str
    model: str
    input_tokens: int  # an estimate until Ollama's count arrives on the done line
    stop_sequences: tuple[str, ...] = ()
    index: int = -1
    open_kind: str | None = None
    saw_tool: bool = False
    output_lines: int = 0
    finished: bool = False  # a stop sequence matched: nothing more to read
    matcher: StopMatcher | None = field(default=None, init=False)

    named_events: ClassVar[bool] = True
    done_marker: ClassVar[bytes] = b""
    done_after_error: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if self.stop_sequences:
            self.matcher = StopMatcher(self.stop_sequences)

    def start(self) -> Iterator[dict[str, Any]]:
        yield {
            "type": "message_start",
            "message": {
                "id": self.message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": _usage(self.input_tokens, 0),
            },
        }
        yield {"type": "ping"}

    def _close(self) -> Iterator[dict[str, Any]]:
        if self.open_kind is not None:
            yield {"type": "content_block_stop", "index": self.index}
            self.open_kind = None

    def _open(self, kind: str, block: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self._close()
        self.index += 1
        self.open_kind = kind
        yield {"type": "content_block_start", "index": self.index, "content_block": block}

    def _text(self, text: str) -> Iterator[dict[str, Any]]:
        if not text:
            return
        if self.open_kind != "text":
            yield from self._open("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        yield {"type": "content_block_delta", "index": self.index, "delta": delta}

    def _end(
        self, stop_reason: str, stop_sequence: str | None, usage: tuple[int, int]
    ) -> Iterator[dict[str, Any]]:
        yield from self._close()
        yield {
            "type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
            "usage": _usage(*usage),
        }
        yield {"type": "message_stop"}
        self.finished = True

    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        if self.finished:
            return
        check_line(line)
        thinking, content, calls = line_parts(line)
        if thinking or content or calls:
            self.output_lines += 1
        if thinking:
            if self.open_kind != "thinking":
                block = {"type": "thinking", "thinking": "", "signature": ""}
                yield from self._open("thinking", block)
            delta = {"type": "thinking_delta", "thinking": thinking}
            yield {"type": "content_block_delta", "index": self.index, "delta": delta}
        if content:
            matched = None
            if self.matcher is not None:
                content, matched = self.matcher.feed(content)
            yield from self._text(content)
            if matched is not None:
                usage = (self.input_tokens, self.output_lines)
                yield from self._end("stop_sequence", matched, usage)
                return
        for call in calls:
            name, args = json_args(call)
            block = {"type": "tool_use", "id": random_id("toolu_"), "name": name, "input": {}}
            yield from self._open("tool_use", block)
            delta = {"type": "input_json_delta", "partial_json": compact(args)}
            yield {"type": "content_block_delta", "index": self.index, "delta": delta}
            yield from self._close()
            self.saw_tool = True
        if line.get("done"):
            if self.matcher is not None:
                yield from self._text(self.matcher.flush())
            reason = line.get("done_reason")
            stop = (
                "max_tokens" if reason == "length" else "tool_use" if self.saw_tool else "end_turn"
            )
            prompt, output = line.get("prompt_eval_count"), line.get("eval_count")
            usage = (
                prompt if isinstance(prompt, int) else self.input_tokens,
                output if isinstance(output, int) else self.output_lines,
            )
            yield from self._end(stop, None, usage)

    def fail(self, err: GatewayError) -> Iterator[dict[str, Any]]:
        """After the stream started: Anthropic's `error` event; no `message_stop` follows."""
        yield {"type": "error", "error": anthropic_error(err)}


def aggregate_message(lines: Iterable[Mapping[str, Any]], stream: MessagesStream) -> dict[str, Any]:
    """Fold the stream's own events into one ``Message``, as the SDK's accumulator does."""
    message: dict[str, Any] = {}
    partial_json: dict[int, str] = {}
    for event in stream.start():
        if event["type"] == "message_start":
            message = dict(event["message"], content=[])
    for line in lines:
        for event in stream.feed(line):
            kind = event["type"]
            if kind == "content_block_start":
                message["content"].append(dict(event["content_block"]))
            elif kind == "content_block_delta":
                block, delta = message["content"][event["index"]], event["delta"]
                if delta["type"] == "text_delta":
                    block["text"] += delta["text"]
                elif delta["type"] == "thinking_delta":
                    block["thinking"] += delta["thinking"]
                elif delta["type"] == "input_json_delta":
                    partial_json[event["index"]] = delta["partial_json"]
            elif kind == "message_delta":
                message.update(event["delta"])
                message["usage"] = event["usage"]
        if stream.finished:
            break
    if not stream.finished:
        raise UpstreamError("the model's answer ended before it was complete")
    for index, raw in partial_json.items():
        message["content"][index]["input"] = json.loads(raw)  # our own compact JSON
    return message
