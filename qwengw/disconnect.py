"""Notice a client that leaves while we wait on Ollama, so the GPU is freed at once.

WSGI has no disconnect signal: a gone client is normally noticed only at the next write, and
nothing is written while Ollama loads a model, queues the request or thinks silently. Under
gunicorn's gevent worker an event-loop watcher waits for the client socket to become readable;
then a peek tells end-of-file (the client closed: ``on_gone`` runs and closes the upstream
connection, which makes Ollama stop) from a pipelined next request (nothing to do). A watcher
costs one loop registration per request, not a greenlet. Elsewhere (other servers) it is a no-op.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any


class Watcher:
    def __init__(self) -> None:
        self._io: Any = None
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
        if self._io is not None:
            self._io.stop()
            self._io.close()
            self._io = None


def watch(environ: dict[str, Any], on_gone: Callable[[Watcher], None]) -> Watcher:
    watcher = Watcher()
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return watcher
    try:
        import gevent
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a dependency
        return watcher
    if not monkey.is_module_patched("socket"):
        return watcher

    def check() -> None:
        # In a greenlet, not in the loop callback: a gevent socket may wait cooperatively.
        if watcher._io is None:
            return  # stopped meanwhile
        try:
            data = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            data = b""
        if data == b"" and watcher._io is not None:
            watcher.gone = True
            on_gone(watcher)
        # Data means a pipelined next request: the client is still there; stop watching.

    def readable() -> None:
        if watcher._io is not None:
            watcher._io.stop()
            gevent.spawn(check)

    watcher._request_greenlet = gevent.getcurrent()
    watcher._io = gevent.get_hub().loop.io(sock.fileno(), 1)  # 1: readable
    watcher._io.start(readable)
    return watcher
