"""The emitted site on a real nginx (loopback high ports, own prefix) with stand-in upstreams:
what a browser, an API client and the gateway actually see."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
import ssl
import time

import pytest
import requests

from nginxgen.build import render

pytestmark = pytest.mark.integration

SECURITY = {
    "strict-transport-security": "max-age=63072000; includeSubDomains",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "strict-origin-when-cross-origin",
    "content-security-policy": None,
    "permissions-policy": None,
}


@pytest.fixture(scope="module")
def edge(ng, ui_stub, gateway_stub, tmp_path_factory):
    work = tmp_path_factory.mktemp("edge")
    spec = ng.edge_spec(work, ui=ui_stub.addr, gateway=gateway_stub.addr)
    handle = ng.start_nginx(render(spec), work)
    yield handle
    handle.stop()


def _get(edge, path, **kw):
    return requests.get(edge.url(path), verify=edge.ca_pem, timeout=10, **kw)


def assert_security_headers(resp):
    for name, value in SECURITY.items():
        assert name in resp.headers, f"{name} missing on {resp.url} ({resp.status_code})"
        if value:
            assert resp.headers[name] == value
    assert "x-xss-protection" not in resp.headers
    assert resp.headers["server"] == "nginx"  # server_tokens off


def test_http_redirects_to_https_and_serves_acme(edge, tmp_path_factory):
    r = requests.get(edge.url("/some/path?q=1", tls=False), allow_redirects=False, timeout=5)
    assert r.status_code == 301
    assert r.headers["location"] == f"https://127.0.0.1:{edge.https_port}/some/path?q=1"
    acme_dir = edge.prefix.parent / "acme" / ".well-known" / "acme-challenge"
    acme_dir.mkdir(parents=True, exist_ok=True)
    (acme_dir / "tok123").write_text("tok123.key")
    r = requests.get(
        edge.url("/.well-known/acme-challenge/tok123", tls=False), allow_redirects=False
    )
    assert r.status_code == 200 and r.text == "tok123.key"


def test_ui_root_is_proxied_with_headers(edge, ui_stub):
    r = _get(edge, "/chat?x=1")
    assert r.status_code == 200
    body = r.json()
    assert body["ui"] and body["path"] == "/chat?x=1"
    assert "connection" not in body["headers"]  # '' '' map: keepalive, no fake upgrade
    assert_security_headers(r)


def test_static_asset_is_served_cached_and_keeps_headers(edge):
    r = _get(edge, "/assets/app.js")
    assert r.status_code == 200 and r.content == b"console.log('ui app');\n"
    assert r.headers["cache-control"] == "max-age=604800" and "expires" in r.headers
    assert_security_headers(r)


def test_api_path_is_kept_and_client_ip_is_real(edge, gateway_stub):
    r = _get(
        edge,
        "/v1/models",
        headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "7.7.7.7", "X-Request-Id": "evil"},
    )
    assert r.status_code == 200
    seen = r.json()
    assert seen["gateway"] and seen["path"] == "/v1/models"
    h = seen["headers"]
    assert h["x-forwarded-for"] == "127.0.0.1" and h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "https"
    assert re.fullmatch(r"[0-9a-f]{32}", h["x-request-id"])
    assert_security_headers(r)


def test_api_assets_are_not_stolen_by_the_static_regex(edge):
    r = _get(edge, "/v1/files/file-abc.png")
    assert r.status_code == 200 and r.json()["path"] == "/v1/files/file-abc.png"
    assert "expires" not in r.headers


def test_request_id_is_in_the_access_log(edge):
    r = _get(edge, "/v1/models?trace=1")
    rid = r.json()["headers"]["x-request-id"]
    log = edge.prefix.parent / "edge-access.log"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and f"request_id={rid}" not in log.read_text():
        time.sleep(0.05)
    assert f"request_id={rid}" in log.read_text()


def _tls_socket(edge) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=edge.ca_pem)
    raw = socket.create_connection(("127.0.0.1", edge.https_port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


def test_sse_arrives_chunk_by_chunk(edge, ng):
    body = json.dumps({"model": "m", "stream": True}).encode()
    with _tls_socket(edge) as s:
        s.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        buf, stamps = b"", []
        while True:
            data = s.recv(65536)
            if not data:
                break
            buf += data
            body_so_far = buf.partition(b"\r\n\r\n")[2]  # CSP in the head contains "data: "
            while len(stamps) < body_so_far.count(b"data: "):
                stamps.append(time.monotonic())
    head = buf.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 200") and "text/event-stream" in head
    assert "strict-transport-security" in head.lower()
    assert len(stamps) == ng.SSE_EVENTS + 1 and b"data: [DONE]" in buf
    spread = stamps[-1] - stamps[0]
    expected = ng.SSE_EVENTS * ng.SSE_INTERVAL
    # Buffered, all events would arrive together (spread ≈ 0).
    assert expected * 0.75 <= spread <= expected + 1.0, (spread, expected)
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= ng.SSE_INTERVAL * 0.5, gaps


def test_websocket_upgrade_reaches_the_ui(edge, ng, ui_stub):
    key = base64.b64encode(os.urandom(16)).decode()
    with _tls_socket(edge) as s:
        s.sendall(
            (
                "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        buf = b""
        while b"hello from ui" not in buf:
            data = s.recv(4096)
            if not data:
                break
            buf += data
    head, _, frame = buf.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 101")
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    want = base64.b64encode(hashlib.sha1((key + ng.WS_GUID).encode()).digest()).decode()
    assert headers["sec-websocket-accept"] == want
    assert frame == bytes([0x81, 13]) + b"hello from ui"
    seen = [r for r in ui_stub.seen if r["path"] == "/ws"][-1]
    assert seen["headers"]["upgrade"] == "websocket"
    assert seen["headers"]["connection"].lower() == "upgrade"


def test_curl_http2_client_gets_the_ui(edge, ng):
    import shutil
    import subprocess

    curl = shutil.which("curl")
    if not curl:
        pytest.skip("curl not installed")
    out = subprocess.run(
        [
            curl,
            "-sS",
            "--http2",
            "--cacert",
            edge.ca_pem,
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            edge.url("/"),
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.stdout == "2 200", out.stderr
