"""OpenAI Responses (``/v1/responses``, stateless) ⇄ Ollama ``/api/chat`` (pure).

Request: ``input`` (a string, or message / function_call / function_call_output / reasoning
items) and ``instructions`` → one native conversation with a single leading system message;
flattened function tools; ``tool_choice`` through the shared tool policy; ``text.format`` →
``format``; ``reasoning.effort`` → ``think``. Anything that needs stored state
(``previous_response_id``, ``store: true``, ``conversation``, ``background``, item references)
or a hosted tool is refused with a 400 naming the field: answering without the context the
client thinks it sent would be silently wrong.

Response: ``ResponsesStream`` emits the documented events with one ``sequence_number`` series,
one ``output_index`` per item (each closed before the next opens), reasoning as summary text;
``aggregate_response`` folds the same items into the final object, so both always agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import GatewayError, InvalidRequest, UpstreamError
from . import fields as f
from .chat_request import (
    EFFORT_TO_THINK,
    SAMPLING,
    decode_image,
    end_user,
    function_tool,
    json_format,
    parse_arguments,
    tool_selection,
)
from .chat_response import check_line, new_call_id
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

STATEFUL = (
    ("previous_response_id", "previous_response_not_found"),
    ("conversation", "conversation_not_supported"),
    ("prompt", "stored_prompts_not_supported"),
)
STATELESS_HINT = "This server is stateless: send the whole conversation in 'input'."
FAILED_CODES = {"rate_limit_exceeded", "context_length_exceeded"}


def new_item_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


@dataclass(frozen=True)
class ResponsesRequest:
    call: NativeCall
    echo: dict[str, Any]  # request settings the response object repeats


def _refuse_state(body: Mapping[str, Any]) -> None:
    for name, code in STATEFUL:
        value = body.get(name)
        if value is not None:
            shown = f" with id {value[:64]!r}" if isinstance(value, str) else ""
            what = "Previous response" if name == "previous_response_id" else f"'{name}'"
            raise InvalidRequest(
                f"{what}{shown} not found. {STATELESS_HINT}", param=name, code=code
            )
    if f.opt_bool(body, "store") is True:
        raise InvalidRequest(
            f"'store: true' is not supported: responses are not stored. {STATELESS_HINT}",
            param="store",
        )
    if f.opt_bool(body, "background") is True:
        raise InvalidRequest(
            "'background: true' is not supported: it needs stored responses to poll",
            param="background",
        )
    if body.get("top_logprobs") is not None:
        raise InvalidRequest("'top_logprobs' is not supported by this server", param="top_logprobs")


def _parts(content: Any, where: str) -> tuple[str, list[str]]:
    if isinstance(content, str):
        return content, []
    texts, images = [], []
    for j, part in enumerate(f.array(content, f"{where}.content")):
        pw = f"{where}.content[{j}]"
        f.obj(part, pw)
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
            texts.append(f.text(part.get("text"), f"{pw}.text"))
        elif kind == "refusal":
            texts.append(f.text(part.get("refusal"), f"{pw}.refusal"))
        elif kind == "input_image":
            if part.get("file_id") is not None:
                raise InvalidRequest(
                    "file ids are not supported; send the image as a data URL",
                    param=f"{pw}.file_id",
                )
            images.append(decode_image(part.get("image_url"), f"{pw}.image_url"))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported", param=f"{pw}.type")
    return "\n".join(texts), images


@dataclass
class _Conversation:
    """Native messages being built from input items, in order."""

    system: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    call_names: dict[str, str] = field(default_factory=dict)
    thinking: list[str] = field(default_factory=list)  # reasoning items for the next reply

    def assistant(self) -> dict[str, Any]:
        """The assistant message new output attaches to (a replayed turn shares one message)."""
        last = self.messages[-1] if self.messages else None
        if last is None or last["role"] != "assistant":
            last = {"role": "assistant", "content": ""}
            self.messages.append(last)
        if self.thinking:
            last["thinking"] = last.get("thinking", "") + "".join(self.thinking)
            self.thinking = []
        return last

    def add(self, item: Any, i: int) -> None:
        where = f"input[{i}]"
        f.obj(item, where)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(
                    f"'{where}.role' must be user, assistant, system or developer",
                    param=f"{where}.role",
                )
            text, images = _parts(item.get("content"), where)
            if role in ("system", "developer"):
                # Templates render one leading system message; `developer` would be dropped.
                self.system.append(text)
            elif role == "assistant":
                msg = self.assistant()
                if msg.get("tool_calls"):
                    # Text the model wrote after its calls: the same turn (output items are
                    # message, function_call…, message); a separate turn would sit between the
                    # calls and their results.
                    msg["content"] += text
                elif msg["content"]:
                    msg = {"role": "assistant", "content": text}
                    self.messages.append(msg)
                else:
                    msg["content"] = text
            else:
                msg = {"role": "user", "content": text}
                if images:
                    msg["images"] = images
                self.messages.append(msg)
        elif kind == "function_call":
            call_id = f.text(item.get("call_id"), f"{where}.call_id")
            name = f.text(item.get("name"), f"{where}.name")
            args = parse_arguments(item.get("arguments"), f"{where}.arguments")
            self.call_names[call_id] = name
            msg = self.assistant()
            msg.setdefault("tool_calls", []).append(
                {"id": call_id, "function": {"name": name, "arguments": args}}
            )
        elif kind == "function_call_output":
            call_id = f.text(item.get("call_id"), f"{where}.call_id")
            output = item.get("output")
            text, images = _parts(output if output is not None else "", where)
            out: dict[str, Any] = {"role": "tool", "content": text, "tool_call_id": call_id}
            if call_id in self.call_names:
                out["tool_name"] = self.call_names[call_id]
            if images:
                out["images"] = images
            self.messages.append(out)
        elif kind == "reasoning":
            summary = f.opt_array(item, "summary", where)
            text, _ = _parts(summary, where)
            if not text and item.get("content"):
                text, _ = _parts(item["content"], where)
            if text:
                self.thinking.append(text)
        elif kind == "item_reference":
            raise InvalidRequest(
                f"'{where}' references a stored item. {STATELESS_HINT}",
                param=f"{where}.id",
                code="item_reference_not_supported",
            )
        # Hosted-tool history (web_search_call, …) carries nothing a local model can use.

    def native(self) -> list[dict[str, Any]]:
        out = list(self.messages)
        if self.system:
            out.insert(0, {"role": "system", "content": "\n\n".join(self.system)})
        return out


def _tools(body: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(native tools, the tools as the response object echoes them)."""
    native, echo = [], []
    for i, tool in enumerate(f.opt_array(body, "tools")):
        where = f"tools[{i}]"
        f.obj(tool, where)
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"'{where}.type' {tool.get('type')!r} is not supported: this server runs no "
                "hosted tools; only function tools",
                param=f"{where}.type",
            )
        native.append(function_tool(tool, where))
        fn = native[-1]["function"]
        echo.append(
            {
                "type": "function",
                "name": fn["name"],
                "description": fn.get("description"),
                "parameters": fn.get("parameters"),
                "strict": tool.get("strict"),
            }
        )
    return native, echo


def responses_request(
    body: Any, models: Mapping[str, str], bounds: Bounds = DEFAULT_BOUNDS
) -> ResponsesRequest:
    model = requested_model(body)
    _refuse_state(body)
    conv = _Conversation()
    instructions = f.opt_text(body, "instructions")
    if instructions:
        conv.system.append(instructions)
    inp = body.get("input")
    if isinstance(inp, str):
        conv.messages.append({"role": "user", "content": inp})
    else:
        items = f.array(inp, "input")
        if not items:
            raise InvalidRequest("'input' must not be empty", param="input")
        for i, item in enumerate(items):
            conv.add(item, i)
    messages = conv.native()
    if not any(m["role"] != "system" for m in messages):
        raise InvalidRequest("'input' has no message for the model to answer", param="input")

    options: dict[str, Any] = {}
    max_tokens = f.opt_int(body, "max_output_tokens", 1)
    if max_tokens is not None:
        options["num_predict"] = max_tokens
    for name, lo, hi in SAMPLING[:2]:  # temperature, top_p
        value = f.opt_number(body, name, lo, hi)
        if value is not None:
            options[name] = value
    tools, tools_echo = _tools(body)
    choice = body.get("tool_choice")
    parallel = f.opt_bool(body, "parallel_tool_calls")
    tools, policy = tool_selection(tools, choice, "tool_choice", single=parallel is False)
    text = f.opt_obj(body, "text") or {}
    fmt_spec = f.opt_obj(text, "format", "text") or {}
    f.opt_text(fmt_spec, "name", "text.format")
    reasoning = f.opt_obj(body, "reasoning") or {}
    effort = f.opt_choice(reasoning, "effort", list(EFFORT_TO_THINK), "reasoning")
    payload = chat_payload(
        resolve_model(model, models),
        messages,
        tools=tools,
        policy=policy,
        fmt=json_format(fmt_spec.get("type"), fmt_spec.get("schema"), "text.format"),
        think=None if effort is None else EFFORT_TO_THINK[effort],
        options=options,
    )
    metadata = f.opt_obj(body, "metadata") or {}
    user = end_user(body) or end_user(body, "safety_identifier")
    call = NativeCall(
        CHAT,
        payload,
        model,
        bool(f.opt_bool(body, "stream")),
        policy,
        user=user,
        prompt_param="input",
        relax_think=True,  # a model that cannot think still answers (OpenAI ignores it too)
    )
    echo = {
        "instructions": instructions,
        "metadata": metadata,
        "tools": tools_echo,
        "tool_choice": choice if choice is not None else "auto",
        "parallel_tool_calls": parallel is not False,
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": max_tokens,
        "text": {"format": fmt_spec or {"type": "text"}},
        "reasoning": {"effort": effort, "summary": reasoning.get("summary")},
        "user": body.get("user") if isinstance(body.get("user"), str) else None,
    }
    return ResponsesRequest(call, echo)


# --------------------------------------------------------------------------- response


@dataclass
class ResponsesStream:
    """Native lines → Responses stream events; ``output`` holds the finished items."""

    response_id: str
    created_at: int
    model: str
    echo: dict[str, Any]
    seq: int = 0
    output: list[dict[str, Any]] = field(default_factory=list)
    item: dict[str, Any] | None = None  # the open item
    text: list[str] = field(default_factory=list)  # its text so far
    usage: dict[str, Any] | None = None
    status: str = "in_progress"
    error: dict[str, Any] | None = None

    named_events: ClassVar[bool] = True
    done_marker: ClassVar[bytes] = b""
    done_after_error: ClassVar[bool] = False

    def _event(self, kind: str, **data: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.seq, **data}
        self.seq += 1
        return event

    def response(self) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "error": self.error,
            "incomplete_details": (
                {"reason": "max_output_tokens"} if self.status == "incomplete" else None
            ),
            "model": self.model,
            "output": list(self.output),
            "previous_response_id": None,
            "store": False,
            "background": False,
            "truncation": "disabled",
            "usage": self.usage,
            **self.echo,
        }

    def start(self) -> Iterator[dict[str, Any]]:
        yield self._event("response.created", response=self.response())
        yield self._event("response.in_progress", response=self.response())

    def _where(self) -> dict[str, Any]:
        assert self.item is not None
        return {"item_id": self.item["id"], "output_index": len(self.output)}

    def _open(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield from self._close()
        self.item, self.text = item, []
        yield self._event("response.output_item.added", output_index=len(self.output), item=item)
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": ""}
            yield self._event(
                "response.reasoning_summary_part.added", **self._where(), summary_index=0, part=part
            )
        elif item["type"] == "message":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            yield self._event(
                "response.content_part.added", **self._where(), content_index=0, part=part
            )

    def _close(self) -> Iterator[dict[str, Any]]:
        item = self.item
        if item is None:
            return
        text, where = "".join(self.text), self._where()
        if item["type"] == "reasoning":
            part = {"type": "summary_text", "text": text}
            yield self._event(
                "response.reasoning_summary_text.done", **where, summary_index=0, text=text
            )
            yield self._event(
                "response.reasoning_summary_part.done", **where, summary_index=0, part=part
            )
            done = {**item, "summary": [part]}
        elif item["type"] == "message":
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            yield self._event(
                "response.output_text.done", **where, content_index=0, text=text, logprobs=[]
            )
            yield self._event("response.content_part.done", **where, content_index=0, part=part)
            done = {**item, "status": "completed", "content": [part]}
        else:
            done = {**item, "status": "completed"}
        yield self._event("response.output_item.done", output_index=len(self.output), item=done)
        self.output.append(done)
        self.item = None

    def _kind(self) -> str | None:
        return self.item["type"] if self.item is not None else None

    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        check_line(line)
        thinking, content, calls = line_parts(line)
        if thinking:
            if self._kind() != "reasoning":
                yield from self._open(
                    {"id": new_item_id("rs_"), "type": "reasoning", "summary": []}
                )
            self.text.append(thinking)
            yield self._event(
                "response.reasoning_summary_text.delta",
                **self._where(),
                summary_index=0,
                delta=thinking,
            )
        if content:
            if self._kind() != "message":
                item = {
                    "id": new_item_id("msg_"),
                    "type": "message",
                    "status": "in_progress",
                    "role": "assistant",
                    "content": [],
                }
                yield from self._open(item)
            self.text.append(content)
            yield self._event(
                "response.output_text.delta",
                **self._where(),
                content_index=0,
                delta=content,
                logprobs=[],
            )
        for call in calls:
            name, args = json_args(call)
            call_id = call.get("id") if isinstance(call.get("id"), str) else None
            item = {
                "id": new_item_id("fc_"),
                "type": "function_call",
                "status": "in_progress",
                "call_id": call_id or new_call_id(),
                "name": name,
                "arguments": "",
            }
            yield from self._open(item)
            arguments = compact(args)
            item["arguments"] = arguments
            yield self._event(
                "response.function_call_arguments.delta", **self._where(), delta=arguments
            )
            yield self._event(
                "response.function_call_arguments.done",
                **self._where(),
                name=name,
                arguments=arguments,
            )
            yield from self._close()
        if line.get("done"):
            yield from self._close()
            prompt, output = line.get("prompt_eval_count"), line.get("eval_count")
            prompt = prompt if isinstance(prompt, int) else 0
            output = output if isinstance(output, int) else 0
            self.usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + output,
            }
            self.status = "incomplete" if line.get("done_reason") == "length" else "completed"
            yield self._event(f"response.{self.status}", response=self.response())

    def fail(self, err: GatewayError) -> Iterator[dict[str, Any]]:
        """``error`` then ``response.failed``, with the items that were finished."""
        code = err.code if err.code in FAILED_CODES else "server_error"
        self.item = None  # the half-written item is left out
        self.status, self.error = "failed", {"code": code, "message": err.message}
        yield self._event("error", code=code, message=err.message, param=err.param)
        yield self._event("response.failed", response=self.response())


def aggregate_response(
    lines: Iterable[Mapping[str, Any]], stream: ResponsesStream
) -> dict[str, Any]:
    for _ in stream.start():
        pass
    for line in lines:
        for _ in stream.feed(line):
            pass
        if stream.status != "in_progress":
            return stream.response()
    raise UpstreamError("the model's answer ended before it was complete")


def response_not_found(response_id: str) -> InvalidRequest:
    return InvalidRequest(
        f"Response with id {response_id[:64]!r} not found. {STATELESS_HINT}",
        param="response_id",
        code="response_not_found",
        status=404,
    )
