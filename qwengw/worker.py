"""gunicorn's gevent worker, with two guards for a gateway that may face clients directly.

* Open connections per client address are capped in each worker, so one address (slowloris,
  a flood of idle sockets) cannot fill the worker's ``worker_connections`` and stall everyone
  else, ``/health`` included. Trusted proxies (Nginx) are exempt: they carry every client. An
  address outside an enabled allowlist can only ever get 403s and ``/health``, so it gets a few.
* ``/health`` does not count toward ``max_requests``: a flood of cheap probes must not be a
  way to recycle workers (with ``memory://`` limits that would reset every counter).

This module is imported by the gunicorn master (to find the worker class) before gevent
patches anything: keep it to gunicorn's worker and pure-Python qwengw modules.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from gunicorn.workers.ggevent import GeventWorker

from .allowlist import in_networks, parse_ip
from .config import Settings, load_settings

OUTSIDER_CONNECTIONS = 8  # per worker, for an address outside an enabled allowlist
_CAP_CACHE_SIZE = 4096

_REFUSAL = json.dumps(
    {
        "error": {
            "message": "too many open connections from this address; close some and retry",
            "type": "rate_limit_exceeded",
            "param": None,
            "code": "too_many_connections",
        }
    }
).encode()
REFUSAL = (
    b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_REFUSAL), _REFUSAL)
)


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cap = ConnectionCap(load_settings())  # $QWENGW_CONFIG, as the app reads it

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        peer = addr[0] if isinstance(addr, tuple) else None
        if peer is None:  # a Unix socket: the proxy in front is the only peer
            super().handle(listener, client, addr)
            return
        if not self.cap.enter(peer):
            try:
                # Never block on a hostile peer: one try, then the connection is closed.
                client.send(REFUSAL, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError:
                pass
            client.close()
            return
        try:
            super().handle(listener, client, addr)
        finally:
            self.cap.leave(peer)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        if req.path == "/health":
            self.nr -= 1  # the base class counts it back: probes never recycle a worker
        return super().handle_request(listener_name, req, sock, addr)
