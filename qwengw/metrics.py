"""Prometheus metrics (optional: prometheus-client). Correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (gunicorn.conf.py does it), every
worker writes its values to mmap'd files and ``/metrics`` merges them at scrape time. Without it,
one process's values are served from a registry owned by this app (no global registry).
Names follow OpenTelemetry's GenAI conventions where one fits, ``qwengw_*`` otherwise.

Every label value is bounded and safe to encode: routes, statuses and outcomes come from fixed
tables, key ids from the configuration, model names from the ``models:`` map or from what Ollama
actually served (at most ``MAX_MODELS``, the rest is ``other``). Client input never becomes a
label as such, and client IPs never do (only their class: loopback, private, public).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import platform
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from typing import Any

from flask import Response

from . import __version__
from .audit import HOUSEKEEPING_PATHS, AuditRecord, safe_text
from .config import Settings

log = logging.getLogger("qwengw.metrics")

# The endpoint label: one line per route. Anything else (ids in paths, unknown paths) collapses.
ROUTES = frozenset(
    {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/responses",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
    }
)
CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}
OTHER = "other"  # a model or key id that may not become a label
ANONYMOUS = "anonymous"  # no key: auth is off, or the key was missing or wrong
MAX_MODELS = 64  # distinct served model names a worker labels before the rest is "other"
MAX_LABEL_CHARS = 100  # longer model names are "other" (Ollama's longest real ones are ~60)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
TIME_BUCKETS = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
    163.84,
)
# Time to first token: a warm model answers in 50 ms, a cold 32B load takes up to a minute.
# Neighbours ~1.5x apart, so a p95 that moves by 30 % moves across a bucket boundary.
TTFT_BUCKETS = (
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    120.0,
)


def route_label(path: str) -> str:
    """Bounded cardinality: model ids and unknown paths collapse to fixed labels."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return OTHER


@lru_cache(maxsize=4096)  # parsing an address costs 4 µs; callers repeat
def client_class(ip: str | None) -> str:
    """The kind of address a request came from, never the address itself."""
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:
        return "unknown"
    if addr.is_loopback:
        return "loopback"
    if addr.is_private or addr.is_link_local:
        return "private"
    return "public"


class ModelLabels:
    """Model label: a configured public name, or (no ``models:`` map) a name Ollama served."""

    def __init__(self, configured: Iterable[str]) -> None:
        self.configured = frozenset(safe_text(m) for m in configured)
        self.served: set[str] = set()  # per worker; each entry is a real model

    def label(self, model: str | None, served: bool) -> str:
        if not model:
            return ""
        model = safe_text(model)
        if self.configured:
            return model if model in self.configured else OTHER
        if model in self.served:
            return model
        if served and len(model) <= MAX_LABEL_CHARS and len(self.served) < MAX_MODELS:
            self.served.add(model)
            return model
        return OTHER


def limit_gauges(settings: Settings) -> dict[str, dict[str, float]]:
    """The configured limits by gauge name → {key_id: value}, for "limit" lines on dashboards.

    With auth off the limits apply per client IP; they are shown under ``anonymous``.
    """
    from limits import parse_many

    auth, rl = settings.auth, settings.rate_limit
    if auth.enabled:
        keys = [(k.id, k.max_concurrent, k.rate_limit) for k in auth.keys]
    else:
        keys = [(ANONYMOUS, None, None)]
    concurrent: dict[str, float] = {}
    per_second: dict[str, float] = {}
    for key_id, own_cap, own_rate in keys:
        cap = own_cap or rl.max_concurrent
        if cap:
            concurrent[safe_text(key_id)] = float(cap)
        if rl.enabled:
            # Several windows ("10/second;1000/day"): the lowest sustained rate is the ceiling.
            items = parse_many(own_rate) if own_rate else []
            rates = [i.amount / i.get_expiry() for i in items] or [
                rl.max_requests / rl.window_seconds
            ]
            per_second[safe_text(key_id)] = min(rates)
    return {
        "qwengw_limit_max_concurrent": concurrent,
        "qwengw_limit_requests_per_second": per_second,
        "qwengw_limit_first_token_timeout_seconds": {
            "": float(settings.upstream.first_token_timeout)
        },
    }


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


class NullMetrics:
    """Used when metrics are disabled or prometheus-client is not installed."""

    enabled = False

    def __init__(self, reason: str = "metrics.enabled is false in the configuration") -> None:
        self.reason = reason  # what /metrics tells whoever scrapes it

    def request_started(self, path: str) -> None: ...
    def request_finished(self, rec: AuditRecord) -> None: ...
    def auth_rejected(self) -> None: ...
    def rate_limited(self, reason: str) -> None: ...
    def slot_change(self, identity: str, delta: int) -> None: ...
    def upstream_error(self, upstream: str, kind: str) -> None: ...
    def upstream_done(self, upstream: str, outcome: str, seconds: float) -> None: ...
    def upstream_probed(self, upstream: str, reachable: bool) -> None: ...
    def circuit_change(self, upstream: str, old: str, new: str) -> None: ...

    def render(self) -> Response:
        body = {
            "error": {
                "message": f"metrics are disabled: {self.reason}",
                "type": "invalid_request_error",
                "param": None,
                "code": "not_found",
            }
        }
        return Response(json.dumps(body), status=404, mimetype="application/json")


class PrometheusMetrics(NullMetrics):
    enabled = True

    def __init__(self, settings: Settings, upstreams: list[str]) -> None:
        import prometheus_client as pc

        self.pc = pc
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # Own registry: two apps in one process (tests, embedding) do not collide.
        self.registry = None if self.multiprocess else pc.CollectorRegistry()
        self.models = ModelLabels(settings.models)
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.key_ids = frozenset(k.id for k in settings.auth.keys)
        reg: dict[str, Any] = {"registry": self.registry}
        self.requests = pc.Counter(
            "qwengw_requests",
            "Requests by route, public model and status",
            ["route", "model", "status"],
            **reg,
        )
        self.callers = pc.Counter(
            "qwengw_caller_requests",
            "Requests by key id (anonymous: no valid key), client address class and status",
            ["key_id", "client_class", "status"],
            **reg,
        )
        self.duration = pc.Histogram(
            "qwengw_request_duration_seconds",
            "Request duration",
            ["route"],
            buckets=TIME_BUCKETS,
            **reg,
        )
        self.first_token = pc.Histogram(
            "qwengw_time_to_first_token_seconds",
            "Time from the request to the first generated token",
            ["model", "endpoint"],
            buckets=TTFT_BUCKETS,
            **reg,
        )
        self.token_count = pc.Counter(
            "qwengw_tokens",
            "Tokens by model, key id and kind (prompt, completion), as Ollama counted them "
            "(on a cancelled stream: the tokens sent so far)",
            ["model", "key_id", "kind"],
            **reg,
        )
        self.ttft = pc.Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to the first generated token",
            ["gen_ai_request_model"],
            buckets=TIME_BUCKETS,
            **reg,
        )
        self.tokens = pc.Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request",
            ["gen_ai_request_model", "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            **reg,
        )
        self.inflight = pc.Gauge(
            "qwengw_inflight_requests",
            "Requests being served (not counting /health, /ready, /metrics)",
            multiprocess_mode="livesum",
            **reg,
        )
        self.key_inflight = pc.Gauge(
            "qwengw_key_inflight_requests",
            "Requests holding an in-flight slot, per key (only where max_concurrent applies)",
            ["key_id"],
            multiprocess_mode="livesum",
            **reg,
        )
        self.rate = pc.Counter(
            "qwengw_rate_limited", "Requests rejected by a limit", ["reason"], **reg
        )
        self.auth = pc.Counter(
            "qwengw_auth_rejected", "Requests rejected for a missing/invalid key", **reg
        )
        self.upstream_errors = pc.Counter(
            "qwengw_upstream_errors", "Upstream failures by kind", ["upstream", "kind"], **reg
        )
        self.upstream_duration = pc.Histogram(
            "qwengw_upstream_request_duration_seconds",
            "One exchange with an Ollama host, from sending to the end of its answer, by outcome",
            ["upstream", "outcome"],
            buckets=TIME_BUCKETS,
            **reg,
        )
        self.upstream_up = pc.Gauge(
            "qwengw_upstream_up",
            "1 when the host answered the last request or /ready probe, 0 when it could not be "
            "reached",
            ["upstream"],
            multiprocess_mode="livemostrecent",
            **reg,
        )
        self.circuit = pc.Gauge(
            "qwengw_circuit_state",
            "Circuit per upstream (0 closed, 1 half-open, 2 open; worst worker)",
            ["upstream"],
            multiprocess_mode="livemax",
            **reg,
        )
        self.transitions = pc.Counter(
            "qwengw_circuit_transitions", "Circuit state changes", ["upstream", "to"], **reg
        )
        self.cancelled = pc.Counter(
            "qwengw_cancelled_requests",
            "Requests whose client left before the end",
            ["route"],
            **reg,
        )
        build = pc.Gauge(
            "qwengw_build_info",
            "Always 1: the gateway's version, Python and gunicorn",
            ["version", "python", "gunicorn"],
            multiprocess_mode="livemax",
            **reg,
        )
        build.labels(__version__, platform.python_version(), _version("gunicorn")).set(1)
        for name, values in limit_gauges(settings).items():
            labels = ["key_id"] if name != "qwengw_limit_first_token_timeout_seconds" else []
            gauge = pc.Gauge(
                name,
                f"Configured limit ({name.removeprefix('qwengw_limit_')})",
                labels,
                multiprocess_mode="livemax",
                **reg,
            )
            for key_id, value in values.items():
                (gauge.labels(key_id) if labels else gauge).set(value)
        for name in upstreams:
            self.circuit.labels(name).set(0)

    def _labels(self, metric: Any, *values: str) -> Any:
        """``metric.labels(*values)``, remembered: prometheus-client checks the values on every
        call (1.6 µs), and a request updates a dozen metrics. Label values are bounded (see the
        module's doc), so this is too."""
        key = (metric, values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def key_label(self, key_id: str | None) -> str:
        if not key_id:
            return ANONYMOUS
        return safe_text(key_id) if key_id in self.key_ids else OTHER

    def request_started(self, path: str) -> None:
        if path not in HOUSEKEEPING_PATHS:  # a scrape must not count itself
            self.inflight.inc()

    def request_finished(self, rec: AuditRecord) -> None:
        route = route_label(rec.path)
        served = rec.status < 400 or rec.upstream is not None
        model = self.models.label(rec.model, served)
        key = self.key_label(rec.key_id)
        status = str(rec.status)
        if rec.path not in HOUSEKEEPING_PATHS:
            self.inflight.dec()
        self._labels(self.requests, route, model, status).inc()
        if rec.path not in HOUSEKEEPING_PATHS or rec.status >= 400:
            # Callers of the API; scrapes and probes only when refused (a 401 or 403 storm).
            self._labels(self.callers, key, client_class(rec.client_ip), status).inc()
        self._labels(self.duration, route).observe(rec.duration_ms / 1000)
        if rec.ttft_ms is not None:
            self._labels(self.first_token, model, route).observe(rec.ttft_ms / 1000)
            self._labels(self.ttft, model).observe(rec.ttft_ms / 1000)
        if rec.prompt_tokens is not None:
            self._labels(self.token_count, model, key, "prompt").inc(rec.prompt_tokens)
            self._labels(self.tokens, model, "input").observe(rec.prompt_tokens)
        if rec.completion_tokens is not None:
            self._labels(self.token_count, model, key, "completion").inc(rec.completion_tokens)
            self._labels(self.tokens, model, "output").observe(rec.completion_tokens)
        if rec.cancelled:
            self._labels(self.cancelled, route).inc()

    def auth_rejected(self) -> None:
        self.auth.inc()

    def rate_limited(self, reason: str) -> None:
        self._labels(self.rate, reason).inc()

    def slot_change(self, identity: str, delta: int) -> None:
        # Without auth the identity is "ip:<address>": counted as anonymous, never labelled.
        label = safe_text(identity) if identity in self.key_ids else ANONYMOUS
        self._labels(self.key_inflight, label).inc(delta)

    def upstream_error(self, upstream: str, kind: str) -> None:
        self._labels(self.upstream_errors, upstream, kind).inc()

    def upstream_done(self, upstream: str, outcome: str, seconds: float) -> None:
        self._labels(self.upstream_duration, upstream, outcome).observe(seconds)
        if outcome != "cancelled":  # the client left: says nothing about the host
            self._labels(self.upstream_up, upstream).set(0 if outcome == "unreachable" else 1)

    def upstream_probed(self, upstream: str, reachable: bool) -> None:
        self.upstream_up.labels(upstream).set(1 if reachable else 0)

    def circuit_change(self, upstream: str, old: str, new: str) -> None:
        self.circuit.labels(upstream).set(CIRCUIT_VALUE.get(new, 0))
        self.transitions.labels(upstream, new).inc()

    def render(self) -> Response:
        pc = self.pc
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = pc.CollectorRegistry()  # fresh per scrape, as multiprocess mode requires
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self.registry
        return Response(pc.generate_latest(registry), content_type=pc.CONTENT_TYPE_LATEST)


def build_metrics(settings: Settings, upstreams: list[str]) -> NullMetrics:
    if not settings.metrics.enabled:
        return NullMetrics()
    try:
        return PrometheusMetrics(settings, upstreams)
    except ImportError:
        log.warning(
            "metrics.enabled is true but prometheus-client is not installed; "
            "pip install prometheus-client to serve /metrics"
        )
        return NullMetrics("prometheus-client is not installed (pip install prometheus-client)")
