"""Hardening end to end: what Ollama's errors may tell clients, what a flood of cheap requests
may cost (upstream calls, worker recycling, audit lines), and how the rate-limit storage's
health shows at start-up and on /ready. Real gunicorn gevent workers on loopback."""

from __future__ import annotations

import json
import os
import runpy
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from qwengw.config import hash_key
from tests.conftest import ROOT, Gateway, RedisServer, free_port
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

KEY = "sk-hardening-test"
CHAT = {"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]}
RUNNER_TEXT = (
    "llama runner process has terminated: /usr/lib/ollama/runners/cuda_v12/ollama_llama_server "
    "error loading model /var/lib/ollama/blobs/sha256-abc: CUDA out of memory"
)


def chat(gw: Gateway, body: dict[str, Any] | None = None, **kw: Any) -> requests.Response:
    return requests.post(gw.url + "/v1/chat/completions", json=body or CHAT, timeout=10, **kw)


# ----------------------------------------------------------------------------- upstream errors


@pytest.mark.parametrize(
    ("status", "error", "want_status", "want_code"),
    [
        (500, RUNNER_TEXT, 502, "upstream_error"),
        (400, "invalid options: /etc/ollama/secret.conf line 3", 400, "upstream_rejected"),
        (400, '"qwen3:32b" does not support tools', 400, "tools_not_supported"),
        (400, "input length exceeds the context length", 400, "context_length_exceeded"),
        (401, "unauthorized: token /run/secrets/ollama", 502, "upstream_error"),
    ],
)
def test_ollama_error_text_stays_in_the_log(
    start_gateway: Any,
    fake: FakeOllama,
    status: int,
    error: str,
    want_status: int,
    want_code: str,
) -> None:
    gw = start_gateway({"ollama_api": fake.url, "models": {"big": "qwen3:32b"}})
    fake.behave(status=status, error=error)
    r = chat(gw, {**CHAT, "model": "big"})
    assert r.status_code == want_status
    err = r.json()["error"]
    assert err["code"] == want_code
    assert "/" not in err["message"] and "qwen3" not in err["message"]
    assert "ollama" not in err["message"].lower()
    rid = r.headers["X-Request-Id"]
    if status >= 500 or status == 401:
        assert rid in err["message"]  # something to give the operator
    # The operator still sees what Ollama said, tied to the request.
    deadline = time.monotonic() + 3
    while error not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    line = next(ln for ln in gw.log().splitlines() if error in ln)
    assert rid in line and "ollama-1" in line


def test_stream_error_line_text_stays_in_the_log(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    fake.behave(error_after=2, error=RUNNER_TEXT)
    r = chat(gw, {**CHAT, "stream": True}, stream=True)
    events = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith(b"data: {")]
    err = events[-1]["error"]
    assert err["code"] == "upstream_error" and "/usr/lib" not in err["message"]
    assert r.headers["X-Request-Id"] in err["message"]
    assert "CUDA out of memory" not in json.dumps(events)
    time.sleep(0.2)
    assert RUNNER_TEXT in gw.log()


# ----------------------------------------------------------------------------- cheap floods


def test_models_and_ready_flood_makes_few_upstream_calls(
    start_gateway: Any, fake: FakeOllama
) -> None:
    """/v1/models and /ready cost no rate, so their Ollama call is shared for 2 s per worker:
    a key past its limit cannot make the gateway call Ollama at will."""
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "auth": {"enabled": True, "keys": [{"id": "k", "sha256": hash_key(KEY)}]},
            "rate_limit": {"enabled": True, "max_requests": 1, "window_seconds": 60},
        }
    )
    headers = {"Authorization": f"Bearer {KEY}"}
    assert chat(gw, headers=headers).status_code == 200
    assert chat(gw, headers=headers).status_code == 429  # past its limit
    fake.state.requests.clear()
    started = time.monotonic()
    with requests.Session() as sess:
        for _ in range(60):
            assert sess.get(gw.url + "/v1/models", headers=headers, timeout=5).status_code == 200
            assert sess.get(gw.url + "/ready", timeout=5).status_code == 200
    elapsed = time.monotonic() - started
    tags = [r for r in fake.state.requests if r.path == "/api/tags"]
    intervals = int(elapsed / 2.0) + 1
    # One worker: at most one call per interval for the list, one for the readiness probe.
    assert 2 <= len(tags) <= 2 * intervals, (len(tags), elapsed)


def test_ollama_down_models_flood_is_cached_too(start_gateway: Any) -> None:
    gw = start_gateway({"ollama_api": f"http://127.0.0.1:{free_port()}"})
    started = time.monotonic()
    with requests.Session() as sess:
        statuses = {sess.get(gw.url + "/v1/models", timeout=5).status_code for _ in range(30)}
    intervals = int((time.monotonic() - started) / 2.0) + 1
    assert statuses == {503}
    # Each uncached call logs a connect failure: one per 2 s, not one per request.
    assert 1 <= gw.log().count("(ollama-1): Connection refused") <= intervals


def conf_values(tmp_path: Path, config: dict[str, Any], **env: str) -> dict[str, Any]:
    """What gunicorn would read from the gateway's gunicorn config, for a given config file."""
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps(config))
    saved = dict(os.environ)
    os.environ.pop("QWENGW_MAX_REQUESTS", None)
    os.environ.update({"QWENGW_CONFIG": str(path), **env})
    try:
        return runpy.run_path(str(ROOT / "qwengw" / "gunicorn_conf.py"))
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_workers_are_not_recycled_by_request_count_with_memory_limits(tmp_path: Path) -> None:
    mem = conf_values(tmp_path, {"rate_limit": {"enabled": True}})
    assert mem["max_requests"] == 0  # a recycled worker would forget every limit
    redis = conf_values(tmp_path, {"rate_limit": {"storage": "redis://127.0.0.1:6379/0"}})
    assert redis["max_requests"] == 20000 and redis["max_requests_jitter"] == 2000
    asked = conf_values(tmp_path, {}, QWENGW_MAX_REQUESTS="500")
    assert asked["max_requests"] == 500
    trusted = conf_values(tmp_path, {"whitelist": {"trusted_proxies": ["10.0.0.2", "::1"]}})
    assert trusted["forwarded_allow_ips"] == "10.0.0.2/32,::1/128"
    assert trusted["forwarder_headers"] == "" and trusted["header_map"] == "drop"
    assert conf_values(tmp_path, {})["forwarded_allow_ips"] == ""


def test_health_floods_neither_recycle_workers_nor_fill_the_audit_log(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway(
        {
            "ollama_api": fake.url,
            "whitelist": {"enabled": True, "ips": ["10.0.0.0/8"]},
            "rate_limit": {"enabled": True},
        },
        env={"QWENGW_MAX_REQUESTS": "30"},
    )
    with requests.Session() as sess:
        for _ in range(100):  # from an address outside the allowlist
            assert sess.get(gw.url + "/health", timeout=5).status_code == 200
    assert "Autorestarting worker" not in gw.log()
    assert [r for r in gw.audit() if r["path"] == "/health"] == []
    with requests.Session() as sess:
        for _ in range(40):
            assert sess.get(gw.url + "/ready", timeout=5).status_code == 403
    time.sleep(0.3)
    assert "Autorestarting worker" in gw.log()  # other requests still count
    # Asking for recycling with memory:// limits is allowed, and said to be risky.
    assert "each recycle forgets the memory:// limits" in gw.log()
    assert len([r for r in gw.audit() if r["path"] == "/ready"]) == 40


# ----------------------------------------------------------------------------- storage health


def redis_config(fake: FakeOllama, uri: str, on_error: str = "closed") -> dict[str, Any]:
    return {
        "ollama_api": fake.url,
        "rate_limit": {
            "enabled": True,
            "max_requests": 1000,
            "storage": uri,
            "on_storage_error": on_error,
        },
    }


def test_storage_down_at_start_is_said_and_ready_is_503(
    start_gateway: Any, fake: FakeOllama
) -> None:
    port = free_port()
    gw = start_gateway(redis_config(fake, f"redis://:s3cret-pw@127.0.0.1:{port}/0"))
    log = gw.log()
    assert f"rate-limit storage is not reachable at redis://127.0.0.1:{port}/0" in log
    assert "s3cret-pw" not in log
    r = requests.get(gw.url + "/ready", timeout=5)
    assert r.status_code == 503
    assert r.json()["rate_limit_storage"] == {"reachable": False, "on_error": "closed"}
    assert "s3cret" not in r.text and str(port) not in r.text
    assert chat(gw).status_code == 503
    log = gw.log()
    assert f"rate-limit storage redis://127.0.0.1:{port}/0 unavailable (ConnectionError" in log
    assert "s3cret-pw" not in log and "Traceback" not in log


def test_ready_follows_the_storage(
    start_gateway: Any, fake: FakeOllama, redis_server: RedisServer
) -> None:
    gw = start_gateway(redis_config(fake, redis_server.url))
    assert f"rate-limit storage reachable at {redis_server.url}" in gw.log()
    r = requests.get(gw.url + "/ready", timeout=5)
    assert r.status_code == 200 and r.json()["rate_limit_storage"]["reachable"] is True
    redis_server.stop()
    wait_ready(gw, 503)  # /ready asks the storage at most every 2 s per worker
    assert chat(gw).status_code == 503
    redis_server.start()
    wait_ready(gw, 200)
    assert chat(gw).status_code == 200


def wait_ready(gw: Gateway, status: int) -> None:
    deadline = time.monotonic() + 5
    while (r := requests.get(gw.url + "/ready", timeout=5)).status_code != status:
        assert time.monotonic() < deadline, f"/ready still {r.status_code}: {r.text}"
        time.sleep(0.2)


def test_storage_down_failing_open_is_ready(start_gateway: Any, fake: FakeOllama) -> None:
    gw = start_gateway(redis_config(fake, f"redis://127.0.0.1:{free_port()}/0", "open"))
    assert "limits are not enforced until it is" in gw.log()
    r = requests.get(gw.url + "/ready", timeout=5)
    assert r.status_code == 200
    assert r.json()["rate_limit_storage"] == {"reachable": False, "on_error": "open"}
    assert chat(gw).status_code == 200


# ----------------------------------------------------------------------------- lone surrogates

SURROGATE_BODIES = [
    b'{"model": "qwen3:32b\\udc80", "messages": [{"role": "user", "content": "x"}]}',
    b'{"model": "qwen3:32b", "messages": [{"role": "user", "content": "\\udc80\\ud800"}]}',
    b'{"model": "qwen3:32b", "stream": true, "messages": [{"role": "\\udc80", "content": "x"}]}',
    b'{"model": "nomic-embed-text", "input": "\\udc80"}',
    b'{"model": "\\ud83d", "input": ["a"]}',
]


@pytest.mark.parametrize("models", [{}, {"qwen3:32b\udc80": "qwen3:32b"}])
def test_lone_surrogates_never_500(
    start_gateway: Any, fake: FakeOllama, models: dict[str, str]
) -> None:
    gw = start_gateway({"ollama_api": fake.url, "models": models})
    for body in SURROGATE_BODIES:
        path = "/v1/embeddings" if b'"input"' in body else "/v1/chat/completions"
        r = requests.post(
            gw.url + path, data=body, headers={"Content-Type": "application/json"}, timeout=10
        )
        assert r.status_code < 500, (body, r.text[:300])
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        elif r.headers["Content-Type"].startswith("text/event-stream"):
            assert r.text.rstrip().endswith("data: [DONE]")
        else:
            r.json()


def test_an_answer_echoing_a_surrogate_model_is_valid_json(
    start_gateway: Any, fake: FakeOllama
) -> None:
    fake.state.models.append("odd\udc80")
    gw = start_gateway({"ollama_api": fake.url})
    body = b'{"model": "odd\\udc80", "messages": [{"role": "user", "content": "x"}]}'
    for stream in (b"false", b"true"):
        r = requests.post(
            gw.url + "/v1/chat/completions",
            data=body[:-1] + b', "stream": ' + stream + b"}",
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert r.status_code == 200, r.text[:300]
        if stream == b"false":
            assert r.json()["model"] == "odd\udc80"
        else:
            first = next(ln for ln in r.iter_lines() if ln.startswith(b"data: {"))
            assert json.loads(first[6:])["model"] == "odd\udc80"


def test_surrogates_leave_a_valid_audit_line_and_no_traceback(
    start_gateway: Any, fake: FakeOllama
) -> None:
    gw = start_gateway({"ollama_api": fake.url})
    r = requests.post(
        gw.url + "/v1/chat/completions",
        data=SURROGATE_BODIES[0],
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert r.status_code == 404
    gw.audit_for(r.headers["X-Request-Id"], timeout=1)
    assert "Traceback" not in gw.log()
