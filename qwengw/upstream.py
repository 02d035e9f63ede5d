"""The HTTP hop to Ollama: pooled connections, separate time budgets, a breaker per host.

urllib3 is used directly (it is what ``requests`` runs on): on this path ``requests`` costs
~60% of the gateway's CPU for nothing we need (see docs/benchmarks.md).

Time budgets: ``connect_timeout`` covers the TCP handshake; Ollama sends no headers until the
first token exists, so the read timeout before the headers is ``first_token_timeout``; after the
headers the socket timeout becomes ``idle_timeout``, the longest allowed silence between lines.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)

from .config import UpstreamSettings
from .errors import (
    ClientGone,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
)

log = logging.getLogger("qwengw.upstream")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"

# /v1/models and /ready need Ollama's model list but no key and no rate: an answer (or a
# failure) is reused this long, so a flood of them makes at most one call per interval per
# worker instead of one per request.
LIST_CACHE_SECONDS = 2.0


class CircuitBreaker:
    """Closed → open after N consecutive failures → one trial request (half-open) → closed.

    Per process on purpose: each worker learns within a few requests, and a shared breaker would
    put another dependency on the hot path. Under gevent nothing here yields, so no lock.
    """

    def __init__(
        self,
        threshold: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, str], None] | None = None,
    ) -> None:
        self.threshold = threshold
        self.open_seconds = open_seconds
        self.clock = clock
        self.on_change = on_change
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False

    def _set(self, state: str) -> None:
        if state != self.state:
            old, self.state = self.state, state
            if self.on_change:
                self.on_change(old, state)

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN and self.clock() - self.opened_at >= self.open_seconds:
            self._set(HALF_OPEN)
            self.probing = False
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True  # exactly one trial request
            return True
        return False

    def retry_after(self) -> int:
        if self.state == OPEN:
            return max(1, int(self.opened_at + self.open_seconds - self.clock() + 0.999))
        return 1

    def success(self) -> None:
        self.failures = 0
        self.probing = False
        self._set(CLOSED)

    def failure(self) -> None:
        self.failures += 1
        self.probing = False
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            self.opened_at = self.clock()
            self._set(OPEN)

    def release(self) -> None:
        """The trial request ended without telling us anything (e.g. the client left)."""
        self.probing = False


def host_label(index: int) -> str:
    """What logs, metrics and /ready show for the index-th Ollama host, instead of its URL."""
    return f"ollama-{index + 1}"


@dataclass
class Host:
    url: str
    label: str  # "ollama-1", ...: what logs and metrics show instead of the URL
    breaker: CircuitBreaker
    pool: urllib3.HTTPConnectionPool  # one per host: no URL parsing per request
    inflight: int = 0


@dataclass
class Events:
    """Hooks for metrics and logs; the upstream module does not import either."""

    upstream_error: Callable[[str, str], None] = lambda host, kind: None
    circuit_change: Callable[[str, str, str], None] = lambda host, old, new: None


def _logged(text: Any) -> str:
    """Ollama's own words, for the log only: one line, bounded."""
    return repr(str(text)[:500])


def _support_error(message: str, public_model: str) -> InvalidRequest | None:
    """Ollama's "model X does not support Y" (400), as a fixed message naming the public model."""
    m = re.search(r"does not support (\w+)", message)
    if m is None:
        return None
    what = m.group(1).lower()
    if what == "tools":
        return InvalidRequest(
            f"the model '{public_model}' does not support tools",
            param="tools",
            code="upstream_rejected",
        )
    if what == "thinking":
        return InvalidRequest(
            f"the model '{public_model}' does not support reasoning (reasoning_effort)",
            param="reasoning_effort",
            code="upstream_rejected",
        )
    return InvalidRequest(
        f"the model '{public_model}' does not support this kind of request",
        param="model",
        code="upstream_rejected",
    )


def _context_error(message: str) -> bool:
    low = message.lower()
    return "context length" in low or "input length" in low or "too long" in low


class UpstreamStream:
    """An open streaming answer: iterate parsed NDJSON lines; ``close()`` frees Ollama."""

    def __init__(
        self,
        client: OllamaClient,
        host: Host,
        resp: urllib3.BaseHTTPResponse,
        request_id: str | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.resp = resp
        self.request_id = request_id
        self.closed = False
        self.completed = False
        self.aborted = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buf = b""
        try:
            while True:
                try:
                    data = self.resp.read1(65536)
                except (HTTPError, OSError) as exc:  # ReadTimeoutError is an HTTPError
                    raise self._read_failed(exc) from None
                if not data:
                    if self.aborted:
                        raise ClientGone("the client closed the connection")
                    break
                buf += data
                while b"\n" in buf:
                    raw, buf = buf.split(b"\n", 1)
                    if raw.strip():
                        line = self._parse(raw)
                        if line.get("done"):
                            self._complete()
                            yield line
                            return
                        yield line
            if buf.strip():
                line = self._parse(buf)
                if line.get("done"):
                    self._complete()
                    yield line
                    return
                yield line
            raise self._failed("stream_truncated", "the model server ended its answer early")
        finally:
            self.close()

    def _failed(
        self, kind: str, message: str, error: type[GatewayError] = UpstreamError
    ) -> GatewayError:
        """A failure of Ollama's (not the client's): counted, and fed to the breaker."""
        self.client.events.upstream_error(self.host.label, kind)
        self.host.breaker.failure()
        return error(message)

    def _read_failed(self, exc: BaseException) -> GatewayError:
        if self.aborted:
            return ClientGone("the client closed the connection")
        if isinstance(exc, ReadTimeoutError):
            return self._failed(
                "idle_timeout",
                "the model stopped sending output for too long; try again",
                UpstreamTimeout,
            )
        return self._failed("stream_broken", "the connection to the model server broke mid-answer")

    def _complete(self) -> None:
        self.completed = True
        self.host.breaker.success()

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            line = json.loads(raw)
        except ValueError:
            line = None
        if not isinstance(line, dict):
            raise self._failed("bad_line", "the model server sent a malformed answer")
        if "error" in line:
            # Ollama's text may name runner paths, devices or internal models: log only.
            log.warning(
                "%s sent an error line (request %s): %s",
                self.host.label,
                self.request_id,
                _logged(line["error"]),
            )
            raise self._failed(
                "stream_error",
                "the model failed while generating its answer; retry, or report request id "
                f"{self.request_id} to the operator",
            )
        return line

    def abort(self) -> None:
        """The client left: close the socket under a blocked read (Ollama then stops)."""
        self.aborted = True
        conn = getattr(self.resp, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(2)
            except OSError:
                pass

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.host.inflight -= 1
        if self.completed:
            self.resp.drain_conn()  # read the chunked trailer so the connection can be reused
        else:
            # A half-read answer must not go back to the pool, and closing the socket is what
            # tells Ollama to stop generating.
            self.host.breaker.release()
            self.resp.close()
        self.resp.release_conn()


@dataclass
class OllamaClient:
    """Talks to one or more Ollama hosts."""

    urls: tuple[str, ...]
    settings: UpstreamSettings
    model_names: Mapping[str, str] = field(default_factory=dict)
    events: Events = field(default_factory=Events)
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self.hosts = [self._host(i, url) for i, url in enumerate(self.urls)]
        self._cache: dict[str, tuple[float, Any, GatewayError | None]] = {}
        self._cache_locks: dict[str, threading.Lock] = {}

    def cached(self, key: str, fetch: Callable[[], Any]) -> Any:
        """``fetch()``'s answer or error, reused for ``LIST_CACHE_SECONDS``.

        Callers arriving while a fetch is under way wait for it rather than start their own.
        """
        entry = self._fresh(key)
        if entry is None:
            with self._cache_locks.setdefault(key, threading.Lock()):
                entry = self._fresh(key)  # filled while we waited?
                if entry is None:
                    try:
                        value, error = fetch(), None
                    except GatewayError as err:
                        value, error = None, err
                    entry = (self.clock() + LIST_CACHE_SECONDS, value, error)
                    self._cache[key] = entry
        _, value, error = entry
        if error is not None:
            raise error.with_traceback(None) from None  # shared: keep its traceback short
        return value

    def _fresh(self, key: str) -> tuple[float, Any, GatewayError | None] | None:
        entry = self._cache.get(key)
        return entry if entry is not None and self.clock() < entry[0] else None

    def _host(self, i: int, url: str) -> Host:
        label = host_label(i)
        breaker = CircuitBreaker(
            self.settings.failure_threshold,
            self.settings.open_seconds,
            self.clock,
            on_change=lambda old, new: self._circuit(label, old, new),
        )
        pool = urllib3.connection_from_url(
            url, maxsize=self.settings.pool_size, block=False, retries=False
        )
        return Host(url, label, breaker, pool)

    def _circuit(self, label: str, old: str, new: str) -> None:
        log.warning("circuit for %s: %s → %s", label, old, new)
        self.events.circuit_change(label, old, new)

    def _pick(self, exclude: set[str]) -> Host:
        candidates = sorted(
            (h for h in self.hosts if h.url not in exclude), key=lambda h: h.inflight
        )
        for host in candidates:
            if host.breaker.allow():
                return host
        retry = min((h.breaker.retry_after() for h in self.hosts), default=1)
        raise UpstreamUnavailable(
            "the model server is temporarily unavailable; retry shortly",
            headers={"Retry-After": str(retry)},
        )

    def _request(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        read_timeout: float,
        request_id: str | None,
        public_model: str | None,
    ) -> tuple[Host, urllib3.BaseHTTPResponse]:
        """Send, retrying once on another host when the connection could not be made."""
        tried: set[str] = set()
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        payload = json.dumps(body).encode() if body is not None else None
        while True:
            host = self._pick(tried)
            tried.add(host.url)
            timeout = urllib3.Timeout(connect=self.settings.connect_timeout, read=read_timeout)
            host.inflight += 1
            try:
                resp = host.pool.urlopen(
                    method,
                    path,
                    body=payload,
                    headers=headers,
                    timeout=timeout,
                    preload_content=False,
                    redirect=False,
                    retries=False,
                )
            except (NewConnectionError, ConnectTimeoutError, MaxRetryError, ProtocolError) as exc:
                host.inflight -= 1
                host.breaker.failure()
                is_read_timeout = isinstance(getattr(exc, "reason", exc), ReadTimeoutError)
                if is_read_timeout:
                    self.events.upstream_error(host.label, "first_token_timeout")
                    raise UpstreamTimeout(
                        "the model took too long to start answering; try again shortly"
                    ) from None
                self.events.upstream_error(host.label, "connect")
                log.warning("cannot connect to %s: %s", host.label, type(exc).__name__)
                if len(tried) < min(2, len(self.hosts)):
                    continue  # retried once, on another host: nothing was sent to the client
                raise UpstreamUnavailable(
                    "the model server is not reachable; try again shortly",
                    headers={"Retry-After": "5"},
                ) from None
            except ReadTimeoutError:
                host.inflight -= 1
                host.breaker.failure()
                self.events.upstream_error(host.label, "first_token_timeout")
                raise UpstreamTimeout(
                    "the model took too long to start answering; try again shortly"
                ) from None
            except BaseException:
                host.inflight -= 1
                raise
            if resp.status >= 400:
                host.inflight -= 1
                raise self._status_error(host, resp, public_model, request_id)
            # Ollama answered: it is healthy again (a long first stream must not keep the
            # circuit half-open for everyone else until its last token).
            host.breaker.success()
            return host, resp

    def _status_error(
        self,
        host: Host,
        resp: urllib3.BaseHTTPResponse,
        public_model: str | None,
        request_id: str | None,
    ) -> GatewayError:
        """Ollama's error answer as a fixed message per class; its own text goes to the log."""
        raw = resp.read(65536)
        resp.release_conn()
        try:
            message = str(json.loads(raw).get("error", ""))
        except (ValueError, AttributeError):
            message = raw.decode("utf-8", "replace").strip()
        status = resp.status
        log.warning(
            "%s answered %d (request %s): %s", host.label, status, request_id, _logged(message)
        )
        public = public_model or "unknown"
        if status == 404:
            host.breaker.success()
            return ModelNotFound(public)
        if status == 503:
            # Ollama's queue is full: load shedding, not ill health; the breaker is not fed.
            host.breaker.release()
            self.events.upstream_error(host.label, "busy")
            return UpstreamUnavailable(
                "the model server is busy; retry shortly",
                code="upstream_busy",
                headers={"Retry-After": "2"},
            )
        if status >= 500:
            host.breaker.failure()
            self.events.upstream_error(host.label, "http_5xx")
            return UpstreamError(
                "the model server failed to handle this request; retry, or report request id "
                f"{request_id} to the operator"
            )
        host.breaker.success()
        self.events.upstream_error(host.label, "http_4xx")
        if status == 400:
            support = _support_error(message, public)
            if support is not None:
                return support
            if _context_error(message):
                return InvalidRequest(
                    f"the input is longer than the context window of the model '{public}'",
                    code="context_length_exceeded",
                )
            return InvalidRequest(
                f"the model server rejected the request for the model '{public}'",
                code="upstream_rejected",
            )
        # 401/403/405/413/...: how the gateway talks to Ollama is wrong, not the client's request.
        return UpstreamError(
            f"the model server refused the gateway's request (HTTP {status}); report request "
            f"id {request_id} to the operator"
        )

    def stream_chat(
        self, payload: dict[str, Any], *, request_id: str | None, public_model: str
    ) -> UpstreamStream:
        host, resp = self._request(
            "POST",
            "/api/chat",
            payload,
            read_timeout=self.settings.first_token_timeout,
            request_id=request_id,
            public_model=public_model,
        )
        conn = getattr(resp, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            sock.settimeout(self.settings.idle_timeout)
        return UpstreamStream(self, host, resp, request_id)

    def call_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        request_id: str | None = None,
        public_model: str | None = None,
        read_timeout: float | None = None,
    ) -> dict[str, Any]:
        host, resp = self._request(
            method,
            path,
            body,
            read_timeout=read_timeout or self.settings.first_token_timeout,
            request_id=request_id,
            public_model=public_model,
        )
        try:
            data = json.loads(resp.read())
        except (ValueError, HTTPError, OSError):
            resp.close()
            host.breaker.failure()
            raise UpstreamError("the model server sent a malformed answer") from None
        except BaseException:
            resp.close()  # interrupted (client gone): the connection must not be reused
            raise
        finally:
            host.inflight -= 1
            resp.release_conn()
        host.breaker.success()
        if not isinstance(data, dict):
            raise UpstreamError("the model server sent a malformed answer")
        return data

    def probe(self) -> list[tuple[Host, dict[str, Any] | None]]:
        """``/api/tags`` from every host (for /ready), with the connect timeout as the budget."""
        out: list[tuple[Host, dict[str, Any] | None]] = []
        t = self.settings.connect_timeout
        for host in self.hosts:
            try:
                resp = host.pool.request(
                    "GET", "/api/tags", timeout=urllib3.Timeout(connect=t, read=t), retries=False
                )
                data = json.loads(resp.data) if resp.status == 200 else None
            except (HTTPError, OSError, ValueError):
                data = None
            out.append((host, data if isinstance(data, dict) else None))
        return out
