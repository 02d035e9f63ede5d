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
    auto = native({**base, "tool_choice": "auto"})
    assert auto["tools"] == tools and "format" not in auto
    # A named function: every tool stays offered (a stable prompt), the format forces this one.
    chosen = native({**base, "tool_choice": {"type": "function", "function": {"name": "b"}}})
    assert chosen["tools"] == tools
    assert chosen["format"] == {
        "type": "object",
        "properties": {"name": {"const": "b"}, "arguments": {"type": "object"}},
        "required": ["name", "arguments"],
    }
    required = native({**base, "tool_choice": "required"})
    assert [v["properties"]["name"] for v in required["format"]["oneOf"]] == [
        {"const": "a"},
        {"const": "b"},
    ]
    with pytest.raises(InvalidRequest) as err:
        native({**base, "tool_choice": {"type": "function", "function": {"name": "zz"}}})
    assert err.value.param == "tool_choice"


def test_forced_format_rebases_pydantic_refs() -> None:
    params = {
        "$defs": {"City": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "type": "object",
        "properties": {"city": {"$ref": "#/$defs/City"}},
    }
    tools = [{"type": "function", "function": {"name": "w", "parameters": params}}]
    fmt = translate.forced_format(tools, ["w"])
    assert fmt["properties"]["arguments"] == {"$ref": "#/$defs/tool0"}
    moved = fmt["$defs"]["tool0"]
    assert moved["properties"]["city"] == {"$ref": "#/$defs/tool0/$defs/City"}


def done(**extra: Any) -> dict[str, Any]:
    return {"message": {"content": ""}, "done": True, "done_reason": "stop", **extra}


def test_forced_call_becomes_a_tool_call_on_the_done_line() -> None:
    policy = translate.ToolPolicy(forced=("get_weather",))
    lines = [
        {"message": {"thinking": "need weather"}, "done": False},
        {"message": {"content": '{"name": "get_weather", '}, "done": False},
        {"message": {"content": '"arguments": {"city": "Paris"}}'}, "done": False},
        done(),
    ]
    out = list(translate.apply_tool_policy(lines, policy))
    assert out[0]["message"]["thinking"] == "need weather"
    assert [line["message"]["content"] for line in out] == ["", "", "", ""]
    assert out[-1]["message"]["tool_calls"] == [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    answer = translate.aggregate_chat(out, completion_id="c", created=1, model="m")
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None


def test_forced_call_cut_by_max_tokens_is_text() -> None:
    policy = translate.ToolPolicy(forced=("f",))
    lines = [{"message": {"content": '{"name": "f", "argu'}}, done(done_reason="length")]
    out = list(translate.apply_tool_policy(lines, policy))
    assert out[-1]["message"]["content"] == '{"name": "f", "argu'
    assert "tool_calls" not in out[-1]["message"]


def test_forced_call_keeps_only_native_calls_of_the_forced_tool() -> None:
    weather = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    clock = {"function": {"name": "get_time", "arguments": {}}}
    lines = [done(message={"content": "", "tool_calls": [weather, clock]})]
    out = list(translate.apply_tool_policy(lines, translate.ToolPolicy(forced=("get_time",))))
    assert out[-1]["message"]["tool_calls"] == [clock]
    only_other = [done(message={"content": "", "tool_calls": [weather]})]
    out = list(translate.apply_tool_policy(only_other, translate.ToolPolicy(forced=("get_time",))))
    assert "tool_calls" not in out[-1]["message"]  # no call of an unallowed tool gets through


def test_single_call_policy_keeps_the_first_call() -> None:
    call = {"function": {"name": "f", "arguments": {}}}
    lines = [
        {"message": {"content": "", "tool_calls": [call, call]}},
        done(message={"tool_calls": [call]}),
    ]
    out = list(translate.apply_tool_policy(lines, translate.ToolPolicy(single=True)))
    assert out[0]["message"]["tool_calls"] == [call]
    assert "tool_calls" not in out[1]["message"]


def test_parallel_tool_calls_false_sets_single_policy() -> None:
    tools = [{"type": "function", "function": {"name": "a"}}]
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": tools}
    req = translate.chat_request_to_ollama({**body, "parallel_tool_calls": False}, NOMAP)
    assert req.call.tool_policy == translate.ToolPolicy(single=True)
    assert translate.chat_request_to_ollama(body, NOMAP).call.tool_policy is None


def test_legacy_functions_are_tools_and_answer_as_function_call() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "function_call": {"name": "w", "arguments": '{"c": 1}'},
            },
            {"role": "function", "name": "w", "content": "sunny"},
        ],
        "functions": [{"name": "w", "description": "weather", "parameters": {"type": "object"}}],
        "function_call": {"name": "w"},
    }
    req = translate.chat_request_to_ollama(body, NOMAP)
    assert req.legacy_functions
    out = req.payload
    assert out["tools"] == [
        {
            "type": "function",
            "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}},
        }
    ]
    assert out["format"]["properties"]["name"] == {"const": "w"}
    assert out["messages"][1]["tool_calls"] == [
        {"function": {"index": 0, "name": "w", "arguments": {"c": 1}}}
    ]
    assert out["messages"][2] == {"role": "tool", "content": "sunny", "tool_name": "w"}
    lines = [
        done(
            message={
                "content": "",
                "tool_calls": [{"function": {"name": "w", "arguments": {"c": 2}}}],
            }
        )
    ]
    answer = translate.aggregate_chat(
        lines, completion_id="c", created=1, model="m", legacy_functions=True
    )
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "function_call"
    assert choice["message"]["function_call"] == {"name": "w", "arguments": '{"c":2}'}
    assert "tool_calls" not in choice["message"]
    s = translate.ChatStream("id", 1, "m", legacy_functions=True)
    chunks = [c for line in lines for c in s.feed(line)]
    assert chunks[0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": None,
        "function_call": {"name": "w", "arguments": '{"c":2}'},
    }
    assert chunks[-1]["choices"][0]["finish_reason"] == "function_call"


def test_refusal_parts_and_schema_less_json_schema() -> None:
    out = native(
        {
            "model": "m",
            "messages": [
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't."}]},
                {"role": "user", "content": "ok"},
            ],
            "response_format": {"type": "json_schema", "json_schema": {"name": "x"}},
        }
    )
    assert out["messages"][0] == {"role": "assistant", "content": "I can't."}
    assert out["format"] == "json"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"audio": {"voice": "x"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"modalities": 3}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
        ({"think": ["x"]}, "think"),
        ({"reasoning_effort": {"x": 1}}, "reasoning_effort"),
        ({"reasoning": {"effort": ["high"]}}, "reasoning.effort"),
        ({"max_tokens": 10**30}, "max_tokens"),
        ({"seed": 10**30}, "seed"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"stop": ["a", 3]}, "stop[1]"),
        ({"stop": ["s"] * 17}, "stop"),
        ({"messages": [{"role": ["user"], "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": {"a": 1}, "content": "x"}]}, "messages[0].role"),
        ({"stream": "yes"}, "stream"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"tools": [{"type": "function", "function": {"name": 3}}]}, "tools[0].function.name"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"tools": 0}, "tools"),
        ({"tools": ""}, "tools"),
        (
            {
                "messages": [
                    {"role": "user", "content": "x"},
                    {"role": "assistant", "content": "y", "tool_calls": 0},
                ]
            },
            "messages[1].tool_calls",
        ),
        ({"tools": {}}, "tools"),
        ({"tool_choice": "required"}, "tool_choice"),  # forced, but no tools to call
        ({"tools": [], "tool_choice": "required"}, "tool_choice"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": [1], "schema": {}},
                }
            },
            "response_format.json_schema.name",
        ),
    ],
)
def test_wrong_types_and_values_are_400_naming_the_field(extra: dict[str, Any], param: str) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], **extra}
    with pytest.raises(InvalidRequest) as err:
        native(body)
    assert err.value.param == param


def test_deeply_nested_tool_arguments_are_a_400() -> None:
    deep = "[" * 100000 + "]" * 100000
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": deep}}
    body = {"model": "m", "messages": [{"role": "assistant", "tool_calls": [call]}]}
    with pytest.raises(InvalidRequest):
        native(body)


def test_model_map() -> None:
    models = {"public": "registry.internal/qwen3:32b"}
    body = {"model": "public", "messages": [{"role": "user", "content": "x"}]}
    assert native(body, models)["model"] == "registry.internal/qwen3:32b"
    with pytest.raises(ModelNotFound):
        native({**body, "model": "registry.internal/qwen3:32b"}, models)


def test_prompt_chars_counts_every_character_the_model_reads() -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 50}}
    call = {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": '{"a":"' + "x" * 40 + '"}'},
    }
    base = {"model": "m", "messages": [{"role": "system", "content": "abc"}]}
    plain = translate.prompt_chars(native(base))
    assert plain == 3
    assert translate.prompt_chars(native({**base, "tools": [tool]})) > plain + 50
    with_call = native(
        {**base, "messages": [*base["messages"], {"role": "assistant", "tool_calls": [call]}]}
    )
    assert translate.prompt_chars(with_call) > plain + 40
    assert translate.prompt_chars(native({**base, "stop": ["x" * 30]})) == plain + 30
    thinking = {"role": "assistant", "content": "", "reasoning_content": "t" * 60}
    assert translate.prompt_chars(native({**base, "messages": [*base["messages"], thinking]})) == 63


def test_bounds_on_counts_and_size() -> None:
    bounds = translate.Bounds(max_prompt_chars=100, max_messages=3, max_tools=1, max_stop=2)
    msgs = [{"role": "user", "content": ""}] * 4
    req = translate.chat_request_to_ollama({"model": "m", "messages": msgs}, NOMAP, bounds)
    with pytest.raises(InvalidRequest) as err:
        translate.check_bounds(req.call, bounds)
    assert err.value.param == "messages"
    big = translate.chat_request_to_ollama(
        {"model": "m", "messages": [{"role": "user", "content": "x" * 101}]}, NOMAP, bounds
    )
    with pytest.raises(InvalidRequest) as err:
        translate.check_bounds(big.call, bounds)
    assert err.value.code == "context_length_exceeded"
    assert "maximum context length is 100" in err.value.message


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


def test_tool_call_delta_has_null_content_and_chunks_carry_null_usage() -> None:
    call = {"function": {"name": "f", "arguments": {"a": 1}}}
    out = stream([done(message={"content": "", "tool_calls": [call]})], include_usage=True)
    first = out[0]["choices"][0]["delta"]
    assert first["content"] is None and first["tool_calls"][0]["function"]["arguments"] == '{"a":1}'
    assert all(c["usage"] is None for c in out[:-1]) and out[-1]["usage"]["prompt_tokens"] == 0
    assert all("system_fingerprint" in c for c in out)
    assert all(c["choices"][0]["logprobs"] is None for c in out[:-1])


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
        "message": {
            "role": "assistant",
            "content": "4",
            "refusal": None,
            "reasoning_content": "2+2",
        },
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
        {
            "id": "ns/exposed:latest",
            "object": "model",
            "created": 1686935002,
            "owned_by": "ollama",
            "type": "model",
            "display_name": "ns/exposed:latest",
            "created_at": "2023-06-16T17:03:22Z",
        }
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


@pytest.mark.parametrize("inp", [[1, 2, 3], [[1, 2], [3]]])
def test_embedding_token_ids_get_a_400_with_the_client_setting(inp: Any) -> None:
    with pytest.raises(InvalidRequest) as err:
        translate.embeddings_request_to_ollama({"model": "e", "input": inp}, NOMAP)
    assert "check_embedding_ctx_length=False" in err.value.message
    assert err.value.param == "input"


def test_embedding_inputs_are_bounded() -> None:
    with pytest.raises(InvalidRequest) as err:
        translate.embeddings_request_to_ollama({"model": "e", "input": [""] * 5}, NOMAP, 4)
    assert err.value.param == "input"
