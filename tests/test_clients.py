"""The client matrix: the libraries people really point at the gateway, each in its real form,
against a real ``gunicorn wsgi:app`` over the fake Ollama. Each test checks what the client
got, and what Ollama was asked. Responses are also validated strictly with the SDK's own
pydantic models, and the fields the Node SDK types as always present are checked by name.

The heavier clients (LangChain, litellm, instructor) are marked ``clients``; CI runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest
import requests
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel

from tests.conftest import Gateway
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network at import

KEY = "sk-client-matrix-key"
PUBLIC, INTERNAL = "qwen3", "qwen3:32b"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
HI = [{"role": "user", "content": "Hi"}]


class Weather(BaseModel):
    city: str
    temperature: int


@pytest.fixture(scope="module")
def gw(fake_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "ollama_api": fake_ollama.url,
        "models": {PUBLIC: INTERNAL},
        "auth": {"enabled": True, "valid_keys": [KEY]},
        "rate_limit": {"enabled": True, "max_requests": 1000, "window_seconds": 60},
    }
    g = Gateway(config, tmp_path_factory.mktemp("clients"), workers=1).start()
    yield g
    g.stop()


@pytest.fixture
def client(gw: Gateway, fake: FakeOllama) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)


def last_chat(fake: FakeOllama) -> dict[str, Any]:
    return fake.chat_requests()[-1].body  # type: ignore[no-any-return]


def raw_chat(gw: Gateway, body: dict[str, Any]) -> requests.Response:
    return requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": PUBLIC, "messages": HI, **body},
        headers={"Authorization": f"Bearer {KEY}"},
        stream=bool(body.get("stream")),
        timeout=10,
    )


def sse_chunks(resp: requests.Response) -> list[dict[str, Any]]:
    chunks = []
    for line in resp.iter_lines():
        if line.startswith(b"data: ") and line != b"data: [DONE]":
            chunks.append(json.loads(line[6:]))
    return chunks


# ----------------------------------------------------------------------------- strict shapes


def test_non_stream_shape_is_strict_openai(gw: Gateway, fake: FakeOllama) -> None:
    body = raw_chat(gw, {}).json()
    ChatCompletion.model_validate(body, strict=False)
    choice = body["choices"][0]
    # The Node SDK types these as present (null, not missing): `=== null` checks rely on it.
    assert choice["message"]["refusal"] is None and choice["logprobs"] is None
    assert "system_fingerprint" in body and body["system_fingerprint"] is None


def test_stream_shape_is_strict_openai(gw: Gateway, fake: FakeOllama) -> None:
    fake.behave(tool_calls=[{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}])
    chunks = sse_chunks(
        raw_chat(
            gw, {"stream": True, "stream_options": {"include_usage": True}, "tools": [WEATHER_TOOL]}
        )
    )
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert all(c["usage"] is None for c in chunks[:-1]) and chunks[-1]["usage"]["total_tokens"] > 0
    assert all(c["choices"][0]["logprobs"] is None for c in chunks[:-1])
    call_deltas = [
        c["choices"][0]["delta"] for c in chunks[:-1] if c["choices"][0]["delta"].get("tool_calls")
    ]
    assert call_deltas and all(d["content"] is None for d in call_deltas)


# ----------------------------------------------------------------------------- openai SDK


def test_required_tool_choice_returns_a_real_tool_call(
    client: openai.OpenAI, fake: FakeOllama
) -> None:
    fake.behave(schema_values={"city": "Paris"}, thinking="I should call the tool")
    out = client.chat.completions.create(
        model=PUBLIC, messages=HI, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert choice.message.reasoning_content.startswith("I should")  # type: ignore[attr-defined]
    sent = last_chat(fake)
    assert sent["tools"][0]["function"]["name"] == "get_weather"
    assert sent["format"]["properties"]["arguments"]["required"] == ["city"]


def test_named_tool_choice_streams_the_call(client: openai.OpenAI, fake: FakeOllama) -> None:
    other = {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}}}
    fake.behave(schema_values={"city": "Rome"})
    stream = client.chat.completions.create(
        model=PUBLIC,
        messages=HI,
        tools=[other, WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        stream=True,
    )
    chunks = list(stream)
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_weather"]
    assert json.loads(calls[0].function.arguments) == {"city": "Rome"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert last_chat(fake)["format"]["properties"]["name"] == {"const": "get_weather"}


def test_legacy_functions_round_trip(client: openai.OpenAI, fake: FakeOllama) -> None:
    fake.behave(schema_values={"city": "Lima"})
    fn = WEATHER_TOOL["function"]
    out = client.chat.completions.create(
        model=PUBLIC, messages=HI, functions=[fn], function_call={"name": "get_weather"}
    )
    choice = out.choices[0]
    assert choice.finish_reason == "function_call" and choice.message.tool_calls is None
    assert choice.message.function_call.name == "get_weather"
    history = [
        *HI,
        {
            "role": "assistant",
            "content": None,
            "function_call": choice.message.function_call.model_dump(),
        },
        {"role": "function", "name": "get_weather", "content": "22 C"},
    ]
    fake.behave(reply="It is 22 C in Lima.")
    again = client.chat.completions.create(model=PUBLIC, messages=history, functions=[fn])
    assert again.choices[0].message.content == "It is 22 C in Lima."
    sent = last_chat(fake)["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {
        "index": 0,
        "name": "get_weather",
        "arguments": {"city": "Lima"},
    }
    assert sent[2] == {"role": "tool", "content": "22 C", "tool_name": "get_weather"}


def test_parallel_tool_calls_false_keeps_the_first(client: openai.OpenAI, fake: FakeOllama) -> None:
    calls = [{"function": {"name": "get_weather", "arguments": {"city": c}}} for c in ("A", "B")]
    fake.behave(tool_calls=calls)
    out = client.chat.completions.create(
        model=PUBLIC, messages=HI, tools=[WEATHER_TOOL], parallel_tool_calls=False
    )
    assert [
        json.loads(c.function.arguments)["city"] for c in out.choices[0].message.tool_calls
    ] == ["A"]


def test_refusal_history_and_schema_less_json_schema(
    client: openai.OpenAI, fake: FakeOllama
) -> None:
    out = client.chat.completions.create(
        model=PUBLIC,
        messages=[
            {"role": "user", "content": "bad idea"},
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help."}]},
            {"role": "user", "content": "ok, then json"},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "free"}},
    )
    assert out.choices[0].message.content
    sent = last_chat(fake)
    assert sent["messages"][1]["content"] == "I can't help." and sent["format"] == "json"


@pytest.mark.parametrize(
    "extra, param",
    [
        ({"logprobs": True}, "logprobs"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ],
)
def test_unsupported_fields_are_a_clear_400(
    client: openai.OpenAI, fake: FakeOllama, extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=PUBLIC, messages=HI, **extra)
    assert err.value.param == param  # type: ignore[attr-defined]
    assert fake.chat_requests() == []


def test_async_sdk_stream_and_tool_choice(gw: Gateway, fake: FakeOllama) -> None:
    async def run() -> tuple[str, str]:
        aclient = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
        stream = await aclient.chat.completions.create(model=PUBLIC, messages=HI, stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        forced = await aclient.chat.completions.create(
            model=PUBLIC, messages=HI, tools=[WEATHER_TOOL], tool_choice="required"
        )
        await aclient.close()
        return text, forced.choices[0].message.tool_calls[0].function.name

    assert asyncio.run(run()) == ("Hello from the fake Ollama!", "get_weather")


def test_openai_exception_classes(gw: Gateway, fake: FakeOllama) -> None:
    bad = openai.OpenAI(base_url=gw.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model=PUBLIC, messages=HI)
    good = openai.OpenAI(base_url=gw.url + "/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError):
        good.chat.completions.create(model="no-such-model", messages=HI)


def test_embedding_token_ids_name_the_client_setting(
    client: openai.OpenAI, fake: FakeOllama
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=PUBLIC, input=[[1, 2, 3]])
    assert "check_embedding_ctx_length=False" in err.value.message


def test_unknown_path_lists_the_paths(gw: Gateway, fake: FakeOllama) -> None:
    r = requests.post(gw.url + "/v1/engines/x/completions", json={}, timeout=5)
    assert r.status_code == 404
    assert "POST /v1/chat/completions" in r.json()["error"]["message"]


# ----------------------------------------------------------------------------- LangChain

clients = pytest.mark.clients


@pytest.fixture
def chat_model(gw: Gateway, fake: FakeOllama) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(model=PUBLIC, base_url=gw.url + "/v1", api_key=KEY, max_retries=0, timeout=10)


@clients
def test_langchain_invoke_stream_and_bind_tools(chat_model: Any, fake: FakeOllama) -> None:
    assert chat_model.invoke("Hi").content == "Hello from the fake Ollama!"
    assert "".join(c.content for c in chat_model.stream("Hi")) == "Hello from the fake Ollama!"
    fake.behave(schema_values={"city": "Kyiv"})
    msg = chat_model.bind_tools([WEATHER_TOOL], tool_choice="any").invoke("weather?")
    assert msg.tool_calls[0]["name"] == "get_weather" and msg.tool_calls[0]["args"] == {
        "city": "Kyiv"
    }
    assert last_chat(fake)["format"]["properties"]["name"] == {"const": "get_weather"}


@clients
@pytest.mark.parametrize("method", ["function_calling", "json_schema", "json_mode"])
def test_langchain_structured_output(chat_model: Any, fake: FakeOllama, method: str) -> None:
    fake.behave(
        schema_values={"city": "Oslo", "temperature": 3},
        reply='{"city": "Oslo", "temperature": 3}',  # what JSON mode's model writes
    )
    out = chat_model.with_structured_output(Weather, method=method).invoke("Oslo weather")
    assert out == Weather(city="Oslo", temperature=3)
    sent = last_chat(fake)
    assert {"function_calling": "tools", "json_schema": "format", "json_mode": "format"}[
        method
    ] in sent


@clients
def test_langchain_agent_with_structured_response(chat_model: Any, fake: FakeOllama) -> None:
    from langchain.agents import create_agent

    fake.behave(schema_values={"city": "Bern", "temperature": 12})
    agent = create_agent(chat_model, tools=[], response_format=Weather)
    result = agent.invoke({"messages": [{"role": "user", "content": "Bern?"}]})
    assert result["structured_response"] == Weather(city="Bern", temperature=12)


@clients
def test_langchain_raises_its_authentication_error(gw: Gateway, fake: FakeOllama) -> None:
    from langchain_openai import ChatOpenAI

    bad = ChatOpenAI(model=PUBLIC, base_url=gw.url + "/v1", api_key="sk-nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.invoke("Hi")


# ----------------------------------------------------------------------------- litellm


def _litellm(gw: Gateway, key: str = KEY, model: str = PUBLIC, **kw: Any) -> Any:
    import litellm

    return litellm.completion(
        model=f"openai/{model}",
        api_base=gw.url + "/v1",
        api_key=key,
        messages=HI,
        max_retries=0,
        **kw,
    )


@clients
def test_litellm_completion_stream_and_tools(gw: Gateway, fake: FakeOllama) -> None:
    assert _litellm(gw).choices[0].message.content == "Hello from the fake Ollama!"
    text = "".join(c.choices[0].delta.content or "" for c in _litellm(gw, stream=True))
    assert text == "Hello from the fake Ollama!"
    fake.behave(schema_values={"city": "Turin"})
    out = _litellm(gw, tools=[WEATHER_TOOL], tool_choice="required")
    assert out.choices[0].finish_reason == "tool_calls"
    assert json.loads(out.choices[0].message.tool_calls[0].function.arguments) == {"city": "Turin"}


@clients
def test_litellm_exception_classes(gw: Gateway, fake: FakeOllama, start_gateway: Any) -> None:
    import litellm

    with pytest.raises(litellm.AuthenticationError):
        _litellm(gw, key="sk-wrong")
    with pytest.raises(litellm.NotFoundError):
        _litellm(gw, model="no-such-model")
    fake.behave(
        status=503, error="server busy, please try again.  maximum pending requests exceeded"
    )
    with pytest.raises(litellm.ServiceUnavailableError):
        _litellm(gw)
    fake.reset()
    strict = start_gateway(
        {
            "ollama_api": fake.url,
            "auth": {"enabled": True, "valid_keys": [KEY]},
            "rate_limit": {"enabled": True, "max_requests": 1, "window_seconds": 60},
        }
    )
    _litellm(strict, model=INTERNAL)
    with pytest.raises(litellm.RateLimitError):
        _litellm(strict, model=INTERNAL)
    closed = start_gateway(
        {"ollama_api": fake.url, "whitelist": {"enabled": True, "ips": ["10.9.9.9"]}}
    )
    # litellm has no permission class for OpenAI-compatible servers: a 403 is its APIError.
    with pytest.raises(litellm.APIError) as err:
        _litellm(closed, model=INTERNAL)
    assert err.value.status_code == 403


# ----------------------------------------------------------------------------- instructor


@clients
@pytest.mark.parametrize("mode", ["TOOLS", "JSON", "JSON_SCHEMA"])
def test_instructor_modes(client: openai.OpenAI, fake: FakeOllama, mode: str) -> None:
    import instructor

    fake.behave(
        schema_values={"city": "Quito", "temperature": 18},
        reply='{"city": "Quito", "temperature": 18}',
    )
    patched = instructor.from_openai(client, mode=getattr(instructor.Mode, mode))
    out = patched.chat.completions.create(model=PUBLIC, response_model=Weather, messages=HI)
    assert out.model_dump() == {"city": "Quito", "temperature": 18}
