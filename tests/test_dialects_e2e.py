"""The Anthropic, Responses and Completions dialects end to end: the official `anthropic` and
`openai` SDKs against a real ``gunicorn wsgi:app`` over the fake Ollama. Each test checks what
the client got and what Ollama was asked; the gate (keys, limits, sizes, allowlist, breaker,
cancel-on-disconnect) behaves on every dialect as on chat."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests
from openai.types import Completion
from openai.types.responses import Response as OpenAIResponse

from tests.conftest import Gateway
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

KEY = "sk-dialects-key"
PUBLIC, INTERNAL = "qwen3", "qwen3:32b"
HI = [{"role": "user", "content": "Hi"}]
WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
CLAUDE_CODE = json.loads((Path(__file__).parent / "data" / "claude-code-request.json").read_text())


@pytest.fixture(scope="module")
def gw(fake_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "ollama_api": fake_ollama.url,
        "models": {
            PUBLIC: INTERNAL,
            "claude-sonnet-4-5-20250929": INTERNAL,
            "nothink": "qwen3:0.6b",
        },
        "auth": {"enabled": True, "valid_keys": [KEY]},
        # Claude Code's prompts are large: tools and system prompt alone are ~50 kB.
        "request": {"max_prompt_chars": 400_000, "max_body_bytes": 4 * 1024 * 1024},
    }
    g = Gateway(config, tmp_path_factory.mktemp("dialects"), workers=1).start()
    yield g
    g.stop()


@pytest.fixture
def claude(gw: Gateway, fake: FakeOllama) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0, timeout=10)


@pytest.fixture
def oai(gw: Gateway, fake: FakeOllama) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)


def last(fake: FakeOllama, path: str = "/api/chat") -> dict[str, Any]:
    return [r for r in fake.state.requests if r.path == path][-1].body  # type: ignore[no-any-return]


def named_events(resp: requests.Response) -> list[tuple[str, dict[str, Any]]]:
    """SSE as (event name, data); asserts every event has both lines and they agree."""
    out, name = [], None
    for raw in resp.iter_lines():
        if raw.startswith(b"event: "):
            name = raw[7:].decode()
        elif raw.startswith(b"data: "):
            data = json.loads(raw[6:])
            assert name == data["type"], (name, data)
            out.append((name, data))
            name = None
    return out


# ----------------------------------------------------------------------------- Anthropic


def test_messages_create_maps_both_ways(
    claude: anthropic.Anthropic, gw: Gateway, fake: FakeOllama
) -> None:
    raw = claude.messages.with_raw_response.create(
        model=PUBLIC,
        max_tokens=64,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=HI,
        metadata={"user_id": "user_42"},
        # Sampling fields are gone from the newest SDK's signature; older clients send them.
        extra_body={"temperature": 0.3, "top_k": 20},
    )
    msg = raw.parse()
    assert msg.content[0].text == "Hello from the fake Ollama!"
    assert msg.model == PUBLIC and msg.id.startswith("msg_") and msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == 11 and msg.usage.output_tokens == 5
    rid = raw.headers["request-id"]
    sent = last(fake)
    assert sent["model"] == INTERNAL
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["options"] == {"num_predict": 64, "temperature": 0.3, "top_k": 20}
    rec = gw.audit_for(rid)
    assert rec["dialect"] == "anthropic-messages" and rec["user"] == "user_42"
    assert rec["prompt_tokens"] == 11 and rec["status"] == 200


def test_messages_stream_text_and_final_message(
    claude: anthropic.Anthropic, fake: FakeOllama
) -> None:
    with claude.messages.stream(model=PUBLIC, max_tokens=64, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello from the fake Ollama!" == final.content[0].text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 5


def test_messages_stream_wire_order(gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(
        thinking="let me think",
        tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}],
    )
    resp = requests.post(
        gw.url + "/v1/messages?beta=true",
        json={
            "model": PUBLIC,
            "max_tokens": 64,
            "messages": HI,
            "stream": True,
            "tools": [WEATHER],
        },
        headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "x-2025"},
        stream=True,
        timeout=10,
    )
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    events = named_events(resp)
    names = [n for n, _ in events]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == [
        "message_delta",
        "message_stop",
    ]
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(d["index"], d["content_block"]["type"]) for d in starts] == [
        (0, "thinking"),
        (1, "text"),
        (2, "tool_use"),
    ]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_messages_tools_round_trip_and_forced_choice(
    claude: anthropic.Anthropic, fake: FakeOllama
) -> None:
    fake.behave(schema_values={"city": "Paris"})
    msg = claude.messages.create(
        model=PUBLIC, max_tokens=64, messages=HI, tools=[WEATHER], tool_choice={"type": "any"}
    )
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert (
        msg.stop_reason == "tool_use"
        and use.name == "get_weather"
        and use.input == {"city": "Paris"}
    )
    assert use.id.startswith("toolu_")
    assert last(fake)["format"]["properties"]["name"] == {"const": "get_weather"}
    fake.behave(reply="22 degrees in Paris.")
    again = claude.messages.create(
        model=PUBLIC,
        max_tokens=64,
        tools=[WEATHER],
        messages=[
            *HI,
            {
                "role": "assistant",
                "content": [b.model_dump(exclude_none=True) for b in msg.content],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "22 C"}],
            },
        ],
    )
    assert again.content[0].text == "22 degrees in Paris."
    sent = last(fake)["messages"]
    assert sent[1]["tool_calls"] == [
        {"id": use.id, "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert sent[2] == {
        "role": "tool",
        "content": "22 C",
        "tool_call_id": use.id,
        "tool_name": "get_weather",
    }


def test_messages_thinking_blocks(claude: anthropic.Anthropic, fake: FakeOllama) -> None:
    fake.behave(thinking="2 plus 2")
    msg = claude.messages.create(
        model=PUBLIC,
        max_tokens=64,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert msg.content[0].type == "thinking" and msg.content[0].thinking.startswith("2 plus 2")
    assert msg.content[0].signature == "" and msg.content[1].type == "text"
    assert last(fake)["think"] is True
    with claude.messages.stream(
        model=PUBLIC,
        max_tokens=64,
        messages=HI,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        kinds = {e.type for e in stream if e.type == "thinking"}
        final = stream.get_final_message()
    assert kinds == {"thinking"} and final.content[0].thinking.startswith("2 plus 2")


def test_thinking_on_a_model_that_cannot_think_is_dropped(
    claude: anthropic.Anthropic, fake: FakeOllama
) -> None:
    fake.behave(no_thinking=True)
    thinking = {"type": "enabled", "budget_tokens": 1024}
    msg = claude.messages.create(model="nothink", max_tokens=9, messages=HI, thinking=thinking)
    assert msg.content[0].text == "Hello from the fake Ollama!"
    assert "think" not in last(fake)
    before = len(fake.chat_requests())
    claude.messages.create(model="nothink", max_tokens=9, messages=HI, thinking=thinking)
    assert len(fake.chat_requests()) == before + 1  # remembered: no second refused attempt


def test_count_tokens_without_calling_ollama(
    claude: anthropic.Anthropic, gw: Gateway, fake: FakeOllama
) -> None:
    small = claude.messages.count_tokens(model=PUBLIC, messages=HI)
    big = claude.messages.count_tokens(
        model=PUBLIC, messages=[{"role": "user", "content": "word " * 2000}], tools=[WEATHER]
    )
    assert 0 < small.input_tokens < big.input_tokens and 2000 <= big.input_tokens <= 4000
    assert fake.state.requests == []
    r = requests.post(
        gw.url + "/v1/messages/count_tokens?beta=true",
        json={"model": PUBLIC, "messages": HI},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=5,
    )
    assert r.status_code == 200 and r.json()["input_tokens"] >= 1


def test_auth_token_and_api_key_both_work(gw: Gateway, fake: FakeOllama) -> None:
    by_token = anthropic.Anthropic(base_url=gw.url, auth_token=KEY, max_retries=0)
    assert by_token.messages.create(model=PUBLIC, max_tokens=9, messages=HI).content
    with pytest.raises(anthropic.AuthenticationError) as err:
        anthropic.Anthropic(base_url=gw.url, api_key="sk-wrong", max_retries=0).messages.create(
            model=PUBLIC, max_tokens=9, messages=HI
        )
    assert err.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "sk-wrong" not in str(err.value.body)


def test_anthropic_exception_classes(
    claude: anthropic.Anthropic, start_gateway: Any, fake: FakeOllama
) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(model=PUBLIC, max_tokens=0, messages=HI)
    assert bad.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="claude-opus-9", max_tokens=9, messages=HI)
    fake.behave(
        status=503, error="server busy, please try again.  maximum pending requests exceeded"
    )
    with pytest.raises(anthropic.OverloadedError) as busy:
        claude.messages.create(model=PUBLIC, max_tokens=9, messages=HI)
    assert busy.value.status_code == 529 and busy.value.response.headers["retry-after"]
    fake.reset()
    limited = start_gateway(
        {
            "ollama_api": fake.url,
            "auth": {"enabled": True, "valid_keys": [KEY]},
            "rate_limit": {"enabled": True, "max_requests": 1, "window_seconds": 60},
            "request": {"max_body_bytes": 2000},
            "upstream": {"first_token_timeout": 0.5},
        }
    )
    client = anthropic.Anthropic(base_url=limited.url, api_key=KEY, max_retries=0)
    client.messages.create(model=INTERNAL, max_tokens=9, messages=HI)
    with pytest.raises(anthropic.RateLimitError) as rate:
        client.messages.create(model=INTERNAL, max_tokens=9, messages=HI)
    assert rate.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert int(rate.value.response.headers["retry-after"]) >= 1
    big = [{"role": "user", "content": "x" * 5000}]
    with pytest.raises(anthropic.APIStatusError) as too_big:
        client.messages.create(model=INTERNAL, max_tokens=9, messages=big)
    assert too_big.value.status_code == 413
    assert too_big.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=limited.url, api_key="wrong", max_retries=0).messages.create(
            model=INTERNAL, max_tokens=9, messages=HI
        )
    time.sleep(0.2)  # the audit line is written when the response closes
    # The audit names each refusal's code, as for chat, though Anthropic's body has no `code`.
    audited = [(r["status"], r.get("error_code")) for r in limited.audit()]
    assert audited == [
        (200, None),
        (429, "rate_limit_exceeded"),
        (413, "request_too_large"),
        (401, "invalid_api_key"),
    ]
    fake.behave(first_token_delay=2)
    slow = start_gateway({"ollama_api": fake.url, "upstream": {"first_token_timeout": 0.5}})
    with pytest.raises(anthropic.APIStatusError) as timeout:
        anthropic.Anthropic(base_url=slow.url, api_key="x", max_retries=0).messages.create(
            model=INTERNAL, max_tokens=9, messages=HI
        )
    assert timeout.value.status_code == 504
    assert timeout.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]
    fake.reset()
    closed = start_gateway(
        {"ollama_api": fake.url, "whitelist": {"enabled": True, "ips": ["10.9.9.9"]}}
    )
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        anthropic.Anthropic(base_url=closed.url, api_key="x", max_retries=0).messages.create(
            model=INTERNAL, max_tokens=9, messages=HI
        )
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]


def test_error_mid_stream_is_an_error_event(claude: anthropic.Anthropic, fake: FakeOllama) -> None:
    fake.behave(error_after=2, error="runner crashed: /usr/lib/ollama/runners/cuda")
    with pytest.raises(anthropic.APIStatusError) as err:
        with claude.messages.stream(model=PUBLIC, max_tokens=64, messages=HI) as stream:
            for _ in stream:
                pass
    assert "/usr/lib" not in str(err.value) and "api_error" in str(err.value.body)


def test_stop_sequence_names_the_match(claude: anthropic.Anthropic, fake: FakeOllama) -> None:
    msg = claude.messages.create(model=PUBLIC, max_tokens=64, messages=HI, stop_sequences=["fake"])
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "fake"
    assert msg.content[0].text == "Hello from the "
    assert "stop" not in last(fake).get("options", {})  # matched by the gateway


def test_claude_code_request_replayed(gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(thinking="Looking at the listing", reply="It is an LLM gateway.")
    resp = requests.post(
        gw.url + "/v1/messages?beta=true",
        json=CLAUDE_CODE,
        headers={
            "Authorization": f"Bearer {KEY}",
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14",
            "x-app": "cli",
            "User-Agent": "claude-cli/2.1.160 (external, cli)",
        },
        stream=True,
        timeout=10,
    )
    assert resp.status_code == 200
    events = named_events(resp)
    assert events[0][0] == "message_start" and events[-1][0] == "message_stop"
    assert events[0][1]["message"]["model"] == CLAUDE_CODE["model"]
    assert events[0][1]["message"]["usage"]["input_tokens"] > 1000  # the estimate, not 0
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text == "It is an LLM gateway."
    sent = last(fake)
    assert sent["model"] == INTERNAL and sent["think"] is True
    assert len(sent["tools"]) == len(CLAUDE_CODE["tools"])
    assert "x-anthropic-billing-header" not in json.dumps(sent)
    assert sent["messages"][0]["role"] == "system"
    assert [m["role"] for m in sent["messages"][1:]] == ["user", "assistant", "tool", "user"]
    rec = gw.audit_for(resp.headers["request-id"])
    assert rec["user"] == CLAUDE_CODE["metadata"]["user_id"][:128]
    assert rec["prompt_chars"] > 40_000 and rec["dialect"] == "anthropic-messages"


def test_models_list_reads_in_the_anthropic_sdk(claude: anthropic.Anthropic) -> None:
    ids = [m.id for m in claude.models.list()]
    assert PUBLIC in ids and INTERNAL not in ids


# ----------------------------------------------------------------------------- Responses


def test_responses_create_and_strict_shape(
    oai: openai.OpenAI, gw: Gateway, fake: FakeOllama
) -> None:
    r = oai.responses.create(
        model=PUBLIC, input="Hi", instructions="Be brief.", max_output_tokens=50
    )
    assert r.output_text == "Hello from the fake Ollama!" and r.status == "completed"
    assert r.usage is not None and r.usage.total_tokens == 16 and r.id.startswith("resp_")
    OpenAIResponse.model_validate(r.model_dump())
    sent = last(fake)
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["options"] == {"num_predict": 50}


def test_responses_stream_and_final_response(oai: openai.OpenAI, fake: FakeOllama) -> None:
    fake.behave(thinking="greeting")
    with oai.responses.stream(model=PUBLIC, input="Hi", reasoning={"effort": "low"}) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert "response.reasoning_summary_text.delta" in kinds
    assert final.output_text == "Hello from the fake Ollama!"
    assert [o.type for o in final.output] == ["reasoning", "message"]
    assert last(fake)["think"] == "low"


def test_responses_function_call_round_trip(oai: openai.OpenAI, fake: FakeOllama) -> None:
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER["input_schema"]}]
    fake.behave(
        tool_calls=[
            {
                "id": "call_native1",
                "function": {"name": "get_weather", "arguments": {"city": "Rome"}},
            }
        ]
    )
    first = oai.responses.create(model=PUBLIC, input="weather in Rome?", tools=tools)  # type: ignore[arg-type]
    call = next(o for o in first.output if o.type == "function_call")
    assert call.call_id == "call_native1" and json.loads(call.arguments) == {"city": "Rome"}
    fake.behave(reply="Sunny in Rome.")
    second = oai.responses.create(
        model=PUBLIC,
        tools=tools,  # type: ignore[arg-type]
        input=[
            {"role": "user", "content": "weather in Rome?"},
            *[o.model_dump(exclude_none=True) for o in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text == "Sunny in Rome."
    sent = last(fake)["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_native1"
    assert sent[2] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "call_native1",
        "tool_name": "get_weather",
    }


def test_responses_stateless_refusals(oai: openai.OpenAI, fake: FakeOllama) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=PUBLIC, input="Hi", previous_response_id="resp_abc")
    assert err.value.code == "previous_response_not_found"
    with pytest.raises(openai.BadRequestError) as err:
        oai.responses.create(model=PUBLIC, input="Hi", tools=[{"type": "web_search"}])
    assert err.value.param == "tools[0].type"  # type: ignore[attr-defined]
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve("resp_abc")
    assert fake.state.requests == []


def test_responses_length_is_incomplete(oai: openai.OpenAI, fake: FakeOllama) -> None:
    fake.behave(done_reason="length")
    r = oai.responses.create(model=PUBLIC, input="Hi", max_output_tokens=3)
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"


# ----------------------------------------------------------------------------- Completions


def test_completions_create_suffix_and_stream(oai: openai.OpenAI, fake: FakeOllama) -> None:
    out = oai.completions.create(
        model=PUBLIC, prompt="def add(a, b):\n", suffix="\n    return c", max_tokens=32
    )
    Completion.model_validate(out.model_dump())
    assert (
        out.choices[0].text == "Hello from the fake Ollama!"
        and out.choices[0].finish_reason == "stop"
    )
    sent = last(fake, "/api/generate")
    assert sent["suffix"] == "\n    return c" and "raw" not in sent and sent["think"] is False
    chunks = list(
        oai.completions.create(
            model=PUBLIC, prompt="x = ", stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello from the fake Ollama!"
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 11
    assert last(fake, "/api/generate")["raw"] is True


def test_completions_model_without_fim_is_400(oai: openai.OpenAI, fake: FakeOllama) -> None:
    fake.behave(no_insert=True)
    with pytest.raises(openai.BadRequestError) as err:
        oai.completions.create(model=PUBLIC, prompt="a", suffix="b")
    assert INTERNAL not in str(err.value) and "registry.ollama.ai" not in str(err.value)


def test_completions_error_mid_stream_has_no_done(gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(error_after=2)
    resp = requests.post(
        gw.url + "/v1/completions",
        json={"model": PUBLIC, "prompt": "x", "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        stream=True,
        timeout=10,
    )
    lines = [ln for ln in resp.iter_lines() if ln.startswith(b"data: ")]
    assert json.loads(lines[-1][6:])["error"]["code"] == "upstream_error"
    assert b"data: [DONE]" not in lines


# ----------------------------------------------------------------------------- every dialect

STREAMS = {
    "/v1/messages": {"model": PUBLIC, "max_tokens": 500, "messages": HI, "stream": True},
    "/v1/responses": {"model": PUBLIC, "input": "Hi", "stream": True},
    "/v1/completions": {"model": PUBLIC, "prompt": "Hi", "stream": True},
}


@pytest.mark.parametrize("path", list(STREAMS))
def test_cancel_on_disconnect_every_dialect(gw: Gateway, fake: FakeOllama, path: str) -> None:
    fake.behave(chunk_delay=0.3, repeat=40)
    body = json.dumps(STREAMS[path]).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(
        b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nX-Api-Key: %s\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (path.encode(), KEY.encode(), len(body), body)
    )
    seen = b""
    while seen.count(b"data: ") < 4:
        seen += sock.recv(65536)
    rid = re.search(rb"X-Request-Id: (\w+)", seen, re.I)
    sock.close()
    left = time.monotonic()
    while not fake.state.client_gone:
        assert time.monotonic() - left < 1.0, "Ollama still generating 1 s after the client left"
        time.sleep(0.01)
    assert rid is not None
    rec = gw.audit_for(rid.group(1).decode())
    assert rec["cancelled"] is True and rec["status"] == 499 and rec["completion_tokens"] >= 1
    assert rec["error_code"] == "client_closed_request"  # as for a non-streamed request


@pytest.mark.parametrize("path", list(STREAMS))
def test_concurrency_cap_counts_every_dialect(
    start_gateway: Any, fake: FakeOllama, path: str
) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "models": {PUBLIC: INTERNAL}, "rate_limit": {"max_concurrent": 1}}
    )
    fake.behave(chunk_delay=0.2, repeat=10)
    held = requests.post(gw.url + path, json=STREAMS[path], stream=True, timeout=10)
    assert held.status_code == 200
    second = requests.post(gw.url + path, json=STREAMS[path], timeout=10)
    assert second.status_code == 429
    body = second.json()
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    else:
        assert body["error"]["code"] == "concurrency_limit_exceeded"
    held.close()


def test_upstream_names_never_leak_in_any_dialect(gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(status=500, error=f"model {INTERNAL} failed at http://10.0.0.5:11434/x")
    for path, body in STREAMS.items():
        r = requests.post(
            gw.url + path, json={**body, "stream": False}, headers={"x-api-key": KEY}, timeout=10
        )
        assert r.status_code == 502, path
        assert INTERNAL not in r.text and "10.0.0.5" not in r.text, path
