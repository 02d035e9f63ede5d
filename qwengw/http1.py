"""A lean pooled HTTP/1.1 client for one host: what the hop to Ollama needs and no more.

urllib3 (through http.client and ``email.parser``) cost ~235 µs of CPU per exchange with Ollama
and ~62 µs per streamed read (the gevent wake-up included); this client ~87 and ~47 µs
(docs/benchmarks.md). The parsing of answers, the part that is easy to get wrong (chunked
framing, lengths, 1xx, keep-alive), is llhttp, Node's parser, through geventhttpclient's
binding. What is left here is simple and is what the gateway wants to own:

* the pool never blocks: beyond ``maxsize`` idle connections a request opens another, and the
  extra ones are closed when they come back (as urllib3's ``block=False``);
* each request has its own time budgets (connect, then the wait for the headers; the caller
  sets the budget for the body), not one per client;
* an idle connection the server closed is found with one non-blocking peek before reuse; if
  the server closes it between that check and our write, the request is sent once more on a
  new connection (nothing of it was answered, so nothing ran twice);
* every failure is one of three exceptions: ``ConnectFailed``, ``ReadTimeout``, ``Broken``.
"""

from __future__ import annotations

import select
import socket
import ssl
from urllib.parse import urlsplit

from geventhttpclient.response import HTTPParseError, HTTPResponse

RECV_SIZE = 65536


class TransportError(Exception):
    pass


class ConnectFailed(TransportError):
    """No connection could be made; ``reason`` is the operating system's error."""

    def __init__(self, reason: OSError) -> None:
        super().__init__(str(reason))
        self.reason = reason


class ReadTimeout(TransportError):
    """The socket's time budget ran out while waiting for the server."""


class Broken(TransportError):
    """The connection closed, reset or carried something that is not HTTP."""


def _reusable(sock: socket.socket) -> bool:
    """Whether an idle pooled connection is still open: readable (end of file, or bytes nobody
    asked for) means it is not. One peek; under gevent a poll would go through the hub."""
    if getattr(sock, "pending", None) and sock.pending():  # type: ignore[attr-defined]
        return False  # TLS: decrypted bytes nobody asked for
    raw = getattr(sock, "_sock", None)  # gevent's socket wraps the real, non-blocking one
    try:
        if raw is None:  # a plain socket (no gevent): its timeout would make a peek wait
            return not select.select([sock], [], [], 0)[0]
        raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return True  # nothing to read: open and idle
    except (OSError, ValueError):
        return False
    return False


class HostPool:
    """Keep-alive connections to one ``http://`` or ``https://`` origin."""

    def __init__(self, url: str, maxsize: int) -> None:
        parts = urlsplit(url)
        self.hostname = parts.hostname or ""
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        self.host_header = f"{host}:{parts.port}" if parts.port else host
        self.maxsize = maxsize
        self._idle: list[socket.socket] = []  # most recently used last
        self._tls_context = ssl.create_default_context() if self.tls else None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> Answer:
        """Send one request and read the answer's status line and headers.

        ``read_timeout`` bounds the write and the wait for the headers; the body is read with
        whatever budget the caller sets next (``Answer.set_timeout``)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")
        while True:
            sock, reused = self._checkout(connect_timeout)
            try:
                sock.settimeout(read_timeout)
                try:
                    sock.sendall(message)
                except (BrokenPipeError, ConnectionResetError):
                    raise _Unanswered from None
                return Answer(self, sock, method)
            except _Unanswered:
                sock.close()
                if not reused:
                    raise Broken("the server closed the connection without answering") from None
                # A pooled connection the server had just closed: once more on a new one.
            except TimeoutError:
                sock.close()
                raise ReadTimeout("no answer in time") from None
            except (OSError, HTTPParseError) as exc:
                sock.close()  # a part of an answer came: the request may have run, never resent
                raise Broken(str(exc)) from None
            except BaseException:
                sock.close()  # interrupted mid-exchange: the connection must not be reused
                raise

    def _checkout(self, connect_timeout: float) -> tuple[socket.socket, bool]:
        while self._idle:
            sock = self._idle.pop()
            if _reusable(sock):
                return sock, True
            sock.close()
        try:
            sock = socket.create_connection((self.hostname, self.port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectFailed(exc) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls_context is not None:
            try:
                sock = self._tls_context.wrap_socket(sock, server_hostname=self.hostname)
            except OSError as exc:  # ssl.SSLError is an OSError
                sock.close()
                raise ConnectFailed(exc) from None
        return sock, False

    def checkin(self, sock: socket.socket) -> None:
        if len(self._idle) < self.maxsize:
            self._idle.append(sock)
        else:
            sock.close()


class _Unanswered(Exception):
    """The connection ended before the first byte of an answer."""


class Answer(HTTPResponse):
    """One answer: its status and headers are read; read the body, then ``finish()`` (the
    connection goes back to the pool when the answer was read whole) or ``close()``."""

    def __init__(self, pool: HostPool, sock: socket.socket, method: str) -> None:
        super().__init__(method)
        self._pool: HostPool | None = pool
        self.sock: socket.socket | None = sock
        started = False
        while not self.headers_complete or self.get_code() < 200:  # 1xx: the real one follows
            try:
                data = sock.recv(RECV_SIZE)
            except (ConnectionResetError, BrokenPipeError):
                if not started:
                    raise _Unanswered from None
                raise
            if not data:
                if not started:
                    raise _Unanswered
                raise Broken("the connection closed before the end of the headers")
            started = True
            self.feed(data)

    @property
    def status(self) -> int:
        return self.get_code()

    def set_timeout(self, seconds: float) -> None:
        if self.sock is not None:
            self.sock.settimeout(seconds)

    def _fill(self) -> None:
        """One receive into the body buffer."""
        sock = self.sock
        if sock is None:
            raise Broken("the connection is closed")
        try:
            data = sock.recv(RECV_SIZE)
            self.feed(data)  # b"" is the end of file: an answer cut short raises
        except TimeoutError:
            raise ReadTimeout("the server sent nothing in time") from None
        except (OSError, HTTPParseError) as exc:
            raise Broken(str(exc) or type(exc).__name__) from None
        if not data and not self.message_complete:
            raise Broken("the connection closed mid-answer")

    def read_some(self) -> bytes:
        """The body bytes that have arrived (waiting for some if none have); b"" at the end."""
        while not self._body_buffer:
            if self.message_complete:
                return b""
            self._fill()
        data = bytes(self._body_buffer)
        self._body_buffer.clear()
        return data

    def read(self, limit: int | None = None) -> bytes:  # type: ignore[override]
        """The whole body, or its first ``limit`` bytes."""
        while not self.message_complete and (limit is None or len(self._body_buffer) < limit):
            self._fill()
        data = bytes(self._body_buffer[:limit])
        del self._body_buffer[:limit]
        return data

    def finish(self, drain_limit: int = RECV_SIZE) -> None:
        """Done with this answer: reuse the connection if the answer was (or, within a few
        bytes, can be) read to its end, else close it."""
        try:
            while not self.message_complete and len(self._body_buffer) <= drain_limit:
                self._fill()
        except TransportError:
            pass
        if self.message_complete and self.sock is not None and not self.should_close():
            sock, pool = self.sock, self._pool
            self.sock = self._pool = None
            if pool is not None:
                pool.checkin(sock)
        self.close()

    def close(self) -> None:
        """Drop the connection: a half-read answer must not be reused, and closing the socket
        is what tells Ollama to stop generating."""
        sock, self.sock, self._pool = self.sock, None, None
        if sock is not None:
            sock.close()

    def abort(self) -> None:
        """Wake a read blocked on this connection (it then fails as ``Broken``)."""
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
