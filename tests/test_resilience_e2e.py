"""Resilience end to end: slow, broken, busy and absent Ollama hosts; the circuit breaker;
several hosts; cancel on disconnect; metrics across workers; graceful shutdown."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import threading
import time
from typing import Any

import openai
import pytest
import requests

from tests.conftest import Gateway, RedisServer, free_port
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "Hi"}]
CHAT = {"model": "qwen3:32b", "messages": MSGS}


def closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def chat(gw: Gateway, body: dict[str, Any] | None = None, timeout: float = 10) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", json=body or CHAT, timeout=timeout)


def sse_events(resp: requests.Response) -> list[Any]:
    out = []
    for line in resp.iter_lines():
        if line.startswith(b"data: "):
            out.append("[DONE]" if line == b"data: [DONE]" else json.loads(line[6:]))
    return out


def stream(gw: Gateway) -> list[Any]:
    resp = requests.post(
        gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10
    )
    assert resp.status_code == 200
    return sse_events(resp)


def assert_error_then_done(events: list[Any], code: str) -> None:
    assert events[-1] == "[DONE]"
    errors = [e for e in events if isinstance(e, dict) and "error" in e]
    assert len(errors) == 1 and errors[0]["error"]["code"] == code
    assert events[-2] is errors[0]
    assert "127.0.0.1" not in json.dumps(errors) and "http" not in errors[0]["error"]["message"]


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


# ----------------------------------------------------------------------------- timeouts, errors


def test_upstream_down_is_503_fast(start_gateway: Any) -> None:
    gw = start_gateway({"ollama_api": closed_port_url()})
    t0 = time.monotonic()
    r = chat(gw)
    assert r.status_code == 503 and time.monotonic() - t0 < 2
    err = r.json()["error"]
    assert err["code"] == "upstream_unavailable" and "Retry-After" in r.headers
    assert "127.0.0.1" not in r.text and "11434" not in r.text
    assert "Ollama is not reachable at" in gw.log()  # said clearly at start-up


def test_slow_first_token_is_504_and_upstream_closed(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "upstream": {"first_token_timeout": 0.5}})
    fake.behave(first_token_delay=3)
    t0 = time.monotonic()
    r = chat(gw)
    assert r.status_code == 504 and r.json()["error"]["code"] == "upstream_timeout"
    assert 0.5 <= time.monotonic() - t0 < 2
    deadline = time.monotonic() + 2
    while not fake.state.client_gone:
        assert time.monotonic() < deadline, "the gateway kept the upstream request open"
        time.sleep(0.05)


def test_slow_between_lines_ends_stream_with_error(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "upstream": {"idle_timeout": 0.5}})
    fake.behave(chunk_delay=1.5)
    assert_error_then_done(stream(gw), "upstream_timeout")


@pytest.mark.parametrize(
    "behaviour, code",
    [
        ({"cut_after": 3}, "upstream_error"),
        ({"garbage_after": 2}, "upstream_error"),
        ({"error_after": 2, "error": "CUDA error"}, "upstream_error"),
    ],
)
def test_broken_streams_end_with_one_error(
    start_gateway: Any, fake: FakeOllama, behaviour: dict[str, Any], code: str
) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    fake.behave(**behaviour)
    events = stream(gw)
    assert_error_then_done(events, code)
    assert any(isinstance(e, dict) and e.get("choices") for e in events)  # some output came first
    fake.behave()
    assert chat(gw).status_code == 200  # the worker keeps serving


def test_500_and_503_answers(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "upstream": {"failure_threshold": 10}})
    fake.behave(status=500, error="llama runner process has terminated")
    r = chat(gw)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    fake.behave(
        status=503, error="server busy, please try again.  maximum pending requests exceeded"
    )
    r = chat(gw)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_busy"
    assert int(r.headers["Retry-After"]) >= 1
    text = requests.get(gw.url + "/metrics", timeout=5).text
    assert metric(text, "qwengw_upstream_errors_total", kind="busy") == 1
    assert metric(text, "qwengw_upstream_errors_total", kind="http_5xx") == 1
    time.sleep(0.2)  # audit lines are written as each response closes
    failed = [(r["status"], r.get("upstream")) for r in gw.audit() if r["status"] >= 500]
    assert failed == [(502, "ollama-1"), (503, "ollama-1")]  # the host that failed is named


# ----------------------------------------------------------------------------- circuit breaker


def test_circuit_open_half_open_closed(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "upstream": {"failure_threshold": 2, "open_seconds": 1}}
    )
    fake.behave(status=500)
    assert [chat(gw).status_code for _ in range(2)] == [502, 502]
    before = len(fake.chat_requests())
    r = chat(gw)
    assert r.status_code == 503 and r.json()["error"]["code"] == "upstream_unavailable"
    assert r.headers["Retry-After"] == "1"
    assert len(fake.chat_requests()) == before  # failed fast, Ollama left alone
    time.sleep(1.1)
    fake.behave()
    assert chat(gw).status_code == 200  # the one trial request (half-open) succeeds
    assert chat(gw).status_code == 200  # closed again
    log = gw.log()
    for change in ("closed → open", "open → half_open", "half_open → closed"):
        assert change in log
    text = requests.get(gw.url + "/metrics", timeout=5).text
    assert metric(text, "qwengw_circuit_transitions_total", upstream="ollama-1", to="open") == 1
    assert metric(text, "qwengw_circuit_state", upstream="ollama-1") == 0


def test_failed_trial_reopens(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "upstream": {"failure_threshold": 1, "open_seconds": 0.5}}
    )
    fake.behave(status=500)
    assert chat(gw).status_code == 502
    time.sleep(0.6)
    assert chat(gw).status_code == 502  # the trial fails...
    assert chat(gw).status_code == 503  # ...so the circuit opens again at once
    assert "half_open → open" in gw.log()


# ----------------------------------------------------------------------------- several hosts


def test_two_hosts_one_down(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": [closed_port_url(), fake.url]}, workers=2)
    statuses = [chat(gw).status_code for _ in range(12)]
    assert statuses == [200] * 12  # connect failures are retried once on the other host
    text = requests.get(gw.url + "/metrics", timeout=5).text
    assert metric(text, "qwengw_upstream_errors_total", upstream="ollama-1", kind="connect") >= 1
    assert metric(text, "qwengw_upstream_errors_total", upstream="ollama-2") == 0


def test_least_loaded_host_gets_the_request(start_gateway: Any, fake: FakeOllama) -> None:
    second = FakeOllama().start()
    try:
        gw = start_gateway({"ollama_api": [fake.url, second.url]})
        fake.behave(chunk_delay=0.2, repeat=4)
        second.behave(chunk_delay=0.2, repeat=4)
        sess = requests.Session()
        held = sess.post(
            gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10
        )
        lines = held.iter_lines()
        next(lines)  # one stream in flight on the first host
        fake.behave()
        second.behave()
        assert chat(gw).status_code == 200
        assert len(second.chat_requests()) == 1  # the idle host took the new request
        held.close()
        sess.close()
    finally:
        second.stop()


# ----------------------------------------------------------------------------- cancel on disconnect


def test_client_leaving_mid_stream_frees_ollama_within_1s(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    fake.behave(chunk_delay=0.3, repeat=40)
    body = json.dumps({**CHAT, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", gw.port))
    sock.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"X-Request-Id: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    seen = b""
    while seen.count(b"data: ") < 3:
        seen += sock.recv(65536)
    rid = re.search(rb"X-Request-Id: (\w+)", seen, re.I)
    sock.close()
    left = time.monotonic()
    deadline = left + 1.0
    while not fake.state.client_gone:
        assert time.monotonic() < deadline, "Ollama still generating 1 s after the client left"
        time.sleep(0.01)
    assert fake.state.client_gone[0] - left < 1.0
    assert rid is not None
    rec = gw.audit_for(rid.group(1).decode())
    assert rec["cancelled"] is True and rec["status"] == 499
    assert rec["completion_tokens"] >= 3
    text = requests.get(gw.url + "/metrics", timeout=5).text
    assert metric(text, "qwengw_cancelled_requests_total", route="/v1/chat/completions") == 1


def test_client_leaving_before_first_token(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    fake.behave(first_token_delay=10)  # e.g. a cold 32B model loading
    with pytest.raises(requests.Timeout):
        chat(gw, timeout=0.5)
    left = time.monotonic()
    while not fake.state.client_gone:
        assert time.monotonic() - left < 1.0, "the model load was not abandoned"
        time.sleep(0.01)
    fake.behave()
    assert chat(gw).status_code == 200


# ----------------------------------------------------------------------------- metrics


def test_metrics_after_a_known_sequence_with_two_workers(
    start_gateway: Any, fake: FakeOllama, redis_server: RedisServer
) -> None:
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "auth": {"enabled": True, "valid_keys": ["k"]},
            "rate_limit": {
                "enabled": True,
                "max_requests": 12,
                "window_seconds": 60,
                "storage": redis_server.url,
            },
        },
        workers=2,
    )
    ok = openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0)
    for _ in range(10):
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=5)  # new connection each
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=json.dumps(CHAT),
            headers={"X-Api-Key": "k", "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        conn.close()
    for _ in range(3):
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=gw.url + "/v1", api_key="bad", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError):  # counted too (the rate is taken at admission)
        ok.chat.completions.create(model="qwen3:32b", messages=[])
    ok.chat.completions.create(model="qwen3:32b", messages=MSGS)  # 12th counted
    with pytest.raises(openai.RateLimitError):
        ok.chat.completions.create(model="qwen3:32b", messages=MSGS)
    time.sleep(0.3)  # audit/metrics are recorded when each response closes
    text = requests.get(gw.url + "/metrics", timeout=5).text
    route = "/v1/chat/completions"
    assert metric(text, "qwengw_requests_total", route=route, status="200") == 11
    assert metric(text, "qwengw_requests_total", route=route, status="400") == 1
    assert metric(text, "qwengw_requests_total", route=route, status="429") == 1
    assert metric(text, "qwengw_requests_total", route="/v1/models", status="401") == 3
    assert metric(text, "qwengw_auth_rejected_total") == 3
    assert metric(text, "qwengw_rate_limited_total", reason="rate_limit_exceeded") == 1
    assert metric(text, "gen_ai_client_token_usage_count", gen_ai_token_type="input") == 11
    assert metric(text, "gen_ai_client_token_usage_sum", gen_ai_token_type="input") == 11 * 11
    assert metric(text, "gen_ai_server_time_to_first_token_seconds_count") == 11
    assert metric(text, "qwengw_request_duration_seconds_count", route=route) == 13
    assert metric(text, "qwengw_inflight_requests") == 0  # a scrape does not count itself
    assert len([r for r in gw.audit() if r["path"].startswith("/v1/")]) == 16  # one line each


def test_metrics_only_from_the_allowlist(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "whitelist": {"enabled": True, "ips": ["127.0.0.3"]}}
    )
    assert requests.get(gw.url + "/metrics", timeout=5).status_code == 403
    conn = http.client.HTTPConnection(
        "127.0.0.1", gw.port, timeout=5, source_address=("127.0.0.3", 0)
    )
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    assert resp.status == 200 and b"qwengw_requests_total" in resp.read()


# ----------------------------------------------------------------------------- shutdown


def test_sigterm_lets_streams_finish(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    fake.behave(chunk_delay=0.1, repeat=3)  # ~1.5 s stream
    result: dict[str, Any] = {}

    def consume() -> None:
        resp = requests.post(
            gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10
        )
        result["events"] = sse_events(resp)

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.4)
    assert gw.proc is not None
    gw.proc.send_signal(signal.SIGTERM)
    t.join(timeout=10)
    assert result["events"][-1] == "[DONE]"
    text = "".join(
        e["choices"][0]["delta"].get("content", "")
        for e in result["events"]
        if isinstance(e, dict) and e.get("choices")
    )
    assert text == " ".join(["Hello", "from", "the", "fake", "Ollama!"] * 3)
    assert gw.proc.wait(timeout=10) == 0


def test_recovered_host_serves_others_while_the_trial_still_streams(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "upstream": {"failure_threshold": 1, "open_seconds": 0.5}}
    )
    fake.behave(status=500)
    assert chat(gw).status_code == 502  # the circuit opens
    time.sleep(0.6)
    fake.behave(chunk_delay=0.3, repeat=4)  # the trial request is a long stream
    with requests.Session() as sess:
        trial = sess.post(
            gw.url + "/v1/chat/completions", json={**CHAT, "stream": True}, stream=True, timeout=10
        )
        lines = trial.iter_lines()
        assert next(lines).startswith(b"data: ")
        other = requests.post(
            gw.url + "/v1/embeddings", json={"model": "nomic-embed-text", "input": "x"}, timeout=5
        )
        assert other.status_code == 200  # Ollama answered the trial: the circuit is closed
        trial.close()
    assert "half_open → closed" in gw.log()


def test_errors_never_show_internal_model_names(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "models": {"small": "qwen3", "big": "qwen3:32b"}})
    fake.behave(status=400, error='"qwen3:32b" does not support tools')
    r = chat(gw, {"model": "big", "messages": MSGS})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["message"] == "this model does not support tools" and err["param"] == "tools"
    assert err["code"] == "tools_not_supported" and "qwen3" not in r.text
    assert "does not support tools" in gw.log()  # Ollama's own text goes to the log


def test_metrics_content_type(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    r = requests.get(gw.url + "/metrics", timeout=5)
    assert r.headers["Content-Type"].count("charset") == 1
    assert r.headers["Content-Type"].startswith("text/plain")
