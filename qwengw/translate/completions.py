"""OpenAI legacy completions (``/v1/completions``) ⇄ Ollama ``/api/generate`` (pure).

A legacy completion continues the prompt as written, so the prompt is sent ``raw`` (no chat
template: clients that build their own fill-in-the-middle strings with special tokens need it
verbatim). With a ``suffix`` it is not raw: the model's template is what places the prefix and
the suffix around the hole (and Ollama ignores ``suffix`` in raw mode). Thinking is always off:
this dialect has no place to put it, and it would only delay the first token of a completion.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ..errors import GatewayError, InvalidRequest, UpstreamError
from . import fields as f
from .chat_request import SAMPLING, end_user, sampling_options
from .chat_response import check_line, usage_from
from .models import requested_model, resolve_model
from .native import DEFAULT_BOUNDS, GENERATE, Bounds, NativeCall, line_parts


@dataclass(frozen=True)
class CompletionRequest:
    call: NativeCall
    include_usage: bool = False


def _prompt(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        return value[0]
    if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        raise InvalidRequest(
            "'prompt' as token ids is not supported: Ollama reads text; send the string",
            param="prompt",
        )
    if isinstance(value, list) and len(value) > 1:
        raise InvalidRequest(
            "only one prompt per request is supported by this server", param="prompt"
        )
    raise InvalidRequest("'prompt' must be a string", param="prompt")


def completion_request(
    body: Any, models: Mapping[str, str], bounds: Bounds = DEFAULT_BOUNDS
) -> CompletionRequest:
    model = requested_model(body)
    prompt = _prompt(body.get("prompt"))
    for name in ("n", "best_of"):
        value = f.opt_int(body, name, 1)
        if value is not None and value != 1:
            raise InvalidRequest(f"only {name}=1 is supported by this server", param=name)
    if f.opt_bool(body, "echo"):
        raise InvalidRequest("'echo' is not supported by this server", param="echo")
    if body.get("logprobs") is not None:
        raise InvalidRequest("'logprobs' is not supported by this server", param="logprobs")
    if body.get("logit_bias"):
        raise InvalidRequest("'logit_bias' is not supported by this server", param="logit_bias")
    suffix = f.opt_text(body, "suffix")
    stream_options = f.opt_obj(body, "stream_options") or {}
    # temperature, top_p, frequency/presence penalties; seed, stop (top_k too, harmlessly)
    options = sampling_options(body, bounds, SAMPLING[:4], ("max_tokens",))
    payload: dict[str, Any] = {
        "model": resolve_model(model, models),
        "prompt": prompt,
        "stream": True,
        "think": False,
    }
    if suffix:
        payload["suffix"] = suffix
    else:
        payload["raw"] = True
    if options:
        payload["options"] = options
    call = NativeCall(
        GENERATE,
        payload,
        model,
        bool(f.opt_bool(body, "stream")),
        user=end_user(body),
        prompt_param="prompt",
    )
    return CompletionRequest(
        call, bool(f.opt_bool(stream_options, "include_usage", "stream_options"))
    )


def _finish(done_reason: Any) -> str:
    # `load` (an empty prompt only loads the model) and anything unknown read as a plain stop.
    return "length" if done_reason == "length" else "stop"


@dataclass
class CompletionStream:
    """Native ``/api/generate`` lines → ``text_completion`` chunks."""

    completion_id: str
    created: int
    model: str
    include_usage: bool = False

    named_events: ClassVar[bool] = False
    done_marker: ClassVar[bytes] = b"data: [DONE]\n\n"
    done_after_error: ClassVar[bool] = False  # an error ends the stream without [DONE]

    def _chunk(self, text: str, finish: str | None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk

    def start(self) -> Iterator[dict[str, Any]]:
        return iter(())

    def feed(self, line: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        check_line(line)
        _, text, _ = line_parts(line)
        if text:
            yield self._chunk(text, None)
        if line.get("done"):
            yield self._chunk("", _finish(line.get("done_reason")))
            if self.include_usage:
                usage = self._chunk("", None)
                usage["choices"], usage["usage"] = [], usage_from(line)
                yield usage

    def fail(self, err: GatewayError) -> Iterator[dict[str, Any]]:
        yield err.body()


def aggregate_completion(
    lines: Iterable[Mapping[str, Any]], *, completion_id: str, created: int, model: str
) -> dict[str, Any]:
    texts: list[str] = []
    for line in lines:
        check_line(line)
        texts.append(line_parts(line)[1])
        if line.get("done"):
            choice = {
                "text": "".join(texts),
                "index": 0,
                "logprobs": None,
                "finish_reason": _finish(line.get("done_reason")),
            }
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model,
                "system_fingerprint": None,
                "choices": [choice],
                "usage": usage_from(line),
            }
    raise UpstreamError("the model's answer ended before it was complete")
