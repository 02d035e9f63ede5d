"""The client's socket under gunicorn's gevent worker: notice a client that left, and bound
how long the gateway waits on one that is slow (reading its body, or reading our answer).

WSGI has no disconnect signal: a gone client is normally noticed only at the next write, and
nothing is written while Ollama loads a model, queues the request or thinks silently. So an
event-loop watcher waits for the client socket to become readable; a peek then tells a
pipelined next request (nothing to do) from end-of-file.

End-of-file is ambiguous: a client that closed its socket and one that only shut down its
sending side (``shutdown(SHUT_WR)``, "I have sent everything, now I read") look the same on
read. Only data tells them apart: a closed socket answers data with a reset, a half-closed one
reads it. Before any byte of the response has gone out, HTTP/1.1 allows an interim
``100 Continue`` (every client must skip 1xx answers), so the watcher sends one and looks at
the TCP state one round trip later: reset → the client left (``on_gone`` closes the upstream
connection, which makes Ollama stop); still open → a half-close, answered as usual and probed
again every second while the answer is not ready. Once the response has started, an interim
answer is no longer allowed, and end-of-file is taken as the client leaving (docs/resilience.md).

A watcher costs one loop registration per request, not a greenlet. Elsewhere (other servers,
no gevent) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

TCP_CLOSE = 7  # tcp_info.tcpi_state after a reset
PROBE = b"HTTP/1.1 100 Continue\r\n\r\n"
PROBE_EVERY = 1.0  # seconds between probes of a half-closed client while its answer is pending
_SEND_FLAGS = getattr(socket, "MSG_DONTWAIT", 0) | getattr(socket, "MSG_NOSIGNAL", 0)


def _gevent_socket(environ: dict[str, Any]) -> Any:
    """gunicorn's client socket, when it is a gevent socket (gunicorn's gevent worker)."""
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return None
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return None
    return sock if monkey.is_module_patched("socket") else None


def _tcp_info(sock: Any) -> tuple[int, float] | None:
    """(state, smoothed round trip in seconds) from Linux's TCP_INFO, or None."""
    opt = getattr(socket, "TCP_INFO", None)
    if opt is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, opt, 104)
    except OSError:
        return None
    if len(info) < 72:
        return None
    return info[0], struct.unpack_from("I", info, 68)[0] / 1e6


class Watcher:
    def __init__(self) -> None:
        self._io: Any = None
        self._timer: Any = None
        self._sock: Any = None
        self._on_gone: Callable[[Watcher], None] | None = None
        self._request_greenlet: Any = None
        self.gone = False
        self.half_closed = False
        self.can_probe = False  # HTTP/1.1 on plain TCP, and no byte of the response sent yet

    def interrupt(self, exc: BaseException) -> None:
        """Raise ``exc`` in the request's greenlet, wherever it is blocked (e.g. on Ollama)."""
        import gevent

        target = self._request_greenlet

        def throw() -> None:
            # Checked at delivery time: once stopped, the greenlet may serve another request.
            if self._request_greenlet is target and target is not None and not target.dead:
                target.throw(exc)

        gevent.get_hub().loop.run_callback(throw)

    def response_started(self) -> None:
        """The first byte of the answer is about to go out: no interim answer from now on."""
        self.can_probe = False
        if self._timer is not None:
            self._timer.stop()

    def stop(self) -> None:
        self._request_greenlet = None
        self._sock = None
        for attr in ("_io", "_timer"):
            w = getattr(self, attr)
            if w is not None:
                w.stop()
                w.close()
                setattr(self, attr, None)

    @property
    def active(self) -> bool:
        return self._sock is not None

    # -- runs in its own greenlet (a gevent socket may wait cooperatively)
    def _check(self) -> None:
        sock = self._sock
        if sock is None:
            return  # stopped meanwhile
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            self._left()  # reset: certainly gone
            return
        if data:
            return  # a pipelined next request: the client is still there; stop watching
        if self.can_probe:
            self._probe()
        else:
            self._left()

    def _probe(self) -> None:
        import gevent

        sock = self._sock
        if sock is None or not self.can_probe:
            return
        try:
            # The real socket: one non-blocking try (gevent's would wait to be writable).
            getattr(sock, "_sock", sock).send(PROBE, _SEND_FLAGS)
        except OSError:
            self._left()
            return
        # A closed peer answers with a reset one round trip later (on loopback, during send()).
        info = _tcp_info(sock)
        if info is not None and info[0] != TCP_CLOSE:
            gevent.sleep(max(0.01, 3 * info[1]))
            if self._sock is None:
                return
            info = _tcp_info(sock)
        if info is None or info[0] == TCP_CLOSE:
            self._left()
            return
        if not self.half_closed and self.can_probe:
            # Half-closed: EOF stays readable, so stop the read watcher and probe on a timer
            # until the answer starts (a client that leaves later is then noticed ≤ 1 s).
            self.half_closed = True
            self._io.stop()
            self._timer = gevent.get_hub().loop.timer(PROBE_EVERY, PROBE_EVERY)
            self._timer.start(lambda: gevent.spawn(self._probe))

    def _left(self) -> None:
        if self._sock is None or self.gone:
            return
        self.gone = True
        if self._timer is not None:
            self._timer.stop()
        if self._on_gone is not None:
            self._on_gone(self)


def watch(environ: dict[str, Any], on_gone: Callable[[Watcher], None]) -> Watcher:
    watcher = Watcher()
    sock = _gevent_socket(environ)
    if sock is None:
        return watcher
    import gevent

    watcher._sock = sock
    watcher._on_gone = on_gone
    watcher.can_probe = (
        environ.get("SERVER_PROTOCOL") == "HTTP/1.1"
        and not isinstance(sock, ssl.SSLSocket)
        and sock.family in (socket.AF_INET, socket.AF_INET6)
        and _tcp_info(sock) is not None
    )

    def readable() -> None:
        if watcher._io is not None:
            watcher._io.stop()
            gevent.spawn(watcher._check)

    watcher._request_greenlet = gevent.getcurrent()
    watcher._io = gevent.get_hub().loop.io(sock.fileno(), 1)  # 1: readable
    watcher._io.start(readable)
    return watcher


# --------------------------------------------------------------------------- slow clients


def deadline(environ: dict[str, Any], seconds: float, exc: Exception) -> Any:
    """A context that raises ``exc`` where the request waits on its client for too long.

    ``exc`` must be a plain ``Exception``: gunicorn then marks the half-read body as failed and
    closes the connection instead of trying to read past it.
    """
    if _gevent_socket(environ) is None:
        return contextlib.nullcontext()
    import gevent

    return gevent.Timeout(seconds, exc)


class GuardedBody:
    """A response body whose every write to the client must finish within ``seconds``.

    The server asks for the next piece only once the previous one is written, so a timer runs
    from handing a piece over until the next request for one. A client that stops reading
    trips it: ``on_stall`` runs, then the socket is shut down, so the blocked write fails as if
    the client had left, quietly. (Not guarded: the few bytes of a chunked terminator after the
    last piece, which block only if the client stops reading exactly there.)
    """

    def __init__(
        self,
        body: Iterable[bytes],
        sock: Any,
        seconds: float,
        on_stall: Callable[[], None],
        on_first: Callable[[], None] | None = None,
    ) -> None:
        import gevent

        self._body = body
        self._it: Iterator[bytes] | None = None
        self._sock = sock
        self._on_stall = on_stall
        self._on_first = on_first
        self._timer: Any = gevent.get_hub().loop.timer(seconds)

    def __iter__(self) -> GuardedBody:
        return self

    def __next__(self) -> bytes:
        timer = self._timer
        if timer is None:
            raise StopIteration
        timer.stop()  # the previous piece is written
        if self._it is None:
            self._it = iter(self._body)
        item = next(self._it)  # StopIteration ends it; the timer stays stopped
        if self._on_first is not None:
            self._on_first()
            self._on_first = None
        timer.start(self._fire)
        return item

    def _fire(self) -> None:
        import gevent

        gevent.spawn(self._stall)

    def _stall(self) -> None:
        if self._timer is None:
            return
        self._on_stall()
        # On the real socket: gevent's own shutdown() would fail the blocked write with
        # "file descriptor closed in another greenlet" (a traceback in gunicorn's log); this
        # way the write wakes up to a plain EPIPE, which gunicorn takes as a client that left.
        with contextlib.suppress(OSError):
            getattr(self._sock, "_sock", self._sock).shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


def guard_sends(
    environ: dict[str, Any],
    body: Iterable[bytes],
    seconds: float,
    on_stall: Callable[[], None],
    on_first: Callable[[], None] | None = None,
) -> Iterable[bytes]:
    sock = _gevent_socket(environ)
    if sock is None:
        return body
    return GuardedBody(body, sock, seconds, on_stall, on_first)
