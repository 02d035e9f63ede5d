"""The whole stack on loopback: client → real nginx (site from ``nginxgen show --gateway-config``)
→ real gunicorn gevent gateway → fake Ollama. One source of truth for both doors."""

from __future__ import annotations

import importlib
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import requests
import yaml

from tests.conftest import Gateway, free_port

pytestmark = pytest.mark.integration

KEY = "stack-test-key-123"


@pytest.fixture(scope="module")
def stack(ng: Any, fake_ollama: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("stack")
    gw_port = free_port()
    config = {
        "listen": f"127.0.0.1:{gw_port}",
        "ollama_api": fake_ollama.url,
        "auth": {"enabled": True, "valid_keys": [KEY]},
        # The real client must be allowed, nginx itself is not: proves the gateway sees the client.
        "whitelist": {"enabled": True, "ips": ["127.0.0.5"], "trusted_proxies": ["127.0.0.1"]},
        "request": {"max_body_bytes": 2 * 1024 * 1024},
        "upstream": {"idle_timeout": 90},
    }
    gw = Gateway(config, work, workers=2, env={"QWENGW_BIND": f"127.0.0.1:{gw_port}"})
    gw.port = gw_port
    gw.start()
    files = ng.issue_certs(work / "tls")
    (work / "acme").mkdir()
    http_port, https_port = free_port(), free_port()
    site = subprocess.run(
        [
            sys.executable,
            "-m",
            "nginxgen",
            "show",
            "--gateway-config",
            str(gw.config_path),
            "--server-name",
            "ai.example.test",
            "--ssl-cert",
            files.cert,
            "--ssl-key",
            files.key,
            "--ui",
            "127.0.0.1:9",
            "--http-port",
            str(http_port),
            "--https-port",
            str(https_port),
            "--listen-address",
            "127.0.0.1",
            "--acme-root",
            str(work / "acme"),
            "--access-log",
            str(work / "edge-access.log"),
            "--no-rate-limit",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert "client_max_body_size 2m;" in site  # agrees with the gateway's request.max_body_bytes
    edge = ng.start_nginx(site, work)
    yield gw, edge, work
    edge.stop()
    gw.stop()


def via_nginx(
    edge: Any, body: dict[str, Any], source: str, stream: bool = False
) -> requests.Response:
    """POST through nginx's TLS port from a chosen loopback source address."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(1, 1, source_address=(source, 0))
    session.mount("https://", adapter)
    return session.post(
        edge.url("/v1/chat/completions"),
        json=body,
        verify=edge.ca_pem,
        headers={
            "Authorization": f"Bearer {KEY}",
            "X-Forwarded-For": "6.6.6.6",
        },  # a spoof nginx must drop
        stream=stream,
        timeout=15,
    )


def test_gateway_sees_the_real_client_through_nginx(stack: Any, fake: Any) -> None:
    gw, edge, work = stack
    ok = via_nginx(
        edge,
        {"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]},
        source="127.0.0.5",
    )
    assert ok.status_code == 200, ok.text
    rid = ok.headers["x-request-id"]
    rec = gw.audit_for(rid)
    assert rec["client_ip"] == "127.0.0.5" and rec["status"] == 200
    assert fake.chat_requests()[-1].headers["X-Request-Id"] == rid  # one id across all hops
    assert rid in (work / "edge-access.log").read_text()
    denied = via_nginx(
        edge,
        {"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]},
        source="127.0.0.6",
    )
    assert denied.status_code == 403 and denied.json()["error"]["message"] == "ip not allowed"
    assert "strict-transport-security" in denied.headers


def test_sse_through_nginx_keeps_the_upstream_pacing(stack: Any, fake: Any) -> None:
    gw, edge, _ = stack
    fake.behave(chunk_delay=0.3)  # 5 words + final line, 0.3 s apart
    resp = via_nginx(
        edge,
        {"model": "qwen3:32b", "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
        source="127.0.0.5",
        stream=True,
    )
    assert resp.status_code == 200
    stamps = []
    for line in resp.iter_lines():
        if line.startswith(b"data: {") and b'"content":"' in line:
            stamps.append(time.monotonic())
    assert len(stamps) == 5
    assert stamps[-1] - stamps[0] >= 4 * 0.3 * 0.75  # not delivered all at once at the end


def test_openai_sdk_over_tls_through_both_doors(stack: Any, fake: Any) -> None:
    gw, edge, _ = stack
    # The SDK's own HTTP library (httpx, or its successor), to pick the source address.
    httpx = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])
    ctx = ssl.create_default_context(cafile=edge.ca_pem)
    transport = httpx.HTTPTransport(verify=ctx, local_address="127.0.0.5")
    client = openai.OpenAI(
        base_url=edge.url("/v1"),
        api_key=KEY,
        max_retries=0,
        http_client=openai.DefaultHttpxClient(transport=transport),
    )
    out = client.chat.completions.create(
        model="qwen3:32b", messages=[{"role": "user", "content": "Hi"}]
    )
    assert out.choices[0].message.content == "Hello from the fake Ollama!"
    big = "x" * (1024 * 1024 + 10)  # above nginx's default 1m, below the shared 2m
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="qwen3:32b", messages=[{"role": "user", "content": big}]
        )
    assert e.value.code == "context_length_exceeded"  # the gateway answered, not nginx's 413
    assert yaml.safe_load(Path(gw.config_path).read_text())["request"]["max_body_bytes"] == 2097152


def _anthropic_via_nginx(edge: Any) -> anthropic.Anthropic:
    httpx = importlib.import_module(
        anthropic.DefaultHttpxClient.__mro__[1].__module__.split(".")[0]
    )
    ctx = ssl.create_default_context(cafile=edge.ca_pem)
    transport = httpx.HTTPTransport(verify=ctx, local_address="127.0.0.5")
    return anthropic.Anthropic(
        base_url=edge.url(""),
        api_key=KEY,
        max_retries=0,
        http_client=anthropic.DefaultHttpxClient(transport=transport),
    )


def test_every_dialect_streams_through_nginx(stack: Any, fake: Any) -> None:
    """/v1/messages and /v1/responses take the same /v1/ location: paced, not buffered."""
    gw, edge, _ = stack
    fake.behave(chunk_delay=0.3)
    client = _anthropic_via_nginx(edge)
    stamps = []
    with client.messages.stream(
        model="qwen3:32b", max_tokens=64, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        for _ in stream.text_stream:
            stamps.append(time.monotonic())
        final = stream.get_final_message()
    assert final.content[0].text == "Hello from the fake Ollama!" and len(stamps) == 5
    assert stamps[-1] - stamps[0] >= 4 * 0.3 * 0.75
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter()
    adapter.init_poolmanager(1, 1, source_address=("127.0.0.5", 0))
    session.mount("https://", adapter)
    resp = session.post(
        edge.url("/v1/responses"),
        json={"model": "qwen3:32b", "input": "Hi", "stream": True},
        headers={"Authorization": f"Bearer {KEY}"},
        verify=edge.ca_pem,
        stream=True,
        timeout=15,
    )
    deltas = [
        time.monotonic() for ln in resp.iter_lines() if ln == b"event: response.output_text.delta"
    ]
    assert len(deltas) == 5 and deltas[-1] - deltas[0] >= 4 * 0.3 * 0.75


def test_nginx_error_pages_read_in_the_anthropic_sdk(stack: Any, fake: Any) -> None:
    """nginx's own JSON errors are OpenAI-shaped; the Anthropic SDK still raises the right class
    with nginx's message (docs/api.md says so)."""
    gw, edge, _ = stack
    client = _anthropic_via_nginx(edge)
    huge = "x" * (3 * 1024 * 1024)  # above the shared 2m: nginx answers, not the gateway
    with pytest.raises(anthropic.APIStatusError) as err:
        client.messages.create(
            model="qwen3:32b", max_tokens=9, messages=[{"role": "user", "content": huge}]
        )
    assert err.value.status_code == 413
    assert "too large" in str(err.value).lower()
