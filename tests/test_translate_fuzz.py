"""Property tests of the pure translators: whatever JSON a client sends, a translator either
builds a native call that serialises as strict JSON, or raises a gateway error (a 4xx) — never
another exception (which would be a 500). Seeded and bounded: deterministic, a few seconds.
The HTTP-level fuzzing of every endpoint through a real server is in test_fuzz.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from qwengw import translate
from qwengw.errors import GatewayError

# Field names the translators read, at any depth, so that generated bodies reach deep code.
NAMES = [
    "model", "messages", "role", "content", "type", "text", "image_url", "url", "tool_calls",
    "function", "name", "arguments", "id", "tool_call_id", "tools", "tool_choice", "parameters",
    "functions", "function_call", "response_format", "json_schema", "schema", "stream",
    "stream_options", "include_usage", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "top_k", "seed", "stop", "n", "logprobs", "reasoning_effort", "reasoning", "effort",
    "think", "parallel_tool_calls", "refusal", "input", "instructions", "call_id", "output",
    "summary", "text", "format", "system", "source", "media_type", "data", "tool_use_id",
    "is_error", "input_schema", "thinking", "budget_tokens", "stop_sequences", "metadata",
    "user_id", "output_config", "prompt", "suffix", "echo", "best_of", "encoding_format",
    "dimensions", "max_output_tokens", "previous_response_id", "store", "user",
    "disable_parallel_tool_use", "modalities", "audio", "prediction",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [
            "user",
            "assistant",
            "system",
            "tool",
            "text",
            "function",
            "auto",
            "required",
            "none",
            "any",
            "tool_use",
            "tool_result",
            "image",
            "base64",
            "json_schema",
            "json_object",
            "message",
            "function_call",
            "function_call_output",
            "enabled",
            "data:image/png;base64,aGk=",
            "{}",
            "m",
            "",
        ]
    ),  # fmt: skip
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.sampled_from(NAMES), inner, max_size=6),
    ),
    max_leaves=30,
)
ROLE = st.sampled_from(["user", "assistant", "system", "tool", "developer", "function"])
PART = st.dictionaries(st.sampled_from(NAMES), JSON, max_size=4).flatmap(
    lambda p: st.sampled_from(
        ["text", "image_url", "tool_use", "tool_result", "thinking", "image", "input_text",
         "refusal", "function_call", "function_call_output", "reasoning", "message"]
    ).map(lambda kind: {**p, "type": kind})
)  # fmt: skip
MESSAGE = st.fixed_dictionaries(
    {"role": ROLE, "content": st.one_of(st.text(max_size=5), st.lists(PART, max_size=3), JSON)},
    optional={n: JSON for n in ("tool_calls", "name", "tool_call_id", "function_call", "type")},
)
BODY = st.fixed_dictionaries(
    {"model": st.just("m")},
    optional={
        "messages": st.lists(MESSAGE, min_size=1, max_size=4),
        "input": st.one_of(st.text(max_size=5), st.lists(st.one_of(MESSAGE, PART), max_size=4)),
        "max_tokens": st.one_of(st.integers(min_value=1, max_value=100), JSON),
        "tools": st.lists(st.dictionaries(st.sampled_from(NAMES), JSON, max_size=4), max_size=3),
        "prompt": st.one_of(st.text(max_size=5), JSON),
    },
).flatmap(
    lambda base: st.dictionaries(st.sampled_from(NAMES), JSON, max_size=6).map(
        lambda extra: {**extra, **base}
    )
)

TRANSLATORS: dict[str, Callable[[Any], Any]] = {
    "chat": lambda b: translate.chat_request_to_ollama(b, {}).call,
    "embeddings": lambda b: translate.embeddings_request_to_ollama(b, {}).call,
    "messages": lambda b: translate.messages_request(b, {}).call,
    "count_tokens": lambda b: translate.messages_request(b, {}, counting=True).call,
    "responses": lambda b: translate.responses_request(b, {}).call,
    "completions": lambda b: translate.completion_request(b, {}).call,
}


@pytest.mark.parametrize("name", list(TRANSLATORS))
@seed(20261204)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODY)
def test_any_body_is_a_call_or_a_clean_error(name: str, body: dict[str, Any]) -> None:
    try:
        call = TRANSLATORS[name](body)
    except GatewayError as err:
        assert 400 <= err.status < 500 and err.message
        return
    json.dumps(call.payload, allow_nan=False)  # what Ollama gets is strict JSON
    assert translate.prompt_chars(call.payload) >= 0
