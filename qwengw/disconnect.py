"""Notice a client that leaves while we wait on Ollama, so the GPU is freed at once.

WSGI has no disconnect signal: a gone client is normally noticed only at the next write, and
nothing is written while Ollama loads a model, queues the request or thinks silently. Under
gunicorn's gevent worker a small greenlet waits for the client socket to become readable and
peeks: end-of-file means the client closed, and ``on_gone`` runs (it closes the upstream
connection, which makes Ollama stop). Elsewhere (other servers, tests) this is a no-op.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any


class Watcher:
    def __init__(self) -> None:
        self._greenlet: Any = None
        self._request_greenlet: Any = None
        self.gone = False

    def interrupt(self, exc: BaseException) -> None:
        """Raise ``exc`` in the request's greenlet, wherever it is blocked (e.g. on Ollama)."""
        import gevent

        target = self._request_greenlet

        def throw() -> None:
            # Checked at delivery time: once stopped, the greenlet may serve another request.
            if self._request_greenlet is target and target is not None and not target.dead:
                target.throw(exc)

        gevent.get_hub().loop.run_callback(throw)

    def stop(self) -> None:
        self._request_greenlet = None
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None


def watch(environ: dict[str, Any], on_gone: Callable[[Watcher], None]) -> Watcher:
    watcher = Watcher()
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return watcher
    try:
        import gevent
        from gevent import monkey
        from gevent.socket import wait_read
    except ImportError:  # pragma: no cover - gevent is a dependency
        return watcher
    if not monkey.is_module_patched("socket"):
        return watcher

    def run() -> None:
        fd = sock.fileno()
        while True:
            wait_read(fd)  # parks this greenlet only
            try:
                data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue  # spurious wake-up
            except OSError:
                data = b""
            break
        if data == b"":
            watcher.gone = True
            on_gone(watcher)
        # Data means a pipelined next request: the client is still there; stop watching.

    watcher._request_greenlet = gevent.getcurrent()
    watcher._greenlet = gevent.spawn(run)
    return watcher
