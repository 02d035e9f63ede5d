"""gunicorn's gevent worker, with two guards for a gateway that may face clients directly.

* Open connections per client address are capped in each worker, so one address (slowloris,
  a flood of idle sockets) cannot fill the worker's ``worker_connections`` and stall everyone
  else, ``/health`` included. Trusted proxies (Nginx) are exempt: they carry every client. An
  address outside an enabled allowlist can only ever get 403s and ``/health``, so it gets a few.
* ``/health`` does not count toward ``max_requests``: a flood of cheap probes must not be a
  way to recycle workers (with ``memory://`` limits that would reset every counter).
* A request gunicorn's parser refuses (bad request line or header, line or headers too long)
  gets the OpenAI error shape, not gunicorn's HTML page, even on /v1/messages: the parser
  fails before the path is known. It never reached the app, so it has no audit line; gunicorn
  logs it ("Invalid request from ip=...").

This module is imported by the gunicorn master (to find the worker class) before gevent
patches anything: keep it to gunicorn's worker and pure-Python qwengw modules.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn.http.errors import (
    ExpectationFailed,
    ForbiddenProxyRequest,
    LimitRequestHeaders,
    LimitRequestLine,
    ParseException,
    UnsupportedTransferCoding,
)
from gunicorn.workers.ggevent import GeventWorker

from .allowlist import in_networks, parse_ip
from .config import Settings, load_settings

OUTSIDER_CONNECTIONS = 8  # per worker, for an address outside an enabled allowlist
_CAP_CACHE_SIZE = 4096

# gunicorn's parser errors that are not a plain 400 (as gunicorn itself maps them)
PARSE_STATUS = {
    LimitRequestLine: (414, "URI Too Long"),
    LimitRequestHeaders: (431, "Request Header Fields Too Large"),
    UnsupportedTransferCoding: (501, "Not Implemented"),
    ExpectationFailed: (417, "Expectation Failed"),
    ForbiddenProxyRequest: (403, "Forbidden"),
}


def raw_error(
    status: int, reason: str, message: str, code: str, etype: str, extra: str = ""
) -> bytes:
    """A complete HTTP/1.1 error answer in the OpenAI shape, for use below the app."""
    body = json.dumps(
        {"error": {"message": message, "type": etype, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n{extra}"
        f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


REFUSAL = raw_error(
    429,
    "Too Many Requests",
    "too many open connections from this address; close some and retry",
    "too_many_connections",
    "requests",  # OpenAI's type for its 429s, as the app's own
    "Retry-After: 1\r\n",
)


def send_once(client: Any, data: bytes) -> None:
    """One non-blocking send on the real socket: never wait on a peer that does not read
    (gevent's socket would wait for it to become writable)."""
    try:
        getattr(client, "_sock", client).send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
    except OSError:
        pass


class ConnectionCap:
    """How many connections one peer address may hold open in this worker (0: no cap)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.open: dict[str, int] = {}
        self._caps: dict[str, int] = {}

    def cap_for(self, peer: str) -> int:
        cap = self._caps.get(peer)
        if cap is None:
            s = self.settings
            ip = parse_ip(peer)
            if ip is None or in_networks(ip, s.whitelist.trusted_proxies):
                cap = 0
            elif s.whitelist.enabled and not in_networks(ip, s.whitelist.ips):
                cap = OUTSIDER_CONNECTIONS
            else:
                cap = s.client.max_connections
            if len(self._caps) >= _CAP_CACHE_SIZE:
                self._caps.clear()
            self._caps[peer] = cap
        return cap

    def enter(self, peer: str) -> bool:
        n = self.open.get(peer, 0)
        cap = self.cap_for(peer)
        if cap and n >= cap:
            return False
        self.open[peer] = n + 1
        return True

    def leave(self, peer: str) -> None:
        n = self.open.get(peer, 0) - 1
        if n > 0:
            self.open[peer] = n
        else:
            self.open.pop(peer, None)


class Worker(GeventWorker):
    """``worker_class = "qwengw.worker.Worker"``: gevent, plus the guards above."""

    cap: ConnectionCap

    def init_process(self) -> None:
        # In the worker, after fork, read like the app reads it ($QWENGW_CONFIG): a config that
        # went bad since start fails this worker's boot, as it would fail the app's.
        self.cap = ConnectionCap(load_settings())
        super().init_process()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        peer = addr[0] if isinstance(addr, tuple) else None
        if peer is None:  # a Unix socket: the proxy in front is the only peer
            super().handle(listener, client, addr)
            return
        if not self.cap.enter(peer):
            send_once(client, REFUSAL)
            client.close()
            return
        try:
            super().handle(listener, client, addr)
        finally:
            self.cap.leave(peer)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        if not isinstance(exc, ParseException):
            super().handle_error(req, client, addr, exc)  # not the client's fault: gunicorn's 500
            return
        status, reason = PARSE_STATUS.get(type(exc), (400, "Bad Request"))
        peer = addr[0] if isinstance(addr, tuple) else addr
        self.log.warning("Invalid request from ip=%s: %s", peer, exc)
        code = "invalid_request" if status < 500 else "not_implemented"
        answer = raw_error(status, reason, f"{reason}: {exc}"[:300], code, "invalid_request_error")
        send_once(client, answer)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        if req.path == "/health":
            self.nr -= 1  # the base class counts it back: probes never recycle a worker
        return super().handle_request(listener_name, req, sock, addr)
