"""Hostile and slow clients at the HTTP level, on raw sockets, against real gunicorn gevent.

Malformed chunked bodies, client headers that would rewrite routing, ``//`` paths, slow
headers, a body that never finishes, a client that stops reading, a client that half-closes.
Every answer must be JSON in the OpenAI error shape (never a 500, never gunicorn's HTML), and
every request that reached the app must leave one audit line. Loopback only, bounded in time.
"""

from __future__ import annotations

import json
import re
import select
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from qwengw.config import hash_key
from tests.conftest import Gateway
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

KEY = "sk-hostile-test-key"
OUTSIDER = "127.0.0.2"  # not in the allowlist below
CHAT = {"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]}
BODY = json.dumps({**CHAT, "stream": False}).encode()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    interim: list[int] = field(default_factory=list)  # 1xx statuses seen before it
    closed: bool = False  # the server closed the connection after it

    def json(self) -> Any:
        return json.loads(self.body)


def read_answer(sock: socket.socket, timeout: float = 10.0) -> Answer:
    """One HTTP/1.1 response (after any 1xx), then whether the server closed the connection."""
    sock.settimeout(timeout)
    buf = b""
    interim: list[int] = []
    while True:
        while b"\r\n\r\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError(f"closed before a full response head: {buf[:200]!r}")
            buf += data
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:])}
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    if "content-length" in headers:
        n = int(headers["content-length"])
        while len(buf) < n:
            data = sock.recv(65536)
            if not data:
                break
            buf += data
        body, rest = buf[:n], buf[n:]
    else:  # chunked
        body, rest = b"", buf
        while True:
            while b"\r\n" not in rest:
                rest += sock.recv(65536)
            size_line, rest = rest.split(b"\r\n", 1)
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += sock.recv(65536)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
    closed = False
    if not rest:
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
        except OSError:
            closed = True
    return Answer(status, headers, body, interim, closed)


def connect(gw: Gateway, source: str = "127.0.0.1") -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.port), timeout=10, source_address=(source, 0))


def post_head(path: str, extra: bytes = b"", key: bool = True) -> bytes:
    auth = f"Authorization: Bearer {KEY}\r\n".encode() if key else b""
    return (
        f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n".encode()
        + auth
        + extra
    )


def assert_openai_error(ans: Answer, status: int) -> dict[str, Any]:
    assert ans.status == status, (ans.status, ans.body[:300])
    assert ans.headers["content-type"].startswith("application/json")
    err = ans.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    return err


def no_traceback(gw: Gateway) -> None:
    log = gw.log()
    assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]


@pytest.fixture(scope="module")
def gw(fake_ollama: FakeOllama, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "ollama_api": fake_ollama.url,
        "auth": {"enabled": True, "keys": [{"id": "k1", "sha256": hash_key(KEY)}]},
        "whitelist": {"enabled": True, "ips": ["127.0.0.1"]},
        "rate_limit": {"max_concurrent": 1},
        "client": {"body_timeout": 1, "send_timeout": 1},
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("hostile"), workers=1).start()
    yield gateway
    gateway.stop()


# ----------------------------------------------------------------------------- chunked bodies

CHUNK_HEAD = post_head("/v1/chat/completions", b"Transfer-Encoding: chunked\r\n\r\n")
GOOD_CHUNK = b"%x\r\n%s\r\n" % (len(BODY), BODY)


@pytest.mark.parametrize(
    "chunks",
    [
        pytest.param(b"zz\r\n" + BODY + b"\r\n0\r\n\r\n", id="size-zz"),
        pytest.param(b"-1\r\n" + BODY + b"\r\n0\r\n\r\n", id="size-negative"),
        pytest.param(b" 5\r\nhello\r\n0\r\n\r\n", id="size-leading-space"),
        pytest.param(b"%x\r\n%sXX0\r\n\r\n" % (len(BODY), BODY), id="missing-crlf"),
        pytest.param(GOOD_CHUNK + b"0\r\nContent-Length: 5\r\n\r\n", id="content-length-trailer"),
        pytest.param(b"%x;\rext\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY), id="bare-cr-extension"),
    ],
)
def test_malformed_chunked_body_is_400_json(gw: Gateway, fake: FakeOllama, chunks: bytes) -> None:
    with connect(gw) as sock:
        sock.sendall(CHUNK_HEAD + chunks)
        ans = read_answer(sock)
    err = assert_openai_error(ans, 400)
    assert "malformed request body" in err["message"]
    assert ans.closed  # where a next request would start is unknown
    assert gw.audit_for(ans.headers["x-request-id"])["status"] == 400
    assert fake.chat_requests() == []
    no_traceback(gw)


def test_chunk_shorter_than_its_size(gw: Gateway, fake: FakeOllama) -> None:
    # The client says so by closing its sending side: a 400, not a 500.
    with connect(gw) as sock:
        sock.sendall(CHUNK_HEAD + b"ffff\r\n" + BODY + b"\r\n0\r\n\r\n")
        sock.shutdown(socket.SHUT_WR)
        ans = read_answer(sock)
    assert_openai_error(ans, 400)
    # Or it just stops sending: the body timeout ends it.
    with connect(gw) as sock:
        sock.sendall(CHUNK_HEAD + b"ffff\r\n" + BODY + b"\r\n0\r\n\r\n")
        ans = read_answer(sock)
    assert assert_openai_error(ans, 408)["code"] == "request_timeout"
    assert fake.chat_requests() == []
    no_traceback(gw)


# ----------------------------------------------------------------------------- routing headers


@pytest.mark.parametrize(
    "header", [b"SCRIPT_NAME: /foo", b"PATH_INFO: /health", b"Script_Name: /v1"]
)
def test_client_headers_cannot_rewrite_routing(gw: Gateway, header: bytes) -> None:
    # From 127.0.0.1, which gunicorn's default forwarded_allow_ips trusts.
    with connect(gw) as sock:
        sock.sendall(
            b"GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "
            + KEY.encode()
            + b"\r\n"
            + header
            + b"\r\n\r\n"
        )
        ans = read_answer(sock)
    assert ans.status == 200 and ans.json()["object"] == "list"
    rec = gw.audit_for(ans.headers["x-request-id"])
    assert rec["path"] == "/v1/models" and rec["status"] == 200
    no_traceback(gw)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1//models"), ("POST", "/v1/chat//completions"), ("GET", "/v1/models//x")],
)
def test_double_slash_paths_answer_json_never_redirect(
    gw: Gateway, fake: FakeOllama, method: str, path: str
) -> None:
    with connect(gw) as sock:
        sock.sendall(
            f"{method} {path} HTTP/1.1\r\nHost: evil.example\r\n".encode()
            + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(BODY)}\r\n\r\n".encode()
            + BODY
        )
        ans = read_answer(sock)
    assert ans.status in (404, 405), ans.status
    assert_openai_error(ans, ans.status)
    assert "location" not in ans.headers
    assert b"evil.example" not in ans.body
    assert gw.audit_for(ans.headers["x-request-id"])["status"] == ans.status
    assert fake.chat_requests() == []


# ----------------------------------------------------------------------------- slow headers


def test_slow_headers_are_cut_and_cannot_crowd_out_health(gw: Gateway) -> None:
    """Slowloris from an address outside the allowlist: each connection gets ≤ 5 s to send its
    headers, and the address gets a few connections per worker, so /health stays fast."""
    socks: list[socket.socket] = []
    for _ in range(40):
        s = connect(gw, OUTSIDER)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    # Refused connections get a 429 (or a reset) at once; accepted ones hear nothing yet.
    held = list(socks)
    deadline = time.monotonic() + 3
    while len(held) > 8 and time.monotonic() < deadline:
        readable, _, _ = select.select(held, [], [], 0.1)
        for s in readable:
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            assert (
                data == b""
                or b'"type": "requests", "param": null, "code": "too_many_connections"' in data
            )
            held.remove(s)
    assert 1 <= len(held) <= 8, len(held)  # OUTSIDER_CONNECTIONS per worker

    started = time.monotonic()
    closed_at: list[float] = []
    health_times: list[float] = []
    while time.monotonic() - started < 7.5:
        for s in list(held):
            try:
                s.sendall(b"X")  # one header byte every ~0.25 s, forever
            except OSError:
                closed_at.append(time.monotonic() - started)
                held.remove(s)
        t = time.monotonic()
        assert requests.get(gw.url + "/health", timeout=5).status_code == 200
        health_times.append(time.monotonic() - t)
        if not held:
            break
        time.sleep(0.25)
    for s in socks:
        s.close()
    assert not held, "a connection still dribbling headers after 7.5 s"
    assert max(closed_at) < 7.5
    assert max(health_times) < 2.0, health_times  # generous: it takes ~3 ms


# ----------------------------------------------------------------------------- stalled body


def test_stalled_body_is_cut_and_holds_a_concurrency_slot(gw: Gateway, fake: FakeOllama) -> None:
    with connect(gw) as stalled:
        stalled.sendall(post_head("/v1/chat/completions", b"Content-Length: 100000\r\n\r\n{"))
        time.sleep(0.2)
        # The key's one in-flight slot is taken by the body being read.
        with connect(gw) as other:
            other.sendall(
                post_head("/v1/chat/completions", b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
            )
            busy = read_answer(other)
        assert assert_openai_error(busy, 429)["code"] == "concurrency_limit_exceeded"
        started = time.monotonic()
        ans = read_answer(stalled)
        held = time.monotonic() - started
    err = assert_openai_error(ans, 408)
    assert err["code"] == "request_timeout" and "1s" in err["message"]
    assert ans.closed
    assert held < 3.0  # body_timeout is 1 s
    assert gw.audit_for(ans.headers["x-request-id"])["status"] == 408
    # The slot is free again.
    with connect(gw) as sock:
        sock.sendall(
            post_head("/v1/chat/completions", b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
        )
        assert read_answer(sock).status == 200
    no_traceback(gw)


# ----------------------------------------------------------------------------- slow reader


def test_client_that_stops_reading_is_cancelled_like_a_disconnect(
    gw: Gateway, fake: FakeOllama
) -> None:
    # ~16 MiB of stream: more than the kernel buffers on both sides of a loopback socket.
    fake.behave(reply=" ".join(["x" * 65536] * 256))
    body = json.dumps({**CHAT, "stream": True}).encode()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gw.port))
    try:
        sock.sendall(
            post_head("/v1/chat/completions", b"X-Request-Id: ignored\r\n")
            + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        head = sock.recv(4096)  # the response head, then never read again
        rid = re.search(rb"X-Request-Id: (\w+)", head, re.I)
        assert rid is not None
        deadline = time.monotonic() + 10
        while not fake.state.client_gone:
            assert time.monotonic() < deadline, "Ollama still streaming to a reader that stopped"
            time.sleep(0.05)
        rec = gw.audit_for(rid.group(1).decode())
    finally:
        sock.close()
    assert rec["status"] == 499 and rec["cancelled"] is True
    assert fake.state.streams_finished == 0
    no_traceback(gw)


# ----------------------------------------------------------------------------- half-close


@pytest.mark.parametrize("stream", [False, True])
def test_half_closed_client_is_answered(gw: Gateway, fake: FakeOllama, stream: bool) -> None:
    """``shutdown(SHUT_WR)`` after a full request is not a disconnect: the answer comes, even
    while Ollama is silent for a while (the gateway probes with an interim 100 Continue)."""
    fake.behave(first_token_delay=1.5)
    body = json.dumps({**CHAT, "stream": stream}).encode()
    with connect(gw) as sock:
        sock.sendall(
            post_head("/v1/chat/completions", b"Content-Length: %d\r\n\r\n" % len(body)) + body
        )
        sock.shutdown(socket.SHUT_WR)
        ans = read_answer(sock)
    assert ans.status == 200, ans.body[:300]
    assert set(ans.interim) <= {100}
    if stream:
        events = [ln for ln in ans.body.split(b"\n") if ln.startswith(b"data: ")]
        assert events[-1] == b"data: [DONE]" and len(events) > 2
    else:
        assert ans.json()["choices"][0]["message"]["content"] == "Hello from the fake Ollama!"
    rec = gw.audit_for(ans.headers["x-request-id"])
    assert rec["status"] == 200 and rec["cancelled"] is False
    assert fake.state.client_gone == []
    no_traceback(gw)


@pytest.mark.parametrize("half_close_first", [False, True])
def test_client_that_really_leaves_before_first_token_is_cancelled(
    gw: Gateway, fake: FakeOllama, half_close_first: bool
) -> None:
    """The probe must not weaken cancel-on-disconnect: a closed socket answers it with a reset.
    A client that half-closed and then leaves is found by the next probe (every second)."""
    fake.behave(first_token_delay=10)
    sock = connect(gw)
    sock.sendall(
        post_head("/v1/chat/completions", b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY
    )
    if half_close_first:
        sock.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
    deadline = time.monotonic() + 5
    while not fake.chat_requests():
        assert time.monotonic() < deadline, "the request never reached Ollama"
        time.sleep(0.01)
    sock.close()
    left = time.monotonic()
    budget = 2.0 if half_close_first else 1.0
    while not fake.state.client_gone:
        assert time.monotonic() - left < budget, "Ollama still working for a client that left"
        time.sleep(0.01)
    fake.behave()
    no_traceback(gw)


# ----------------------------------------------------------------------------- gunicorn's parser


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", 400, id="request-line"),
        pytest.param(b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n", 400, id="header"),
        pytest.param(b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n", 414, id="long-line"),
        pytest.param(
            b"GET /health HTTP/1.1\r\n" + b"X-A: b\r\n" * 120 + b"\r\n", 431, id="many-headers"
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            400,  # gunicorn refuses a transfer coding other than chunked last
            id="transfer-coding",
        ),
    ],
)
def test_requests_gunicorn_refuses_get_json_too(gw: Gateway, raw: bytes, status: int) -> None:
    with connect(gw) as sock:
        sock.sendall(raw)
        ans = read_answer(sock)
    assert_openai_error(ans, status)
    assert ans.closed
    assert "Traceback" not in gw.log()
