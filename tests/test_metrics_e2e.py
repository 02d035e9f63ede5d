"""What an operator scrapes and reads: the metrics that answer the daily questions, bounded
labels whatever the clients send, and an audit log that stays one record per line.

Real gunicorn gevent gateways in front of the fake Ollama; Prometheus text parsed as a scraper
would.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from qwengw.config import hash_key
from qwengw.report import main_report
from tests.conftest import Gateway, RedisServer, free_port
from tests.fakes.fake_ollama import FakeOllama
from tests.test_resilience_e2e import metric

pytestmark = pytest.mark.integration

MSGS = [{"role": "user", "content": "Hi"}]


def post_raw(gw: Gateway, body: bytes, **headers: str) -> requests.Response:
    """A body sent as given: JSON escapes (lone surrogates, U+2028) reach the gateway as such."""
    return requests.post(
        gw.url + "/v1/chat/completions",
        data=body,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
    )


def scrape(gw: Gateway) -> requests.Response:
    r = requests.get(gw.url + "/metrics", timeout=5)
    assert r.status_code == 200, r.text[:300]
    return r


def wait_audit(gw: Gateway, n: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 3
    while len(gw.audit()) < n and time.monotonic() < deadline:
        time.sleep(0.02)
    return gw.audit()


# ----------------------------------------------------------------------------- hardening (#11)


def test_lone_surrogate_model_neither_loses_the_audit_line_nor_breaks_scrapes(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway({"ollama_api": fake.url})  # no models: map, the default
    r = post_raw(gw, b'{"model": "x\\udc80", "messages": [{"role": "user", "content": "Hi"}]}')
    assert r.status_code == 404  # Ollama has no such model
    rec = gw.audit_for(r.headers["X-Request-Id"])
    assert rec["model"] == "x\ufffd"
    for _ in range(2):  # every later scrape, not only the first
        assert "x\\udc80" not in scrape(gw).text
    assert requests.post(
        gw.url + "/v1/chat/completions", json={"model": "qwen3:32b", "messages": MSGS}, timeout=10
    ).ok


def test_client_model_names_do_not_become_labels(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    for i in range(20):
        r = requests.post(
            gw.url + "/v1/chat/completions",
            json={"model": f"{i}-" + "m" * 50_000, "messages": MSGS},
            timeout=10,
        )
        assert r.status_code == 404
    r = requests.post(
        gw.url + "/v1/chat/completions", json={"model": "qwen3:32b", "messages": MSGS}, timeout=10
    )
    assert r.status_code == 200
    text = scrape(gw).text
    assert len(text) < 60_000  # was 1 MB per scrape, for good
    route = "/v1/chat/completions"
    assert metric(text, "qwengw_requests_total", route=route, model="other", status="404") == 20
    assert metric(text, "qwengw_requests_total", route=route, model="qwen3:32b") == 1  # served


def test_model_labels_with_a_models_map(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "models": {"big": "qwen3:32b"}})
    assert post_raw(gw, json.dumps({"model": "big", "messages": MSGS}).encode()).ok
    assert post_raw(gw, json.dumps({"model": "qwen3:32b", "messages": MSGS}).encode()).status_code
    text = scrape(gw).text
    assert metric(text, "qwengw_requests_total", model="big", status="200") == 1
    assert 'model="qwen3:32b"' not in text  # the internal name is neither served nor shown


def test_audit_lines_survive_str_splitlines(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "auth": {"enabled": False}})
    for sep in ("\\u2028", "\\u2029", "\\u0085"):
        body = b'{"model": "a%sb", "messages": [{"role": "user", "content": "Hi"}]}' % sep.encode()
        assert post_raw(gw, body).status_code == 404
    wait_audit(gw, 3)
    raw = gw.audit_path.read_text(encoding="utf-8")
    records = [json.loads(line) for line in raw.splitlines()]  # a reader that splits on U+2028
    assert [r["model"] for r in records] == ["a\u2028b", "a\u2029b", "a\x85b"]
    assert len(raw.split("\n")) == 4


def test_housekeeping_stays_out_of_the_audit_log_and_the_inflight_gauge(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway(
        {"ollama_api": fake.url, "whitelist": {"enabled": True, "ips": ["127.0.0.1"]}}
    )
    for path in ("/health", "/ready", "/metrics", "/health"):
        assert requests.get(gw.url + path, timeout=5).status_code == 200
    r = requests.post(
        gw.url + "/v1/chat/completions", json={"model": "qwen3:32b", "messages": MSGS}, timeout=10
    )
    assert r.status_code == 200
    import http.client

    outsider = http.client.HTTPConnection(
        "127.0.0.1", gw.port, timeout=5, source_address=("127.0.0.3", 0)
    )
    outsider.request("GET", "/metrics")
    assert outsider.getresponse().status == 403  # someone probing: logged
    text = scrape(gw).text
    assert metric(text, "qwengw_inflight_requests") == 0  # the scrape does not count itself
    records = wait_audit(gw, 2)
    assert [(x["path"], x["status"]) for x in records] == [
        ("/v1/chat/completions", 200),
        ("/metrics", 403),
    ]


def test_housekeeping_in_the_audit_log_when_asked_but_not_in_report_totals(
    start_gateway: Any, fake: FakeOllama, capsys: pytest.CaptureFixture[str]
) -> None:
    gw = start_gateway({"ollama_api": fake.url, "audit": {"housekeeping": True}})
    gw_audit = gw.audit_path
    for path in ("/health", "/metrics", "/ready"):
        requests.get(gw.url + path, timeout=5)
    requests.post(
        gw.url + "/v1/chat/completions", json={"model": "qwen3:32b", "messages": MSGS}, timeout=10
    )
    records = wait_audit(gw, 5)  # the start-up /health poll too
    assert {"/health", "/metrics", "/ready", "/v1/chat/completions"} <= {x["path"] for x in records}
    assert main_report(str(gw_audit), "1h", True) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["requests"] == 1 and summary["errors"] == 0
    assert summary["housekeeping"] == len(records) - 1


# ----------------------------------------------------------------------------- the daily questions

ALICE, BOB = "alice-key", "bob-key"


def two_keys(fake_url: str, storage: str = "memory://") -> dict[str, Any]:
    """alice (2 in flight at most) and bob (2 a minute); ollama-1 is down, ollama-2 the fake."""
    return {
        "ollama_api": [f"http://127.0.0.1:{free_port()}", fake_url],
        "auth": {
            "enabled": True,
            "keys": [
                {"id": "alice", "sha256": hash_key(ALICE), "max_concurrent": 2},
                {"id": "bob", "sha256": hash_key(BOB), "rate_limit": "2/minute"},
            ],
        },
        "rate_limit": {
            "enabled": True,
            "max_requests": 120,
            "window_seconds": 60,
            "storage": storage,
        },
        "upstream": {"first_token_timeout": 90},
    }


def test_tokens_ttft_upstream_and_limits_by_key(
    start_gateway: Any, fake: FakeOllama, redis_server: RedisServer
) -> None:
    # limits in Redis: exact across the two workers
    gw = start_gateway(two_keys(fake.url, redis_server.url), workers=2)

    def chat(key: str, **extra: Any) -> requests.Response:
        return requests.post(
            gw.url + "/v1/chat/completions",
            json={"model": "qwen3:32b", "messages": MSGS, **extra},
            headers={"Authorization": f"Bearer {key}"},
            timeout=10,
        )

    for _ in range(4):
        assert chat(ALICE).status_code == 200  # ollama-1 refused, retried on ollama-2
    assert chat(ALICE, stream=True).status_code == 200
    assert [chat(BOB).status_code for _ in range(3)] == [200, 200, 429]
    assert chat("wrong").status_code == 401
    # alice holds a slot while a slow stream runs: the per-key in-flight gauge shows it
    fake.behave(chunk_delay=0.2, repeat=5)
    held = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "qwen3:32b", "messages": MSGS, "stream": True},
        headers={"Authorization": f"Bearer {ALICE}"},
        stream=True,
        timeout=10,
    )
    lines = held.iter_lines()
    next(lines)
    during = scrape(gw).text
    held.close()
    fake.behave()
    time.sleep(0.5)
    text = scrape(gw).text

    assert metric(during, "qwengw_key_inflight_requests", key_id="alice") == 1
    assert metric(during, "qwengw_inflight_requests") == 1
    assert metric(text, "qwengw_key_inflight_requests", key_id="alice") == 0
    tok = "qwengw_tokens_total"
    assert metric(text, tok, model="qwen3:32b", key_id="alice", kind="prompt") == 5 * 11
    assert metric(text, tok, model="qwen3:32b", key_id="bob", kind="prompt") == 2 * 11
    assert metric(text, tok, model="qwen3:32b", key_id="bob", kind="completion") == 2 * 5
    # the cancelled stream counts the tokens it had sent (as the audit does)
    assert metric(text, tok, key_id="alice", kind="completion") > 5 * 5
    ttft = "qwengw_time_to_first_token_seconds_count"
    assert metric(text, ttft, model="qwen3:32b", endpoint="/v1/chat/completions") == 8
    up = "qwengw_upstream_request_duration_seconds_count"
    assert metric(text, up, upstream="ollama-2", outcome="ok") == 7
    assert metric(text, up, upstream="ollama-2", outcome="cancelled") == 1
    assert metric(text, up, upstream="ollama-1", outcome="unreachable") >= 1
    assert metric(text, "qwengw_upstream_up", upstream="ollama-1") == 0
    assert metric(text, "qwengw_upstream_up", upstream="ollama-2") == 1
    callers = "qwengw_caller_requests_total"
    assert metric(text, callers, key_id="bob", client_class="loopback", status="429") == 1
    assert metric(text, callers, key_id="anonymous", client_class="loopback", status="401") == 1
    assert metric(text, "qwengw_limit_max_concurrent", key_id="alice") == 2
    assert 'qwengw_limit_max_concurrent{key_id="bob"}' not in text  # no cap: no line
    assert metric(text, "qwengw_limit_requests_per_second", key_id="bob") == pytest.approx(2 / 60)
    assert metric(text, "qwengw_limit_requests_per_second", key_id="alice") == 2.0
    assert metric(text, "qwengw_limit_first_token_timeout_seconds") == 90
    build = [ln for ln in text.splitlines() if ln.startswith("qwengw_build_info{")]
    assert len(build) == 1 and 'version="0.1.0"' in build[0] and build[0].endswith(" 1.0")
    assert 'gunicorn="' in build[0] and 'gunicorn=""' not in build[0]
    assert "ip:" not in text and "127.0.0.1" not in text  # never a client address


def test_anonymous_slots_and_limits_when_auth_is_off(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "rate_limit": {"max_concurrent": 3}})
    fake.behave(chunk_delay=0.2, repeat=5)
    done = threading.Event()

    def hold() -> None:
        with requests.post(
            gw.url + "/v1/chat/completions",
            json={"model": "qwen3:32b", "messages": MSGS, "stream": True},
            stream=True,
            timeout=10,
        ) as r:
            lines = r.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)
            done.wait(5)

    t = threading.Thread(target=hold)
    t.start()
    try:
        deadline = time.monotonic() + 5
        while metric(scrape(gw).text, "qwengw_key_inflight_requests", key_id="anonymous") != 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        done.set()
        t.join()
    text = scrape(gw).text
    assert metric(text, "qwengw_limit_max_concurrent", key_id="anonymous") == 3
    assert "qwengw_limit_requests_per_second{" not in text  # rate limit off


def test_metrics_turned_off_say_which_setting(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url, "metrics": {"enabled": False}})
    resp = requests.get(gw.url + "/metrics", timeout=5)
    assert resp.status_code == 404
    message = resp.json()["error"]["message"]
    assert "metrics.enabled is false" in message and "install" not in message
