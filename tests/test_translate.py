"""Golden tests of the pure translation functions (cases from ../shared/OLLAMA-WIRE.md §5)."""

from __future__ import annotations

from typing import Any

import pytest

from qwengw import translate
from qwengw.errors import InvalidRequest, ModelNotFound, UpstreamError

NOMAP: dict[str, str] = {}


def native(body: dict[str, Any], models: dict[str, str] = NOMAP) -> dict[str, Any]:
    return translate.chat_request_to_ollama(body, models).payload


def test_r1_basic_chat_sends_no_forced_defaults() -> None:
    assert native({"model": "m", "messages": [{"role": "user", "content": "Hello"}]}) == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }


def test_r2_all_sampling_options_and_json_mode() -> None:
    out = native(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "Hello"}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 999,
            "seed": 123,
            "stop": ["\n", "stop"],
            "temperature": 1.5,
            "frequency_penalty": 1.0,
            "presence_penalty": 0.5,
            "top_p": 0.9,
            "response_format": {"type": "json_object"},
        }
    )
    assert out["format"] == "json"
    assert out["options"] == {
        "num_predict": 999,
        "seed": 123,
        "stop": ["\n", "stop"],
        "temperature": 1.5,
        "frequency_penalty": 1.0,
        "presence_penalty": 0.5,
        "top_p": 0.9,
    }
    assert "stream_options" not in out


def test_r10_max_completion_tokens_wins() -> None:
    out = native(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 5,
            "max_completion_tokens": 10,
        }
    )
    assert out["options"]["num_predict"] == 10


def test_r4_content_parts_are_merged() -> None:
    out = native(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Hello"},
                        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,aGk="}},
                    ],
                }
            ],
        }
    )
    assert out["messages"] == [{"role": "user", "content": "Hello", "images": ["aGk="]}]


def test_r6_r7_tool_history() -> None:
    out = native(
        {
            "model": "m",
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "id_abc",
                            "type": "function",
                            "function": {
                                "name": "get_current_weather",
                                "arguments": '{"location": "Paris, France"}',
                            },
                        }
                    ],
                },
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {"id": "e", "type": "function", "function": {"name": "f", "arguments": ""}}
                    ],
                },
                {"role": "tool", "tool_call_id": "id_abc", "content": "20 degrees"},
                {"role": "tool", "name": "explicit", "content": "ok"},
            ],
        }
    )
    msgs = out["messages"]
    assert msgs[0] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "id_abc",
                "function": {
                    "index": 0,
                    "name": "get_current_weather",
                    "arguments": {"location": "Paris, France"},
                },
            }
        ],
    }
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {}  # "" is read as {}
    assert msgs[2] == {
        "role": "tool",
        "content": "20 degrees",
        "tool_name": "get_current_weather",
        "tool_call_id": "id_abc",
    }
    assert msgs[3] == {"role": "tool", "content": "ok", "tool_name": "explicit"}


def test_bad_tool_arguments() -> None:
    with pytest.raises(InvalidRequest) as e:
        native(
            {
                "model": "m",
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [
                            {
                                "id": "x",
                                "type": "function",
                                "function": {"name": "f", "arguments": "{oops"},
                            }
                        ],
                    }
                ],
            }
        )
    assert e.value.param == "messages[0].tool_calls[0].function.arguments"


@pytest.mark.parametrize(
    "effort, think",
    [("none", False), ("minimal", "low"), ("low", "low"), ("high", "high"), ("xhigh", "max")],
)
def test_r11_reasoning_effort(effort: str, think: Any) -> None:
    assert (
        native(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "reasoning_effort": effort,
            }
        )["think"]
        == think
    )


def test_r12_json_schema() -> None:
    schema = {"type": "object", "properties": {"r": {"type": "string"}}}
    out = native(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "strict": True, "schema": schema},
            },
        }
    )
    assert out["format"] == schema


def test_tool_choice() -> None:
    tools = [{"type": "function", "function": {"name": n}} for n in ("a", "b")]
    base = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    assert native({**base, "tool_choice": "none"}).get("tools") is None
    assert native({**base, "tool_choice": "auto"})["tools"] == tools
    chosen = native({**base, "tool_choice": {"type": "function", "function": {"name": "b"}}})
    assert chosen["tools"] == [tools[1]]
    with pytest.raises(InvalidRequest):
        native({**base, "tool_choice": "required"})


def test_model_map() -> None:
    models = {"public": "registry.internal/qwen3:32b"}
    body = {"model": "public", "messages": [{"role": "user", "content": "x"}]}
    assert native(body, models)["model"] == "registry.internal/qwen3:32b"
    with pytest.raises(ModelNotFound):
        native({**body, "model": "registry.internal/qwen3:32b"}, models)


def test_prompt_chars_counts_all_text() -> None:
    req = translate.chat_request_to_ollama(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "abc"},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "de"}, {"type": "text", "text": "f"}],
                },
            ],
        },
        NOMAP,
    )
    assert req.prompt_chars == 3 + len("de\nf")


def stream(lines: list[dict[str, Any]], include_usage: bool = False) -> list[dict[str, Any]]:
    s = translate.ChatStream("chatcmpl-test", 1234567890, "test-model", include_usage)
    return [c for line in lines for c in s.feed(line)]


def choices(chunks: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Any]]:
    return [
        (c["choices"][0]["delta"], c["choices"][0]["finish_reason"]) for c in chunks if c["choices"]
    ]


def test_r16_role_only_on_first_chunk() -> None:
    out = stream(
        [
            {"message": {"content": "Hello"}, "done": False},
            {"message": {"content": " world"}, "done": False},
            {"message": {"content": "!"}, "done": True, "done_reason": "stop"},
        ]
    )
    assert choices(out) == [
        ({"role": "assistant", "content": "Hello"}, None),
        ({"content": " world"}, None),
        ({"content": "!"}, None),
        ({}, "stop"),
    ]
    assert {c["id"] for c in out} == {"chatcmpl-test"} and {c["created"] for c in out} == {
        1234567890
    }


def test_r17_trailer_makes_no_empty_chunk_and_usage_comes_last() -> None:
    out = stream(
        [
            {"message": {"content": "Hi"}, "done": False},
            {
                "message": {"content": ""},
                "done": True,
                "done_reason": "stop",
                "prompt_eval_count": 3,
                "eval_count": 1,
            },
        ],
        include_usage=True,
    )
    assert choices(out) == [({"role": "assistant", "content": "Hi"}, None), ({}, "stop")]
    assert out[-1]["choices"] == [] and out[-1]["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 1,
        "total_tokens": 4,
    }


def test_r18_thinking_and_content_split() -> None:
    out = stream(
        [
            {
                "message": {"thinking": "reasoning", "content": "final answer"},
                "done": True,
                "done_reason": "stop",
            }
        ]
    )
    assert choices(out) == [
        ({"role": "assistant", "content": "", "reasoning_content": "reasoning"}, None),
        ({"content": "final answer"}, None),
        ({}, "stop"),
    ]


def test_r19_tool_call_before_done_still_finishes_as_tool_calls() -> None:
    call = {
        "id": "call_abc",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
    }
    out = stream(
        [
            {"message": {"tool_calls": [call]}, "done": False},
            {"message": {"content": ""}, "done": True, "done_reason": "stop"},
        ]
    )
    assert choices(out)[0][0]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_abc",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert choices(out)[-1] == ({}, "tool_calls")


@pytest.mark.parametrize(
    "reason, tool, finish",
    [
        ("stop", False, "stop"),
        ("length", False, "length"),
        ("stop", True, "tool_calls"),
        ("length", True, "length"),
        ("", False, "stop"),
        ("unload", False, "stop"),
    ],
)
def test_finish_chunk_table(reason: str, tool: bool, finish: str) -> None:
    assert translate.finish_reason(reason, tool) == finish


def test_r21_empty_completion_still_announces_role() -> None:
    out = stream([{"done": True, "done_reason": "stop"}])
    assert choices(out) == [({"role": "assistant", "content": ""}, None), ({}, "stop")]


def test_error_line_raises() -> None:
    with pytest.raises(UpstreamError):
        stream([{"message": {"content": "Yes"}, "done": False}, {"error": "runner died"}])


def test_aggregate_non_streaming() -> None:
    lines = [
        {"message": {"thinking": "2+2"}, "done": False},
        {"message": {"content": "4"}, "done": False},
        {
            "message": {"content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 5,
            "eval_count": 2,
        },
    ]
    out = translate.aggregate_chat(lines, completion_id="c", created=1, model="m")
    assert out["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "4", "reasoning_content": "2+2"},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert out["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    with pytest.raises(UpstreamError):
        translate.aggregate_chat(lines[:2], completion_id="c", created=1, model="m")


def test_r24_models_list() -> None:
    tags = {
        "models": [
            {
                "name": "legacy:latest",
                "model": "ns/exposed:latest",
                "modified_at": "2023-06-16T17:03:22Z",
            }
        ]
    }
    assert translate.models_list(tags, NOMAP) == [
        {"id": "ns/exposed:latest", "object": "model", "created": 1686935002, "owned_by": "ollama"}
    ]
    assert translate.models_list({"models": None}, NOMAP) == []
    mapped = translate.models_list(tags, {"pub": "ns/exposed:latest"})
    assert [m["id"] for m in mapped] == ["pub"] and mapped[0]["created"] == 1686935002


def test_r26_embeddings() -> None:
    req = translate.embeddings_request_to_ollama({"model": "e", "input": ["Hello", "World"]}, NOMAP)
    assert req.payload == {"model": "e", "input": ["Hello", "World"]}
    for bad in ({"model": "e"}, {"model": "e", "input": []}, {"model": "e", "input": [1, 2]}):
        with pytest.raises(InvalidRequest):
            translate.embeddings_request_to_ollama(bad, NOMAP)
    out = translate.embeddings_response({"embeddings": [[0.5, 1.0]], "prompt_eval_count": 8}, req)
    assert out["usage"] == {"prompt_tokens": 8, "total_tokens": 8}
    assert out["data"] == [{"object": "embedding", "index": 0, "embedding": [0.5, 1.0]}]
