"""Prometheus metrics (optional: prometheus-client). Correct under several gunicorn workers.

With ``PROMETHEUS_MULTIPROC_DIR`` set before the workers start (gunicorn.conf.py does it), every
worker writes its values to mmap'd files and ``/metrics`` merges them at scrape time. Without it,
one process's values are served from a registry owned by this app (no global registry).
Names follow OpenTelemetry's GenAI conventions where one fits, ``qwengw_*`` otherwise.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Response

from .audit import AuditRecord

log = logging.getLogger("qwengw.metrics")

ROUTES = {"/v1/chat/completions", "/v1/embeddings", "/v1/models", "/health", "/ready", "/metrics"}
CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}
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


def route_label(path: str) -> str:
    """Bounded cardinality: model ids and unknown paths collapse to fixed labels."""
    if path in ROUTES:
        return path
    if path.startswith("/v1/models/"):
        return "/v1/models/{id}"
    return "other"


class NullMetrics:
    """Used when metrics are disabled or prometheus-client is not installed."""

    enabled = False

    def request_started(self) -> None: ...
    def request_finished(self, rec: AuditRecord) -> None: ...
    def auth_rejected(self) -> None: ...
    def rate_limited(self, reason: str) -> None: ...
    def upstream_error(self, upstream: str, kind: str) -> None: ...
    def circuit_change(self, upstream: str, old: str, new: str) -> None: ...

    def render(self) -> Response:
        body = b'{"error":{"message":"metrics are disabled (install prometheus-client and set metrics.enabled)","type":"invalid_request_error","param":null,"code":"not_found"}}'  # noqa: E501
        return Response(body, status=404, mimetype="application/json")


class PrometheusMetrics(NullMetrics):
    enabled = True

    def __init__(self, upstreams: list[str]) -> None:
        import prometheus_client as pc

        self.pc = pc
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # Own registry: two apps in one process (tests, embedding) do not collide.
        self.registry = None if self.multiprocess else pc.CollectorRegistry()
        reg: dict[str, Any] = {"registry": self.registry}
        self.requests = pc.Counter(
            "qwengw_requests",
            "Requests by route, public model and status",
            ["route", "model", "status"],
            **reg,
        )
        self.duration = pc.Histogram(
            "qwengw_request_duration_seconds",
            "Request duration",
            ["route"],
            buckets=TIME_BUCKETS,
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
            "qwengw_inflight_requests", "Requests being served", multiprocess_mode="livesum", **reg
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
        for name in upstreams:
            self.circuit.labels(name).set(0)

    def request_started(self) -> None:
        self.inflight.inc()

    def request_finished(self, rec: AuditRecord) -> None:
        route = route_label(rec.path)
        model = rec.model or ""
        self.inflight.dec()
        self.requests.labels(route, model, str(rec.status)).inc()
        self.duration.labels(route).observe(rec.duration_ms / 1000)
        if rec.ttft_ms is not None:
            self.ttft.labels(model).observe(rec.ttft_ms / 1000)
        if rec.prompt_tokens is not None:
            self.tokens.labels(model, "input").observe(rec.prompt_tokens)
        if rec.completion_tokens is not None:
            self.tokens.labels(model, "output").observe(rec.completion_tokens)
        if rec.cancelled:
            self.cancelled.labels(route).inc()

    def auth_rejected(self) -> None:
        self.auth.inc()

    def rate_limited(self, reason: str) -> None:
        self.rate.labels(reason).inc()

    def upstream_error(self, upstream: str, kind: str) -> None:
        self.upstream_errors.labels(upstream, kind).inc()

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


def build_metrics(enabled: bool, upstreams: list[str]) -> NullMetrics:
    if not enabled:
        return NullMetrics()
    try:
        return PrometheusMetrics(upstreams)
    except ImportError:
        log.warning(
            "metrics.enabled is true but prometheus-client is not installed; "
            "pip install 'qwengw[metrics]' to serve /metrics"
        )
        return NullMetrics()
