"""The hop's HTTP/1.1 client (qwengw/http1.py) against real loopback servers that misbehave the
way servers do: idle connections closed under us, answers cut short, silence, 1xx, TLS.

And end to end: the gateway in front of an Ollama served over HTTPS (behind a TLS proxy), with
the certificate checked."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
import requests

from qwengw.http1 import Broken, ConnectFailed, HostPool, ReadTimeout
from tests.fakes.fake_ollama import FakeOllama

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


class RawServer:
    """A loopback TCP server; ``serve(conn, n)`` handles the n-th connection (from 0)."""

    def __init__(self, serve: Callable[[socket.socket, int], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.serve = serve
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            n, self.connections = self.connections, self.connections + 1
            threading.Thread(target=self._one, args=(conn, n), daemon=True).start()

    def _one(self, conn: socket.socket, n: int) -> None:
        try:
            self.serve(conn, n)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.listener.close()


def read_request(conn: socket.socket) -> bytes:
    """One request's head and Content-Length body; b"" when the client closed."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return b""
        buf += data
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket, int], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(serve: Callable[[socket.socket, int], None]) -> RawServer:
        servers.append(RawServer(serve))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def get(pool: HostPool, path: str = "/", read_timeout: float = 5.0) -> Any:
    return pool.request("GET", path, None, {}, connect_timeout=2, read_timeout=read_timeout)


def connections_for(server: RawServer, requests: int, pause: float = 0.0) -> int:
    """Send ``requests`` GETs one after another, each answered 200 ``{}``; the connections
    the server saw."""
    pool = HostPool(server.url, maxsize=4)
    for _ in range(requests):
        answer = get(pool)
        assert (answer.status, answer.read()) == (200, b"{}")
        answer.finish()
        time.sleep(pause)
    return server.connections


def keep_alive(conn: socket.socket, n: int) -> None:
    while read_request(conn):
        conn.sendall(OK)


def test_connections_are_kept_alive_and_reused(raw_server: Any) -> None:
    assert connections_for(raw_server(keep_alive), 5) == 1


def test_the_request_on_the_wire(raw_server: Any) -> None:
    seen: list[bytes] = []

    def serve(conn: socket.socket, n: int) -> None:
        seen.append(read_request(conn))
        conn.sendall(OK)

    server = raw_server(serve)
    pool = HostPool(server.url, maxsize=1)
    answer = pool.request(
        "POST",
        "/api/chat",
        b'{"a": 1}',
        {"Content-Type": "application/json", "X-Request-Id": "req-1"},
        connect_timeout=2,
        read_timeout=2,
    )
    answer.read()
    answer.finish()
    head, body = seen[0].split(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /api/chat HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}".encode() in lines
    assert b"Content-Length: 8" in lines and b"X-Request-Id: req-1" in lines
    assert body == b'{"a": 1}'


def test_an_idle_connection_the_server_closed_is_not_reused(raw_server: Any) -> None:
    """The server answers once and closes (as Ollama does after its idle timeout)."""

    def once(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(OK)

    # (a pause after each: the close reaches us, and the peek sees the end of file)
    assert connections_for(raw_server(once), 3, pause=0.05) == 3


def test_a_connection_closed_as_the_request_arrives_is_retried_once_on_a_new_one(
    raw_server: Any,
) -> None:
    """The race the peek cannot see: the server takes the second request on a kept-alive
    connection and closes it without an answer. Nothing was answered, so it is sent again."""

    def close_on_second(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(OK)
        read_request(conn)  # the second request: closed unanswered

    assert connections_for(raw_server(close_on_second), 3) == 3


def test_a_connection_reset_after_part_of_an_answer_is_broken_and_not_resent(
    raw_server: Any,
) -> None:
    """Once a byte of the answer came, the request may have run: it is never sent again."""

    def reset_mid_headers(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(OK)
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-")
        time.sleep(0.2)  # the client has read those bytes
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server = raw_server(reset_mid_headers)
    pool = HostPool(server.url, maxsize=2)
    first = get(pool)
    first.read()
    first.finish()
    with pytest.raises(Broken):
        get(pool)
    assert server.connections == 1


def test_a_new_connection_closed_without_an_answer_is_broken(raw_server: Any) -> None:
    server = raw_server(lambda conn, n: read_request(conn))
    with pytest.raises(Broken):
        get(HostPool(server.url, maxsize=1))
    assert server.connections == 1  # not retried: a fresh connection tells the truth


def test_nothing_listening_fails_to_connect() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(ConnectFailed) as refused:
        get(HostPool(f"http://127.0.0.1:{port}", maxsize=1))
    assert isinstance(refused.value.reason, ConnectionRefusedError)


def test_silence_before_the_headers_and_between_lines_times_out(raw_server: Any) -> None:
    def slow(conn: socket.socket, n: int) -> None:
        read_request(conn)
        if n == 0:
            time.sleep(1.0)  # no headers
            return
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab\n\r\n")
        time.sleep(1.0)  # then nothing

    server = raw_server(slow)
    pool = HostPool(server.url, maxsize=2)
    started = time.monotonic()
    with pytest.raises(ReadTimeout):
        get(pool, read_timeout=0.3)
    assert time.monotonic() - started < 0.9
    answer = get(pool, read_timeout=0.3)
    answer.set_timeout(0.2)
    assert answer.read_some() == b"ab\n"
    with pytest.raises(ReadTimeout):
        answer.read_some()
    answer.close()


def test_a_stream_arrives_as_it_is_sent_and_its_connection_is_reused(raw_server: Any) -> None:
    def stream(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(3):
                line = f'{{"i": {i}}}\n'.encode()
                conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))
                time.sleep(0.1)
            conn.sendall(b"0\r\n\r\n")

    server = raw_server(stream)
    pool = HostPool(server.url, maxsize=1)
    for _ in range(2):
        answer = get(pool)
        pieces, times = [], []
        while data := answer.read_some():
            pieces.append(data)
            times.append(time.monotonic())
        assert b"".join(pieces) == b'{"i": 0}\n{"i": 1}\n{"i": 2}\n'
        assert len(pieces) == 3 and times[-1] - times[0] > 0.15  # not buffered to the end
        answer.finish()
    assert server.connections == 1


def test_an_answer_cut_short_is_broken_and_its_connection_dropped(raw_server: Any) -> None:
    def cut(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(
            b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\n{"i": 0}\n\r\n5\r\nab'
        )

    server = raw_server(cut)
    pool = HostPool(server.url, maxsize=2)
    answer = get(pool)
    received = b""
    with pytest.raises(Broken):
        while data := answer.read_some():
            received += data
    assert received == b'{"i": 0}\nab'  # what came, then the failure: never a quiet end
    answer.finish()
    assert pool._idle == []


def test_a_half_read_answer_is_not_reused(raw_server: Any) -> None:
    def endless(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                conn.sendall(b"2\r\n.\n\r\n")
                time.sleep(0.01)
        except OSError:
            pass  # the client closed: the generation stops

    server = raw_server(endless)
    pool = HostPool(server.url, maxsize=2)
    answer = get(pool)
    assert answer.read_some()
    answer.close()
    assert pool._idle == []
    answer = get(pool)  # a new connection, not the half-read one
    assert answer.read_some().startswith(b".\n")
    answer.close()
    assert server.connections == 2


def test_an_abort_wakes_a_blocked_read(raw_server: Any) -> None:
    def silent(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        time.sleep(5)

    server = raw_server(silent)
    answer = get(HostPool(server.url, maxsize=1))
    threading.Timer(0.2, answer.abort).start()
    started = time.monotonic()
    with pytest.raises(Broken):
        answer.read_some()
    assert time.monotonic() - started < 2
    answer.close()


def test_interim_answers_are_skipped_and_error_statuses_read(raw_server: Any) -> None:
    def serve(conn: socket.socket, n: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b'{"error": "model not found"}'
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        read_request(conn)

    server = raw_server(serve)
    answer = get(HostPool(server.url, maxsize=1))
    assert answer.status == 404
    assert answer.read(65536) == b'{"error": "model not found"}'
    answer.finish()


def test_more_requests_at_once_than_the_pool_keeps_do_not_wait(raw_server: Any) -> None:
    gate = threading.Event()

    def held(conn: socket.socket, n: int) -> None:
        while read_request(conn):
            gate.wait(5)
            conn.sendall(OK)

    server = raw_server(held)
    pool = HostPool(server.url, maxsize=2)
    results: list[Any] = []

    def one() -> None:
        answer = get(pool)
        results.append(answer.read())
        answer.finish()

    threads = [threading.Thread(target=one) for _ in range(5)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 3
    while server.connections < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 5  # all five sent at once: the pool opened what it needed
    gate.set()
    for t in threads:
        t.join(5)
    assert results == [b"{}"] * 5
    assert len(pool._idle) == 2  # the extra connections were closed on return


# --- Ollama behind TLS -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_ollama(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FakeOllama, str]]:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    ca_file = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    fake = FakeOllama("127.0.0.1", tls=context).start()
    yield fake, str(ca_file)
    fake.stop()


@pytest.mark.integration
def test_ollama_over_https_with_its_certificate_checked(
    tls_ollama: tuple[FakeOllama, str], start_gateway: Any
) -> None:
    fake, ca_file = tls_ollama
    gw = start_gateway({"ollama_api": fake.url}, env={"SSL_CERT_FILE": ca_file})
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": "Hi"}]
    for _ in range(3):  # kept-alive TLS connections are reused
        reply = client.chat.completions.create(model="qwen3:32b", messages=messages)
        assert reply.choices[0].message.content == "Hello from the fake Ollama!"
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="qwen3:32b", messages=messages, stream=True)
        if c.choices
    )
    assert text == "Hello from the fake Ollama!"
    ready = requests.get(gw.url + "/ready", timeout=5)
    assert ready.status_code == 200


@pytest.mark.integration
def test_an_untrusted_ollama_certificate_is_refused_and_said_why(
    tls_ollama: tuple[FakeOllama, str], start_gateway: Any
) -> None:
    fake, _ = tls_ollama
    gw = start_gateway({"ollama_api": fake.url})  # the test CA is not trusted here
    resp = requests.post(
        gw.url + "/v1/chat/completions",
        json={"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]},
        timeout=10,
    )
    assert resp.status_code == 503
    assert resp.json()["error"]["message"] == "the model server is not reachable; try again shortly"
    assert "localhost" not in resp.text
    deadline = time.monotonic() + 3
    while "CERTIFICATE_VERIFY_FAILED" not in gw.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "CERTIFICATE_VERIFY_FAILED" in gw.log()
