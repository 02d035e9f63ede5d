"""The security gate end to end: keys, allowlist behind trusted proxies, limits, audit.

Real gunicorn gevent workers (2 where sharing matters), real redis-server, the openai SDK and
raw HTTP from chosen loopback source addresses."""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import openai
import pytest
import requests

from qwengw.config import hash_key
from tests.conftest import Gateway, RedisServer
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

PLAIN_KEY = "prod-key-2024-qwen3"
BOT_KEY = "sk-clawdbot-9f8e7d6c5b4a"
MSGS = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "qwen3:32b", "messages": MSGS}


def auth_config(fake: FakeOllama, **extra: Any) -> dict[str, Any]:
    return {
        "ollama_api": fake.url,
        "auth": {
            "enabled": True,
            "valid_keys": [PLAIN_KEY],
            "user_header": "X-User-Id",
            "keys": [{"id": "clawdbot", "sha256": hash_key(BOT_KEY), "max_concurrent": 2}],
        },
        **extra,
    }


def post(
    gw: Gateway,
    body: Any = CHAT,
    *,
    source: str = "127.0.0.1",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request on a fresh connection from a chosen loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=10, source_address=(source, 0))
    try:
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(body),
            headers={"Content-Type": "application/json", **(headers or {})},
        )
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, json.loads(raw)
    finally:
        conn.close()


# ----------------------------------------------------------------------------- authentication


def test_keys_missing_wrong_bearer_plain_hashed(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(auth_config(fake))
    status, headers, body = post(gw)
    assert status == 401 and body["error"]["message"].startswith("You didn't provide an API key")
    assert headers["www-authenticate"].startswith("Bearer")
    status, _, body = post(gw, headers={"X-Api-Key": "nope-secret"})
    assert status == 401 and body["error"]["message"].startswith("Incorrect API key provided")
    assert "nope-secret" not in json.dumps(body)
    assert {k: v for k, v in body["error"].items() if k != "message"} == {
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    # A malformed Authorization header says what was wrong, never echoing the credential.
    for value, shown in (("my-secret-key", "something"), ("Basic c2VjcmV0", "'Basic'")):
        status, headers, body = post(gw, headers={"Authorization": value})
        message = body["error"]["message"]
        assert status == 401 and "Bearer" in message and shown in message
        assert body["error"]["code"] == "malformed_authorization"
        assert "my-secret-key" not in message and "c2VjcmV0" not in message
        assert headers["www-authenticate"].startswith("Bearer")
    assert fake.chat_requests() == []  # rejected requests never reach Ollama
    assert post(gw, headers={"X-Api-Key": PLAIN_KEY})[0] == 200
    assert post(gw, headers={"Authorization": f"Bearer {BOT_KEY}"})[0] == 200
    sdk = openai.OpenAI(base_url=gw.url + "/v1", api_key=BOT_KEY, max_retries=0)
    assert sdk.chat.completions.create(model="qwen3:32b", messages=MSGS).choices[0].message.content
    with pytest.raises(openai.AuthenticationError) as e:
        openai.OpenAI(base_url=gw.url + "/v1", api_key="wrong", max_retries=0).models.list()
    assert e.value.code == "invalid_api_key"
    ids = {rec.get("key_id") for rec in gw.audit()}
    assert "clawdbot" in ids and f"key-{hash_key(PLAIN_KEY)[:8]}" in ids
    everything = gw.audit_path.read_text() + gw.log()
    assert PLAIN_KEY not in everything and BOT_KEY not in everything
    assert "plain-text key" in gw.log()  # the seed's valid_keys still work, with a warning


def test_failed_attempts_are_limited_per_ip(start_gateway: Any, fake: FakeOllama) -> None:
    cfg = auth_config(fake)
    cfg["auth"].update(max_failures=3, failure_window_seconds=60)
    gw = start_gateway(cfg)
    for _ in range(3):
        assert post(gw, headers={"X-Api-Key": "guess"})[0] == 401
    status, headers, body = post(gw, headers={"X-Api-Key": "guess"})
    assert status == 429 and body["error"]["code"] == "too_many_auth_failures"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert post(gw, headers={"X-Api-Key": PLAIN_KEY})[0] == 429  # this IP must wait
    assert (
        post(gw, source="127.0.0.2", headers={"X-Api-Key": PLAIN_KEY})[0] == 200
    )  # others need not


# ----------------------------------------------------------------------------- allowlist


def test_allowlist_and_trusted_proxies(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "whitelist": {
                "enabled": True,
                "ips": ["203.0.113.0/24", "127.0.0.3", "::1"],
                "trusted_proxies": ["127.0.0.1"],
            },
        }
    )
    # From the trusted proxy: the right-most untrusted X-Forwarded-For hop is the client.
    assert post(gw, headers={"X-Forwarded-For": "203.0.113.5"})[0] == 200
    status, _, body = post(gw, headers={"X-Forwarded-For": "198.51.100.7"})
    assert status == 403 and body["error"]["message"] == "ip not allowed"
    # Prepending an allowed address does not help: the proxy appended the real one last.
    assert post(gw, headers={"X-Forwarded-For": "203.0.113.5, 198.51.100.7"})[0] == 403
    assert post(gw, headers={"X-Real-IP": "203.0.113.9"})[0] == 200
    # The trusted proxy itself is not on the list, so without a header it is refused.
    assert post(gw)[0] == 403
    # From an untrusted peer the header is ignored: spoofing gets nowhere.
    assert post(gw, source="127.0.0.2", headers={"X-Forwarded-For": "203.0.113.5"})[0] == 403
    status, headers, _ = post(gw, source="127.0.0.3", headers={"X-Forwarded-For": "198.51.100.7"})
    assert status == 200
    rec = gw.audit_for(headers["x-request-id"])
    assert rec["client_ip"] == "127.0.0.3"


def test_request_id_from_trusted_proxy_only(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "whitelist": {"trusted_proxies": ["127.0.0.1"]}})
    _, headers, _ = post(gw, headers={"X-Request-Id": "nginx-req-42"})
    assert headers["x-request-id"] == "nginx-req-42"
    assert fake.chat_requests()[-1].headers["X-Request-Id"] == "nginx-req-42"
    _, headers, _ = post(gw, source="127.0.0.2", headers={"X-Request-Id": "spoofed"})
    assert headers["x-request-id"] != "spoofed"


# ----------------------------------------------------------------------------- rate limits


def test_seed_limit_31st_request_is_429(start_gateway: Any, fake: FakeOllama) -> None:
    cfg = auth_config(fake, rate_limit={"enabled": True, "max_requests": 30, "window_seconds": 60})
    gw = start_gateway(cfg)
    results = [post(gw, headers={"X-Api-Key": PLAIN_KEY}) for _ in range(31)]
    assert [s for s, _, _ in results[:30]] == [200] * 30
    status, headers, body = results[30]
    assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
    assert body["error"]["type"] == "requests"  # OpenAI's type for a request-rate limit
    assert 55 <= int(headers["retry-after"]) <= 60
    assert [int(h["x-ratelimit-remaining-requests"]) for _, h, _ in results[:3]] == [29, 28, 27]
    assert all(h["x-ratelimit-limit-requests"] == "30" for _, h, _ in results)
    assert len(fake.chat_requests()) == 30


def test_retry_after_is_time_until_a_slot_frees(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "rate_limit": {"enabled": True, "max_requests": 3, "window_seconds": 6},
        }
    )
    assert post(gw)[0] == 200
    time.sleep(3)
    assert post(gw)[0] == 200 and post(gw)[0] == 200
    status, headers, _ = post(gw)
    assert status == 429
    wait = int(headers["retry-after"])
    assert 1 <= wait <= 3  # the first request leaves the window in ~3 s, not 6
    time.sleep(wait + 0.2)
    assert post(gw)[0] == 200


def test_redis_limit_is_exact_across_workers(
    start_gateway: Any, fake: FakeOllama, redis_server: RedisServer
) -> None:
    cfg = auth_config(
        fake,
        rate_limit={
            "enabled": True,
            "max_requests": 30,
            "window_seconds": 60,
            "storage": redis_server.url,
        },
    )
    gw = start_gateway(cfg, workers=2)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            s = post(gw, headers={"X-Api-Key": PLAIN_KEY})[0]
            with lock:
                statuses.append(s)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 40
    assert statuses.count(200) == 30 and statuses.count(429) == 10
    assert "limits are per worker" not in gw.log()


def test_memory_storage_warns_with_several_workers(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "rate_limit": {"enabled": True}}, workers=2)
    assert "limits are per worker" in gw.log()


def test_concurrency_limit_with_open_streams(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(auth_config(fake))
    fake.behave(chunk_delay=0.2, repeat=20)
    headers = {"Authorization": f"Bearer {BOT_KEY}"}
    # One session per stream: requests.post() would close its session (and socket) on return.
    sessions = [requests.Session() for _ in range(2)]
    streams = [
        sess.post(
            gw.url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers=headers,
            stream=True,
            timeout=10,
        )
        for sess in sessions
    ]
    # Keep the line iterators: an abandoned one makes urllib3 close the connection.
    lines = [s.iter_lines() for s in streams]
    for s, it in zip(streams, lines, strict=True):
        assert s.status_code == 200
        assert next(it).startswith(b"data: ")
    status, _, body = post(gw, headers=headers)
    assert status == 429 and body["error"]["code"] == "concurrency_limit_exceeded"
    other = requests.post(
        gw.url + "/v1/embeddings",
        json={"model": "nomic-embed-text", "input": "x"},
        headers={"X-Api-Key": PLAIN_KEY},
        timeout=5,
    )
    assert other.status_code == 200  # another key is not affected
    streams[0].close()
    sessions[0].close()
    deadline = time.monotonic() + 5
    fake.behave()
    while post(gw, headers=headers)[0] != 200:
        assert time.monotonic() < deadline, "slot not released after the stream ended"
        time.sleep(0.1)
    streams[1].close()
    sessions[1].close()


@pytest.mark.parametrize("policy, while_down", [("closed", 503), ("open", 200)])
def test_storage_down_and_back(
    start_gateway: Any, fake: FakeOllama, redis_server: RedisServer, policy: str, while_down: int
) -> None:
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "rate_limit": {
                "enabled": True,
                "max_requests": 100,
                "window_seconds": 60,
                "storage": redis_server.url,
                "on_storage_error": policy,
            },
        }
    )
    assert post(gw)[0] == 200
    redis_server.stop()
    status, headers, body = post(gw)
    assert status == while_down
    if status == 503:
        assert body["error"]["code"] == "service_unavailable" and headers["retry-after"] == "1"
    redis_server.start()
    deadline = time.monotonic() + 10
    while post(gw)[0] != 200:
        assert time.monotonic() < deadline, "gateway did not recover when Redis came back"
        time.sleep(0.2)
    assert f"rate-limit storage {redis_server.url} unavailable (ConnectionError" in gw.log()


# ----------------------------------------------------------------------------- request limits


def test_long_prompt_and_big_body(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    status, _, body = post(
        gw, {"model": "qwen3:32b", "messages": [{"role": "user", "content": "x" * 100_000}]}
    )
    assert status == 400
    assert body["error"]["message"].startswith("This model's maximum context length is 32768")
    assert body["error"]["code"] == "context_length_exceeded"
    assert body["error"]["code"] == "context_length_exceeded"
    big = requests.post(
        gw.url + "/v1/chat/completions",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    assert fake.chat_requests() == []
    assert post(gw)[0] == 200  # and the gateway is fine afterwards


# ----------------------------------------------------------------------------- audit


def test_audit_line_field_by_field(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(auth_config(fake, rate_limit={"enabled": True}))
    secret_prompt = "my secret prompt text"
    status, headers, body = post(
        gw,
        {"model": "qwen3:32b", "messages": [{"role": "user", "content": secret_prompt}]},
        headers={"Authorization": f"Bearer {BOT_KEY}", "X-User-Id": "alice"},
    )
    assert status == 200
    rec = gw.audit_for(headers["x-request-id"])
    assert rec["time"].endswith("Z")
    assert (
        rec["client_ip"] == "127.0.0.1" and rec["key_id"] == "clawdbot" and rec["user"] == "alice"
    )
    assert rec["method"] == "POST" and rec["path"] == "/v1/chat/completions"
    assert rec["model"] == "qwen3:32b" and rec["stream"] is False and rec["status"] == 200
    assert "error_code" not in rec and rec["cancelled"] is False
    assert rec["prompt_chars"] == len(secret_prompt)
    assert (
        rec["prompt_tokens"] == 11
        and rec["completion_tokens"] == body["usage"]["completion_tokens"]
    )
    assert 0 < rec["ttft_ms"] <= rec["duration_ms"]
    status, headers, _ = post(gw, headers={"X-Api-Key": "wrong"})
    bad = gw.audit_for(headers["x-request-id"])
    assert bad["status"] == 401 and bad["error_code"] == "invalid_api_key" and bad["key_id"] is None
    text = gw.audit_path.read_text()
    for leaked in (BOT_KEY, PLAIN_KEY, "wrong", secret_prompt, "Hello from the fake"):
        assert leaked not in text


def test_several_limits_on_a_key_count_only_admitted_requests(
    start_gateway: Any, fake: FakeOllama
) -> None:
    cfg = auth_config(fake, rate_limit={"enabled": True})
    cfg["auth"]["keys"][0].update(rate_limit="5/hour;1/second", max_concurrent=None)
    del cfg["auth"]["keys"][0]["max_concurrent"]
    gw = start_gateway(cfg)
    headers = {"Authorization": f"Bearer {BOT_KEY}"}
    statuses = [post(gw, headers=headers)[0] for _ in range(4)]
    assert statuses == [200, 429, 429, 429]  # the per-second limit refuses...
    time.sleep(1.1)
    status, h, _ = post(gw, headers=headers)  # ...without using up the hourly one
    assert status == 200 and h["x-ratelimit-remaining-requests"] == "0"  # 1/second: 0 left


def test_concurrency_refusal_does_not_use_rate(start_gateway: Any, fake: FakeOllama) -> None:
    cfg = auth_config(fake, rate_limit={"enabled": True, "max_requests": 30, "window_seconds": 60})
    cfg["auth"]["keys"][0]["max_concurrent"] = 1
    gw = start_gateway(cfg)
    fake.behave(chunk_delay=0.2, repeat=10)
    headers = {"Authorization": f"Bearer {BOT_KEY}"}
    with requests.Session() as sess:
        held = sess.post(
            gw.url + "/v1/chat/completions",
            json={**CHAT, "stream": True},
            headers=headers,
            stream=True,
            timeout=10,
        )
        lines = held.iter_lines()
        assert int(held.headers["x-ratelimit-remaining-requests"]) == 29
        next(lines)
        for _ in range(3):
            assert post(gw, headers=headers)[0] == 429
        held.close()
    fake.behave()
    deadline = time.monotonic() + 5
    while (result := post(gw, headers=headers))[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert result[1]["x-ratelimit-remaining-requests"] == "28"  # the three refusals cost nothing


def test_invalid_requests_count_against_the_rate(start_gateway: Any, fake: FakeOllama) -> None:
    """The rate is counted at admission, before the body is read (docs/decisions.md): a 400
    uses up rate as on OpenAI's API, and says so in its headers; count_tokens does not."""
    cfg = auth_config(fake, rate_limit={"enabled": True, "max_requests": 3, "window_seconds": 60})
    gw = start_gateway(cfg)
    headers = {"X-Api-Key": PLAIN_KEY}
    status, h, body = post(gw, {"model": "qwen3:32b", "messages": "not a list"}, headers=headers)
    assert status == 400 and h["x-ratelimit-remaining-requests"] == "2"
    counted = requests.post(
        gw.url + "/v1/messages/count_tokens",
        json={"model": "qwen3:32b", "messages": MSGS},
        headers=headers,
        timeout=10,
    )
    assert counted.status_code == 200 and "x-ratelimit-remaining-requests" not in counted.headers
    assert [post(gw, headers=headers)[0] for _ in range(3)] == [200, 200, 429]
    assert len(fake.chat_requests()) == 2


def test_chunked_body_over_the_limit_is_413(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})

    def chunks() -> Any:
        yield b'{"model": "qwen3:32b", "messages": [{"role": "user", "content": "'
        for _ in range(1100):
            yield b"x" * 1024
        yield b'"}]}'

    r = requests.post(
        gw.url + "/v1/chat/completions",
        data=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    small = requests.post(
        gw.url + "/v1/chat/completions",
        data=iter([json.dumps(CHAT).encode()]),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert small.status_code == 200  # chunked bodies under the limit are fine


def test_deeply_nested_json_is_a_400_without_a_traceback(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    deep = "[" * 100_000 + "]" * 100_000
    r = requests.post(
        gw.url + "/v1/chat/completions",
        data=deep,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    assert "Traceback" not in gw.log() and "RecursionError" not in gw.log()


def test_unknown_paths_are_gated_and_audited(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "whitelist": {"enabled": True, "ips": ["127.0.0.3"]}}
    )
    conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)
    conn.request("GET", "/wp-login.php")
    resp = conn.getresponse()
    body = json.loads(resp.read())
    assert resp.status == 403 and body["error"]["message"] == "ip not allowed"
    rec = gw.audit_for(resp.getheader("X-Request-Id"))
    assert rec["path"] == "/wp-login.php" and rec["status"] == 403
    conn = http.client.HTTPConnection(
        "127.0.0.1", gw.port, timeout=5, source_address=("127.0.0.3", 0)
    )
    conn.request("GET", "/v1/chat/completions")
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 405
    assert gw.audit_for(resp.getheader("X-Request-Id"))["error_code"] == "method_not_allowed"
