"""Pure tests of the Anthropic, Responses and Completions translators (cases from
../shared/DIALECTS-WIRE.md §6: M = Messages, R = Responses, C = Completions)."""

from __future__ import annotations

from typing import Any

import pytest

from qwengw import translate
from qwengw.errors import InvalidRequest, UpstreamError, UpstreamTimeout

NOMAP: dict[str, str] = {}


def line(content: str = "", thinking: str = "", calls: list[Any] | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        msg["thinking"] = thinking
    if calls:
        msg["tool_calls"] = calls
    return {"message": msg, "done": False}


def done(reason: str = "stop", **msg: Any) -> dict[str, Any]:
    return {
        "message": {"role": "assistant", "content": "", **msg},
        "done": True,
        "done_reason": reason,
        "prompt_eval_count": 12,
        "eval_count": 3,
    }


def call(name: str, **args: Any) -> dict[str, Any]:
    return {"function": {"name": name, "arguments": args}}


# ----------------------------------------------------------------------------- Messages


def a_native(body: dict[str, Any]) -> dict[str, Any]:
    base = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    return translate.messages_request({**base, **body}, NOMAP).call.payload


def a_events(lines: list[dict[str, Any]], stops: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    s = translate.MessagesStream("msg_1", "m", 7, stops)
    events = list(s.start())
    for ln in lines:
        events.extend(s.feed(ln))
    return events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        kind = e["type"]
        if kind == "content_block_start":
            kind += f"({e['index']}:{e['content_block']['type']})"
        elif kind in ("content_block_delta", "content_block_stop"):
            kind += f"({e['index']})"
        out.append(kind)
    return out


def test_m1_text_only_exact_sequence() -> None:
    events = a_events([line("Hi"), line(" there"), done()])
    assert kinds(events) == [
        "message_start",
        "ping",
        "content_block_start(0:text)",
        "content_block_delta(0)",
        "content_block_delta(0)",
        "content_block_stop(0)",
        "message_delta",
        "message_stop",
    ]
    assert events[0]["message"]["usage"]["input_tokens"] == 7  # the estimate
    assert events[2]["content_block"] == {"type": "text", "text": ""}
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[-2]["usage"]["input_tokens"] == 12 and events[-2]["usage"]["output_tokens"] == 3


def test_m2_m3_thinking_text_thinking_text_get_new_blocks() -> None:
    events = a_events([line(thinking="a"), line("b"), line(thinking="c"), line("d"), done()])
    starts = [k for k in kinds(events) if k.startswith("content_block_start")]
    assert starts == [
        "content_block_start(0:thinking)",
        "content_block_start(1:text)",
        "content_block_start(2:thinking)",
        "content_block_start(3:text)",
    ]
    assert events[2]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    # each block is stopped before the next starts
    order = kinds(events)
    for i in range(3):
        assert order.index(f"content_block_stop({i})") < order.index(
            starts[i + 1].replace("start", "start")
        )


def test_m4_m5_thinking_then_two_tool_calls_on_one_line() -> None:
    events = a_events([line(thinking="plan"), line(calls=[call("f", a=1), call("g")]), done()])
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [s["content_block"]["type"] for s in starts] == ["thinking", "tool_use", "tool_use"]
    ids = [s["content_block"]["id"] for s in starts[1:]]
    assert len(set(ids)) == 2 and all(i.startswith("toolu_") and len(i) == 30 for i in ids)
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta"]
    partial = [d["partial_json"] for d in deltas if d["type"] == "input_json_delta"]
    assert partial == ['{"a":1}', "{}"]  # M6: empty arguments are "{}"
    assert events[-2]["delta"]["stop_reason"] == "tool_use"


def test_m7_m8_calls_on_done_and_length_wins() -> None:
    events = a_events([line("x"), done(tool_calls=[call("f")])])
    assert [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"] == [
        "text",
        "tool_use",
    ]
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    cut = a_events([line(calls=[call("f")]), done("length")])
    assert cut[-2]["delta"]["stop_reason"] == "max_tokens"


def test_m9_error_line_raises_and_fail_event_has_anthropic_shape() -> None:
    s = translate.MessagesStream("msg_1", "m", 1)
    list(s.start())
    list(s.feed(line("The answer")))
    with pytest.raises(UpstreamError) as err:
        list(s.feed({"error": "runner died at /var/lib/ollama/x"}))
    (event,) = s.fail(err.value)
    assert event == {
        "type": "error",
        "error": {"type": "api_error", "message": "the model failed while generating"},
    }
    (timeout,) = s.fail(UpstreamTimeout("too slow"))
    assert timeout["error"]["type"] == "timeout_error"


def test_stop_sequence_is_matched_across_chunks_and_named() -> None:
    events = a_events([line("Hello wor"), line("ld, and more"), done()], stops=("world", "zz"))
    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert "".join(texts) == "Hello "
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "world"}
    assert events[-1]["type"] == "message_stop"
    held = a_events([line("ab"), done()], stops=("abc",))
    assert "".join(e["delta"]["text"] for e in held if e["type"] == "content_block_delta") == "ab"
    assert held[-2]["delta"]["stop_reason"] == "end_turn"


def test_m12_billing_header_is_dropped_and_system_blocks_joined() -> None:
    def system(cch: str) -> dict[str, Any]:
        return a_native(
            {
                "system": [
                    {
                        "type": "text",
                        "text": f"x-anthropic-billing-header: cc_version=2; cch={cch};",
                    },
                    {
                        "type": "text",
                        "text": "You are Claude Code.",
                        "cache_control": {"type": "ephemeral"},
                    },
                    {"type": "text", "text": "Be brief."},
                ]
            }
        )

    one = system("a1b2c")
    assert one["messages"][0] == {"role": "system", "content": "You are Claude Code.\n\nBe brief."}
    assert one == system("ffff0")


def test_m13_tool_result_blocks_come_first_with_names_and_errors() -> None:
    out = a_native(
        {
            "messages": [
                {"role": "user", "content": "weather"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "call it", "signature": ""},
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "no network"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": "aGk=",
                                    },
                                },
                            ],
                        },
                        {"type": "text", "text": "try again"},
                    ],
                },
            ]
        }
    )
    msgs = out["messages"]
    assert msgs[1] == {
        "role": "assistant",
        "content": "Checking.",
        "thinking": "call it",
        "tool_calls": [{"id": "toolu_1", "function": {"name": "w", "arguments": {"c": "P"}}}],
    }
    assert msgs[2] == {
        "role": "tool",
        "content": "Error: no network",
        "tool_call_id": "toolu_1",
        "tool_name": "w",
        "images": ["aGk="],
    }
    assert msgs[3] == {"role": "user", "content": "try again"}


def test_m14_system_messages_inside_messages() -> None:
    out = a_native(
        {
            "system": "S",
            "messages": [
                {"role": "system", "content": "early"},
                {"role": "user", "content": "Hi"},
                {"role": "system", "content": "mid"},
                {"role": "user", "content": "more"},
            ],
        }
    )
    assert out["messages"] == [
        {"role": "system", "content": "S\n\nearly"},
        {"role": "user", "content": "Hi"},
        {"role": "user", "content": "<system-reminder>\nmid\n</system-reminder>"},
        {"role": "user", "content": "more"},
    ]


@pytest.mark.parametrize(
    "body, think",
    [
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, True),
        ({"thinking": {"type": "disabled"}}, False),
        ({"thinking": {"type": "adaptive"}}, None),
        ({"thinking": {"type": "adaptive"}, "output_config": {"effort": "high"}}, "high"),
    ],
)
def test_thinking_maps_to_think(body: dict[str, Any], think: Any) -> None:
    req = translate.messages_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], **body},
        NOMAP,
    )
    assert req.call.payload.get("think") == think and req.call.relax_think


def test_tools_tool_choice_and_server_tools() -> None:
    tools = [
        {"name": "w", "description": "weather", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
    ]
    auto = a_native({"tools": tools})
    assert auto["tools"] == [
        {
            "type": "function",
            "function": {"name": "w", "description": "weather", "parameters": {"type": "object"}},
        }
    ]
    assert "format" not in auto
    forced = a_native({"tools": tools, "tool_choice": {"type": "tool", "name": "w"}})
    assert forced["format"]["properties"]["name"] == {"const": "w"}
    anyone = translate.messages_request(
        {
            "model": "m",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
            "tools": tools,
            "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        },
        NOMAP,
    )
    assert anyone.call.tool_policy == translate.ToolPolicy(forced=("w",), single=True)
    assert "tools" not in a_native({"tools": tools, "tool_choice": {"type": "none"}})


@pytest.mark.parametrize(
    "body, param",
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role"),
        ({"temperature": 1.5}, "temperature"),
        ({"stop_sequences": "END"}, None),  # a string is accepted as one sequence
        ({"stop_sequences": [1]}, "stop_sequences[0]"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"system": [{"type": "text", "text": 5}]}, "system[0].text"),
        ({"tools": 0}, "tools"),
        ({"tools": {}}, "tools"),
        ({"tools": [{"name": "w", "input_schema": []}]}, "tools[0].input_schema"),
        ({"tools": [{"name": "w", "input_schema": ""}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),  # forced, but no tools
        (
            {"messages": [{"role": "user", "content": [{"type": "bogus", "text": "hi"}]}]},
            "messages[0].content[0].type",
        ),
        ({"messages": [{"role": "user", "content": [{}]}]}, "messages[0].content[0].type"),
        (
            {"messages": [{"role": "user", "content": [{"type": True}]}]},
            "messages[0].content[0].type",
        ),
        (  # blocks of Anthropic's server tools carry nothing to read: accepted, left out
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "redacted_thinking", "data": "xyz"},
                            {"type": "web_search_tool_result", "tool_use_id": "s", "content": []},
                            {"type": "text", "text": "ok"},
                        ],
                    },
                    {"role": "user", "content": "more"},
                ]
            },
            None,
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "url", "url": "http://10.0.0.1/a.png"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0].source.type",
        ),
    ],
)
def test_m19_bad_requests_name_the_field(body: dict[str, Any], param: str | None) -> None:
    base = {"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hi"}]}
    full = {k: v for k, v in {**base, **body}.items() if v is not None}
    if param is None:
        translate.messages_request(full, NOMAP)
        return
    with pytest.raises(InvalidRequest) as err:
        translate.messages_request(full, NOMAP)
    assert err.value.param == param


def test_m18_aggregate_matches_the_stream() -> None:
    lines = [line(thinking="t"), line("Answer."), line(calls=[call("f", x=1)]), done()]
    msg = translate.aggregate_message(lines, translate.MessagesStream("msg_1", "pub", 9))
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][0] == {"type": "thinking", "thinking": "t", "signature": ""}
    assert msg["content"][2]["input"] == {"x": 1}
    assert msg["stop_reason"] == "tool_use" and msg["stop_sequence"] is None
    assert msg["usage"]["input_tokens"] == 12 and msg["model"] == "pub"
    empty = translate.aggregate_message([done()], translate.MessagesStream("m", "p", 1))
    assert empty["content"] == []  # never an empty text block
    with pytest.raises(UpstreamError):
        translate.aggregate_message([line("cut")], translate.MessagesStream("m", "p", 1))


def test_count_tokens_body_needs_no_max_tokens() -> None:
    req = translate.messages_request(
        {"model": "m", "messages": [{"role": "user", "content": "x" * 70}]}, NOMAP, counting=True
    )
    assert translate.prompt_chars(req.call.payload) == 70


# ----------------------------------------------------------------------------- Responses


def r_req(body: dict[str, Any]) -> translate.ResponsesRequest:
    return translate.responses_request({"model": "m", "input": "Hi", **body}, NOMAP)


def r_events(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    s = translate.ResponsesStream("resp_1", 1, "m", r_req({}).echo)
    events = list(s.start())
    for ln in lines:
        events.extend(s.feed(ln))
    return events


def test_r1_text_only_sequence_numbers_and_order() -> None:
    events = r_events([line("Hi"), line(" there"), done()])
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = events[2]["item"]
    assert added["content"] == [] and added["status"] == "in_progress"
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hi there"
    assert final["usage"]["total_tokens"] == 15 and final["store"] is False


def test_r2_r3_reasoning_text_then_call_each_get_their_own_index() -> None:
    events = r_events(
        [line(thinking="plan"), line("Checking."), line(calls=[call("w", c="P")]), done()]
    )
    added = [
        (e["output_index"], e["item"]["type"])
        for e in events
        if e["type"] == "response.output_item.added"
    ]
    assert added == [(0, "reasoning"), (1, "message"), (2, "function_call")]
    types = [e["type"] for e in events]
    assert types.index("response.reasoning_summary_part.added") < types.index(
        "response.reasoning_summary_text.delta"
    )
    done_items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    final = events[-1]["response"]["output"]
    assert [i["id"] for i in done_items] == [i["id"] for i in final]
    fc = final[2]
    assert fc["id"].startswith("fc_") and fc["call_id"].startswith("call_")
    assert fc["arguments"] == '{"c":"P"}'
    args_done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert args_done["name"] == "w"


def test_r6_length_is_incomplete() -> None:
    events = r_events([line("cut"), done("length")])
    assert events[-1]["type"] == "response.incomplete"
    assert events[-1]["response"]["incomplete_details"] == {"reason": "max_output_tokens"}


def test_r7_error_then_failed_without_the_half_written_item() -> None:
    s = translate.ResponsesStream("resp_1", 1, "m", r_req({}).echo)
    list(s.start())
    list(s.feed(line("half")))
    events = list(s.fail(UpstreamError("the model failed while generating")))
    assert [e["type"] for e in events] == ["error", "response.failed"]
    assert (
        events[1]["response"]["output"] == []
        and events[1]["response"]["error"]["code"] == "server_error"
    )


def test_r5_r9_round_trip_items_and_one_system_message() -> None:
    req = r_req(
        {
            "instructions": "I",
            "input": [
                {"role": "developer", "content": "D"},
                {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "S"}],
                },
                {"role": "user", "content": "weather?"},
                {
                    "type": "reasoning",
                    "id": "rs_1",
                    "summary": [{"type": "summary_text", "text": "need tool"}],
                },
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_9",
                    "name": "w",
                    "arguments": '{"c":"P"}',
                },
                {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
            ],
        }
    )
    msgs = req.call.payload["messages"]
    assert msgs[0] == {"role": "system", "content": "I\n\nD\n\nS"}
    assert msgs[2] == {
        "role": "assistant",
        "content": "",
        "thinking": "need tool",
        "tool_calls": [{"id": "call_9", "function": {"name": "w", "arguments": {"c": "P"}}}],
    }
    assert msgs[3] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "call_9",
        "tool_name": "w",
    }


def test_r_text_after_calls_stays_in_the_calling_turn() -> None:
    """Output items [message, function_call, message] sent back: one assistant turn, then the
    results (an assistant turn between calls and results would break the chat template)."""
    call = {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"}
    said = [{"type": "output_text", "text": "Before"}]
    after = [{"type": "output_text", "text": " after"}]
    req = r_req(
        {
            "input": [
                {"role": "user", "content": "weather?"},
                {"type": "message", "role": "assistant", "content": said},
                call,
                {"type": "message", "role": "assistant", "content": after},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ]
        }
    )
    roles = [(m["role"], m["content"]) for m in req.call.payload["messages"]]
    assert roles == [("user", "weather?"), ("assistant", "Before after"), ("tool", "sunny")]


@pytest.mark.parametrize(
    "body, param, code",
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "previous_response_not_found"),
        ({"store": True}, "store", None),
        ({"conversation": "conv_1"}, "conversation", None),
        ({"background": True}, "background", None),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", None),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id", None),
        ({"reasoning": {"effort": "huge"}}, "reasoning.effort", None),
        ({"max_output_tokens": -1}, "max_output_tokens", None),
        ({"input": 5}, "input", None),
        ({"tools": 0}, "tools", None),
        ({"input": [{"type": "reasoning", "summary": 0}]}, "input[0].summary", None),
        ({"tool_choice": "required"}, "tool_choice", None),  # forced, but no tools
        (
            {"text": {"format": {"type": "json_schema", "name": 5, "schema": {}}}},
            "text.format.name",
            None,
        ),
    ],
)
def test_r8_r14_stateful_and_bad_fields_are_400(
    body: dict[str, Any], param: str, code: str | None
) -> None:
    with pytest.raises(InvalidRequest) as err:
        r_req(body)
    assert err.value.param == param
    if code:
        assert err.value.code == code


def test_r11_text_format_and_forced_tool() -> None:
    assert r_req({"text": {"format": {"type": "json_object"}}}).call.payload["format"] == "json"
    schema = {"type": "object"}
    fmt = {"type": "json_schema", "name": "x", "schema": schema}
    assert r_req({"text": {"format": fmt}}).call.payload["format"] == schema
    tools = [{"type": "function", "name": "w", "parameters": {"type": "object"}}]
    forced = r_req({"tools": tools, "tool_choice": "required"}).call
    assert forced.payload["format"]["properties"]["name"] == {"const": "w"}
    assert forced.tool_policy == translate.ToolPolicy(forced=("w",))


def test_r13_non_streaming_keeps_text_and_call() -> None:
    s = translate.ResponsesStream("resp_1", 1, "m", r_req({}).echo)
    out = translate.aggregate_response([line("Checking."), done(tool_calls=[call("w")])], s)
    assert [i["type"] for i in out["output"]] == ["message", "function_call"]
    assert out["status"] == "completed"


# ----------------------------------------------------------------------------- Completions


def c_req(body: dict[str, Any]) -> translate.CompletionRequest:
    return translate.completion_request({"model": "m", "prompt": "def f(", **body}, NOMAP)


def test_c1_c2_raw_without_suffix_template_with_suffix() -> None:
    plain = c_req({"max_tokens": 16, "stop": "\n\n"}).call.payload
    assert plain == {
        "model": "m",
        "prompt": "def f(",
        "stream": True,
        "think": False,
        "raw": True,
        "options": {"num_predict": 16, "stop": ["\n\n"]},
    }
    fim = c_req({"suffix": "    return x"}).call.payload
    assert fim["suffix"] == "    return x" and "raw" not in fim
    assert c_req({"prompt": ["one"]}).call.payload["prompt"] == "one"


def test_c3_c4_stream_shape_and_load_reason() -> None:
    s = translate.CompletionStream("cmpl-1", 1, "m", include_usage=True)
    gen = [{"response": "a", "done": False}, {"response": "b", "done": True, "done_reason": "load"}]
    chunks = [c for ln in gen for c in s.feed(ln)]
    assert [c["choices"][0]["text"] for c in chunks[:-1]] == ["a", "b", ""]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"  # never "load"
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["choices"] == []
    agg = translate.aggregate_completion(gen, completion_id="c", created=1, model="m")
    assert agg["choices"][0]["text"] == "ab" and agg["object"] == "text_completion"


@pytest.mark.parametrize(
    "body, param",
    [
        ({"prompt": ["a", "b"]}, "prompt"),
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"n": 2}, "n"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True}, "echo"),
        ({"logprobs": 2}, "logprobs"),
        ({"suffix": 5}, "suffix"),
    ],
)
def test_c5_c7_refused(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        c_req(body)
    assert err.value.param == param
