"""The gateway core end to end: real gunicorn gevent workers, the official openai SDK, the fake
Ollama on loopback. Each test checks what the client got and what Ollama received."""

from __future__ import annotations

import base64
import json
import struct
import time
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests

from tests.conftest import Gateway
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

PUBLIC = "qwen3"
INTERNAL = "qwen3:32b"


@pytest.fixture(scope="module")
def gw(fake_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "ollama_api": fake_ollama.url,
        "models": {PUBLIC: INTERNAL, "embed": "nomic-embed-text:latest", "ghost": "not-pulled:1b"},
    }
    g = Gateway(config, tmp_path_factory.mktemp("core"), workers=2).start()
    yield g
    g.stop()


@pytest.fixture
def client(gw: Gateway, fake: FakeOllama) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)


def last_chat(fake: FakeOllama) -> dict[str, Any]:
    reqs = fake.chat_requests()
    assert reqs, "Ollama received no chat request"
    return reqs[-1].body  # type: ignore[no-any-return]


def raw_sse(gw: Gateway, body: dict[str, Any]) -> list[Any]:
    resp = requests.post(gw.url + "/v1/chat/completions", json=body, stream=True, timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:]
            events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def test_non_streaming_chat(client: openai.OpenAI, fake: FakeOllama) -> None:
    out = client.chat.completions.create(
        model=PUBLIC,
        messages=[{"role": "developer", "content": "Be terse."}, {"role": "user", "content": "Hi"}],
        max_completion_tokens=50,
        temperature=0.2,
        stop="END",
        seed=7,
    )
    assert out.choices[0].message.content == "Hello from the fake Ollama!"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == PUBLIC
    assert out.id.startswith("chatcmpl-") and len(out.id) > 20
    assert out.usage is not None and out.usage.prompt_tokens == 11
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    sent = last_chat(fake)
    assert sent["model"] == INTERNAL
    assert sent["messages"][0] == {"role": "system", "content": "Be terse."}
    assert sent["options"] == {"num_predict": 50, "temperature": 0.2, "seed": 7, "stop": ["END"]}


def test_unset_options_are_not_sent(client: openai.OpenAI, fake: FakeOllama) -> None:
    client.chat.completions.create(model=PUBLIC, messages=[{"role": "user", "content": "Hi"}])
    sent = last_chat(fake)
    assert "options" not in sent and "think" not in sent and "format" not in sent


def test_streaming_with_usage(client: openai.OpenAI, gw: Gateway, fake: FakeOllama) -> None:
    stream = client.chat.completions.create(
        model=PUBLIC,
        stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "Hi"}],
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.choices[0].delta.role is None for c in chunks[1:] if c.choices)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the fake Ollama!"
    choice_chunks = [c for c in chunks if c.choices]
    assert choice_chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.choices[0].finish_reason is None for c in choice_chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens == 11
    events = raw_sse(
        gw, {"model": PUBLIC, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert events[-1] == "[DONE]"
    assert not any(isinstance(e, dict) and e.get("usage") for e in events)  # only when asked


def test_streaming_helper_accumulates_one_role(client: openai.OpenAI, fake: FakeOllama) -> None:
    with client.chat.completions.stream(
        model=PUBLIC, messages=[{"role": "user", "content": "Hi"}]
    ) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.role == "assistant"
    assert final.choices[0].message.content == "Hello from the fake Ollama!"


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]
NATIVE_CALLS = [
    {
        "id": "call_abc123",
        "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Tokyo"}},
    },
    {"function": {"index": 1, "name": "get_weather", "arguments": {"city": "Paris"}}},
]


@pytest.mark.parametrize("on_done", [False, True])
def test_tool_calls_non_streaming(client: openai.OpenAI, fake: FakeOllama, on_done: bool) -> None:
    fake.behave(reply="", tool_calls=NATIVE_CALLS, tool_calls_on_done=on_done)
    out = client.chat.completions.create(
        model=PUBLIC, tools=TOOLS, messages=[{"role": "user", "content": "Weather?"}]
    )
    msg = out.choices[0].message
    assert out.choices[0].finish_reason == "tool_calls"
    assert msg.content is None
    assert [json.loads(c.function.arguments) for c in msg.tool_calls] == [
        {"city": "Tokyo"},
        {"city": "Paris"},
    ]
    assert msg.tool_calls[0].id == "call_abc123"
    assert msg.tool_calls[1].id.startswith("call_") and msg.tool_calls[1].id != "call_abc123"
    assert last_chat(fake)["tools"] == TOOLS


@pytest.mark.parametrize("on_done", [False, True])
def test_tool_calls_streaming(client: openai.OpenAI, fake: FakeOllama, on_done: bool) -> None:
    fake.behave(reply="", tool_calls=NATIVE_CALLS, tool_calls_on_done=on_done)
    with client.chat.completions.stream(
        model=PUBLIC, tools=TOOLS, messages=[{"role": "user", "content": "Weather?"}]
    ) as s:
        final = s.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert final.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in calls] == ["get_weather", "get_weather"]
    assert [json.loads(c.function.arguments) for c in calls] == [
        {"city": "Tokyo"},
        {"city": "Paris"},
    ]


def test_tool_round_trip_history(client: openai.OpenAI, fake: FakeOllama) -> None:
    client.chat.completions.create(
        model=PUBLIC,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Tokyo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "22C, sunny"},
        ],
    )
    sent = last_chat(fake)["messages"]
    assert sent[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Tokyo"}
    assert sent[2] == {
        "role": "tool",
        "content": "22C, sunny",
        "tool_name": "get_weather",
        "tool_call_id": "call_1",
    }


def test_thinking(client: openai.OpenAI, gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(thinking="Let me think.", reply="42")
    out = client.chat.completions.create(
        model=PUBLIC, reasoning_effort="high", messages=[{"role": "user", "content": "?"}]
    )
    assert out.choices[0].message.content == "42"
    assert out.choices[0].message.model_extra["reasoning_content"] == "Let me think. "
    assert last_chat(fake)["think"] == "high"
    events = raw_sse(
        gw,
        {
            "model": PUBLIC,
            "stream": True,
            "think": False,
            "messages": [{"role": "user", "content": "?"}],
        },
    )
    assert last_chat(fake)["think"] is False
    deltas = [e["choices"][0]["delta"] for e in events if isinstance(e, dict) and e["choices"]]
    assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me think. "
    assert "".join(d.get("content", "") for d in deltas) == "42"


def test_json_modes_and_images(client: openai.OpenAI, fake: FakeOllama) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    client.chat.completions.create(
        model=PUBLIC,
        response_format={"type": "json_schema", "json_schema": {"name": "r", "schema": schema}},
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is"},
                    {"type": "text", "text": "this?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
                    },
                ],
            }
        ],
    )
    sent = last_chat(fake)
    assert sent["format"] == schema
    assert sent["messages"][0] == {
        "role": "user",
        "content": "What is\nthis?",
        "images": ["iVBORw0KGgo="],
    }
    client.chat.completions.create(
        model=PUBLIC,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "{}"}],
    )
    assert last_chat(fake)["format"] == "json"


def test_length_finish(client: openai.OpenAI, fake: FakeOllama) -> None:
    fake.behave(done_reason="length")
    out = client.chat.completions.create(
        model=PUBLIC, max_tokens=3, messages=[{"role": "user", "content": "Hi"}]
    )
    assert out.choices[0].finish_reason == "length"
    assert last_chat(fake)["options"]["num_predict"] == 3


def test_embeddings(client: openai.OpenAI, fake: FakeOllama) -> None:
    one = client.embeddings.create(model="embed", input="hello")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 4
    many = client.embeddings.create(model="embed", input=["a", "b", "c"])
    assert [d.index for d in many.data] == [0, 1, 2]
    assert many.usage.prompt_tokens == 9 and many.model == "embed"
    sent = [r.body for r in fake.state.requests if r.path == "/api/embed"][-1]
    assert sent == {"model": "nomic-embed-text:latest", "input": ["a", "b", "c"]}
    b64 = client.embeddings.create(model="embed", input="hello", encoding_format="base64")
    raw = base64.b64decode(b64.data[0].embedding)  # little-endian float32, as OpenAI sends
    assert struct.unpack("<4f", raw)[0] == pytest.approx(one.data[0].embedding[0], rel=1e-6)


def test_models_list_only_public_names(client: openai.OpenAI, fake: FakeOllama) -> None:
    ids = [m.id for m in client.models.list()]
    assert ids == [PUBLIC, "embed", "ghost"]
    assert client.models.retrieve(PUBLIC).id == PUBLIC
    assert client.models.retrieve(PUBLIC).created == 1746889608  # Ollama's modified_at
    assert client.models.retrieve("ghost").created == 0  # configured, not pulled
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve(INTERNAL)
    assert e.value.code == "model_not_found"


def test_unknown_model_is_404_without_reaching_ollama(
    client: openai.OpenAI, fake: FakeOllama
) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model=INTERNAL, messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "model_not_found"
    assert fake.chat_requests() == []
    with pytest.raises(openai.NotFoundError) as huge:  # the message is not an echo of the body
        client.chat.completions.create(
            model="m" * 100_000, messages=[{"role": "user", "content": "Hi"}]
        )
    message = huge.value.body["message"]  # type: ignore[index]
    assert len(message) < 300 and message.endswith("…' does not exist")


def test_upstream_model_missing_names_no_internal_model(
    client: openai.OpenAI, fake: FakeOllama
) -> None:
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="ghost", messages=[{"role": "user", "content": "Hi"}])
    assert e.value.code == "model_not_found"
    assert "not-pulled" not in str(e.value.body) and "ghost" in e.value.message


@pytest.mark.parametrize(
    "body, param",
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": PUBLIC}, "messages"),
        ({"model": PUBLIC, "messages": []}, "messages"),
        ({"model": PUBLIC, "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": PUBLIC, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": PUBLIC, "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        (
            {"model": PUBLIC, "messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
            "temperature",
        ),
        ({"model": PUBLIC, "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop[0]"),
        (
            {
                "model": PUBLIC,
                "messages": [{"role": "user", "content": "x"}],
                "reasoning_effort": "extreme",
            },
            "reasoning_effort",
        ),
        (
            {
                "model": PUBLIC,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "http://10.0.0.1/x.png"}}
                        ],
                    }
                ],
            },
            "messages[0].content[0].image_url",
        ),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    gw: Gateway, fake: FakeOllama, body: dict[str, Any], param: str
) -> None:
    r = requests.post(gw.url + "/v1/chat/completions", json=body, timeout=5)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    assert set(err) == {"message", "type", "param", "code"}
    assert fake.chat_requests() == []


def test_not_json_and_wrong_method(gw: Gateway, fake: FakeOllama) -> None:
    r = requests.post(gw.url + "/v1/chat/completions", data="{not json", timeout=5)
    assert r.status_code == 400 and "JSON" in r.json()["error"]["message"]
    r = requests.post(gw.url + "/v1/chat/completions", timeout=5)
    assert r.status_code == 400
    r = requests.get(gw.url + "/v1/chat/completions", timeout=5)
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.get(gw.url + "/v2/nothing", timeout=5)
    assert r.status_code == 404 and r.headers["Content-Type"] == "application/json"


def test_upstream_errors_map_to_status(client: openai.OpenAI, fake: FakeOllama) -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    fake.behave(status=500, error="llama runner process has terminated")
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=PUBLIC, messages=msgs)
    assert e.value.status_code == 502
    fake.behave(status=400, error=f'"{INTERNAL}" does not support thinking')
    with pytest.raises(openai.BadRequestError) as e4:
        client.chat.completions.create(model=PUBLIC, messages=msgs, reasoning_effort="low")
    assert INTERNAL not in json.dumps(e4.value.body)
    assert e4.value.code == "thinking_not_supported"  # type: ignore[attr-defined]


def test_error_after_stream_started(client: openai.OpenAI, gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(error_after=2, error="an error was encountered while running the model")
    events = raw_sse(
        gw, {"model": PUBLIC, "stream": True, "messages": [{"role": "user", "content": "x"}]}
    )
    assert events[-1] == "[DONE]"
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    # A fixed message: Ollama's own text stays in the gateway's log.
    assert len(errors) == 1 and "failed while generating" in errors[0]["error"]["message"]
    assert "while running the model" not in json.dumps(events)
    stream = client.chat.completions.create(
        model=PUBLIC, stream=True, messages=[{"role": "user", "content": "x"}]
    )
    with pytest.raises(openai.APIError, match="failed while generating"):
        list(stream)


def test_health_and_ready(gw: Gateway, fake: FakeOllama) -> None:
    assert requests.get(gw.url + "/health", timeout=5).json() == {"status": "ok"}
    r = requests.get(gw.url + "/ready", timeout=5)
    assert r.status_code == 503  # "ghost" maps to a model Ollama does not have
    assert r.json()["missing_models"] == ["ghost"]
    assert "not-pulled" not in r.text and "127.0.0.1" not in r.text
    fake.state.models.append("not-pulled:1b")
    deadline = time.monotonic() + 5  # Ollama's model list is reused for 2 s
    while (r := requests.get(gw.url + "/ready", timeout=5)).status_code != 200:
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    assert r.json()["status"] == "ready"


def test_request_id_is_echoed_and_sent_upstream(client: openai.OpenAI, fake: FakeOllama) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=PUBLIC, messages=[{"role": "user", "content": "Hi"}]
    )
    rid = raw.headers["x-request-id"]
    assert len(rid) >= 16
    assert fake.chat_requests()[-1].headers.get("X-Request-Id") == rid
