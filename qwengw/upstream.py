"""The HTTP hop to Ollama: pooled connections, separate time budgets, a breaker per host.

The connections themselves are ``http1.HostPool``'s (llhttp parses the answers): ``requests``
cost ~60 % of the gateway's CPU on this path and urllib3 alone ~25 %, for nothing we need
(docs/benchmarks.md).

Time budgets: ``connect_timeout`` covers the TCP handshake; Ollama sends no headers until the
first token exists, so the read timeout before the headers is ``first_token_timeout``; after the
headers the socket timeout becomes ``idle_timeout``, the longest allowed silence between lines.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

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
from .http1 import Answer, Broken, ConnectFailed, HostPool, ReadTimeout, TransportError

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


# Ollama's 4xx texts → (code, param, what the client is told). `thinking_not_supported` lets
# some dialects drop `think` and retry (see api.py).
UPSTREAM_REFUSALS = (
    (
        "support thinking",
        "thinking_not_supported",
        "reasoning_effort",
        "this model does not support thinking; leave reasoning effort / thinking unset",
    ),
    ("support tools", "tools_not_supported", "tools", "this model does not support tools"),
    (
        "support insert",
        "suffix_not_supported",
        "suffix",
        "this model does not support fill-in-the-middle completions (suffix)",
    ),
    ("support generate", "completions_not_supported", "model", "this model cannot complete text"),
    ("support chat", "chat_not_supported", "model", "this model cannot chat"),
    ("support embed", "embeddings_not_supported", "model", "this model cannot embed text"),
)


def host_label(index: int) -> str:
    """What logs, metrics and /ready show for the index-th Ollama host, instead of its URL."""
    return f"ollama-{index + 1}"


def url_for_log(url: str) -> str:
    """The URL without any user:password (config refuses them; a log must never show one)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def connect_failure(exc: BaseException, connect_timeout: float) -> str:
    """Why a connection to Ollama failed, in the operating system's words."""
    reason = getattr(exc, "reason", None) or exc  # ConnectFailed carries the OSError
    if isinstance(reason, TimeoutError):
        return f"no answer within upstream.connect_timeout ({connect_timeout:g} s)"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror  # "Connection refused", "Name or service not known", ...
    return f"{type(reason).__name__}: {reason}"


@dataclass
class Host:
    url: str
    label: str  # "ollama-1", ...: what logs and metrics show instead of the URL
    breaker: CircuitBreaker
    pool: HostPool
    inflight: int = 0


@dataclass
class Events:
    """Hooks for metrics and logs; the upstream module does not import either."""

    upstream_error: Callable[[str, str], None] = lambda host, kind: None
    circuit_change: Callable[[str, str, str], None] = lambda host, old, new: None
    # One exchange ended: (host, outcome from OUTCOMES, seconds from sending to the end).
    upstream_done: Callable[[str, str, float], None] = lambda host, outcome, seconds: None
    upstream_probed: Callable[[str, bool], None] = lambda host, reachable: None


# The outcome of one exchange, from the failure kinds that upstream_error counts.
OUTCOMES = {
    "connect": "unreachable",
    "first_token_timeout": "timeout",
    "idle_timeout": "timeout",
    "busy": "busy",
    "http_4xx": "rejected",
    "not_found": "rejected",
    "http_5xx": "error",
    "stream_broken": "error",
    "stream_error": "error",
    "stream_truncated": "error",
    "bad_line": "error",
}


def _logged(text: Any) -> str:
    """Ollama's own words, for the log only: one line, bounded."""
    return repr(str(text)[:500])


def _context_error(message: str) -> bool:
    low = message.lower()
    return "context length" in low or "input length" in low or "too long" in low


class UpstreamStream:
    """An open streaming answer: iterate parsed NDJSON lines; ``close()`` frees Ollama."""

    def __init__(
        self,
        client: OllamaClient,
        host: Host,
        resp: Answer,
        started: float,
        request_id: str | None = None,
    ) -> None:
        self.client = client
        self.host = host
        self.resp = resp
        self.started = started
        self.request_id = request_id
        self.closed = False
        self.completed = False
        self.aborted = False
        self.failure: str | None = None  # the kind of the failure that ended the stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buf = b""
        try:
            while True:
                try:
                    data = self.resp.read_some()
                except TransportError as exc:
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
        self.failure = kind
        self.client.events.upstream_error(self.host.label, kind)
        self.host.breaker.failure()
        return error(message)

    def _read_failed(self, exc: BaseException) -> GatewayError:
        if self.aborted:
            return ClientGone("the client closed the connection")
        if isinstance(exc, ReadTimeout):
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
        self.resp.abort()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.host.inflight -= 1
        outcome = "ok" if self.completed else OUTCOMES.get(self.failure or "", "cancelled")
        self.client.done(self.host, outcome, self.started)
        if self.completed:
            self.resp.finish()  # reads the chunked trailer, so the connection can be reused
        else:
            # A half-read answer must not go back to the pool, and closing the socket is what
            # tells Ollama to stop generating.
            self.host.breaker.release()
            self.resp.close()


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
        pool = HostPool(url, maxsize=self.settings.pool_size)
        return Host(url, label, breaker, pool)

    def _circuit(self, label: str, old: str, new: str) -> None:
        log.warning("circuit for %s: %s → %s", label, old, new)
        self.events.circuit_change(label, old, new)

    def done(self, host: Host, outcome: str, started: float) -> None:
        self.events.upstream_done(host.label, outcome, time.monotonic() - started)

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
    ) -> tuple[Host, Answer, float]:
        """Send, retrying once on another host when the connection could not be made.

        Returns the host, its response and when the exchange started (for ``done``)."""
        tried: set[str] = set()
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        payload = json.dumps(body).encode() if body is not None else None
        host: Host | None = None
        try:
            while True:
                host = self._pick(tried)
                tried.add(host.url)
                last_try = len(tried) >= min(2, len(self.hosts))
                answer = self._exchange(
                    host,
                    method,
                    path,
                    payload,
                    headers,
                    read_timeout,
                    last_try,
                    public_model,
                    request_id,
                )
                if answer is not None:
                    return host, *answer
                # not reachable: tried once more, on another host (nothing was sent yet)
        except GatewayError as err:
            if host is not None and err.upstream is None:
                err.upstream = host.label  # the audit line names the host that failed
            raise

    def _exchange(
        self,
        host: Host,
        method: str,
        path: str,
        payload: bytes | None,
        headers: dict[str, str],
        read_timeout: float,
        last_try: bool,
        public_model: str | None,
        request_id: str | None,
    ) -> tuple[Answer, float] | None:
        """One attempt on ``host``: its response and when it started, or None when the
        connection could not be made and another host may be tried (not ``last_try``)."""
        host.inflight += 1
        started = time.monotonic()
        try:
            resp = host.pool.request(
                method,
                path,
                payload,
                headers,
                connect_timeout=self.settings.connect_timeout,
                read_timeout=read_timeout,
            )
        except (ConnectFailed, Broken) as exc:
            host.inflight -= 1
            host.breaker.failure()
            self.events.upstream_error(host.label, "connect")
            self.done(host, "unreachable", started)
            log.warning(
                "Ollama is not reachable at %s (%s): %s",
                url_for_log(host.url),
                host.label,
                connect_failure(exc, self.settings.connect_timeout),
            )
            if not last_try:
                return None
            raise UpstreamUnavailable(
                "the model server is not reachable; try again shortly",
                headers={"Retry-After": "5"},
            ) from None
        except ReadTimeout:
            host.inflight -= 1
            host.breaker.failure()
            self.events.upstream_error(host.label, "first_token_timeout")
            self.done(host, "timeout", started)
            raise UpstreamTimeout(
                "the model took too long to start answering; try again shortly"
            ) from None
        except BaseException:
            host.inflight -= 1
            self.done(host, "cancelled", started)  # the client left while we waited
            raise
        if resp.status >= 400:
            host.inflight -= 1
            err, kind = self._status_error(host, resp, public_model, request_id)
            self.done(host, OUTCOMES[kind], started)
            raise err
        # Ollama answered: it is healthy again (a long first stream must not keep the
        # circuit half-open for everyone else until its last token).
        host.breaker.success()
        return resp, started

    def _status_error(
        self,
        host: Host,
        resp: Answer,
        public_model: str | None,
        request_id: str | None,
    ) -> tuple[GatewayError, str]:
        """Ollama's error answer as a fixed message per class (its own text goes to the log),
        and the failure kind (a key of OUTCOMES)."""
        try:
            raw = resp.read(65536)
        except TransportError:
            raw = b""
        resp.finish()
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
            return ModelNotFound(public), "not_found"
        if status == 503:
            # Ollama's queue is full: load shedding, not ill health; the breaker is not fed.
            host.breaker.release()
            self.events.upstream_error(host.label, "busy")
            return UpstreamUnavailable(
                "the model server is busy; retry shortly",
                code="upstream_busy",
                headers={"Retry-After": "2"},
            ), "busy"
        if status >= 500:
            host.breaker.failure()
            self.events.upstream_error(host.label, "http_5xx")
            return UpstreamError(
                "the model server failed to handle this request; retry, or report request id "
                f"{request_id} to the operator"
            ), "http_5xx"
        host.breaker.success()
        self.events.upstream_error(host.label, "http_4xx")
        if status == 400:
            for marker, code, param, text in UPSTREAM_REFUSALS:
                if marker in message:
                    return InvalidRequest(text, param=param, code=code), "http_4xx"
            if _context_error(message):
                return InvalidRequest(
                    f"the input is longer than the context window of the model '{public}'",
                    code="context_length_exceeded",
                ), "http_4xx"
            return InvalidRequest(
                f"the model server rejected the request for the model '{public}'",
                code="upstream_rejected",
            ), "http_4xx"
        # 401/403/405/413/...: how the gateway talks to Ollama is wrong, not the client's request.
        return UpstreamError(
            f"the model server refused the gateway's request (HTTP {status}); report request "
            f"id {request_id} to the operator"
        ), "http_4xx"

    def stream_chat(
        self, payload: dict[str, Any], *, request_id: str | None, public_model: str
    ) -> UpstreamStream:
        return self.stream("/api/chat", payload, request_id=request_id, public_model=public_model)

    def stream(
        self, path: str, payload: dict[str, Any], *, request_id: str | None, public_model: str
    ) -> UpstreamStream:
        """POST ``payload`` to a streaming native endpoint (``/api/chat``, ``/api/generate``)."""
        host, resp, started = self._request(
            "POST",
            path,
            payload,
            read_timeout=self.settings.first_token_timeout,
            request_id=request_id,
            public_model=public_model,
        )
        resp.set_timeout(self.settings.idle_timeout)
        return UpstreamStream(self, host, resp, started, request_id)

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
        host, resp, started = self._request(
            method,
            path,
            body,
            read_timeout=read_timeout or self.settings.first_token_timeout,
            request_id=request_id,
            public_model=public_model,
        )
        try:
            data = json.loads(resp.read())
        except (ValueError, TransportError):
            resp.close()
            host.breaker.failure()
            self.done(host, "error", started)
            raise UpstreamError("the model server sent a malformed answer") from None
        except BaseException:
            resp.close()  # interrupted (client gone): the connection must not be reused
            self.done(host, "cancelled", started)
            raise
        finally:
            host.inflight -= 1
        resp.finish()
        host.breaker.success()
        self.done(host, "ok", started)
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
                    "GET", "/api/tags", None, {}, connect_timeout=t, read_timeout=t
                )
                try:
                    data = json.loads(resp.read()) if resp.status == 200 else None
                finally:
                    resp.finish()
            except (TransportError, ValueError):
                data = None
            out.append((host, data if isinstance(data, dict) else None))
            self.events.upstream_probed(host.label, isinstance(data, dict))
        return out
