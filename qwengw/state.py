"""Everything a running gateway holds, built once from Settings and kept on the Flask app."""

from __future__ import annotations

from dataclasses import dataclass, field

from .audit import AuditLog
from .auth import Keyring
from .config import Settings
from .metrics import NullMetrics, build_metrics
from .ratelimit import Limiter
from .tokens import TokenEstimator
from .upstream import Events, OllamaClient, host_label


@dataclass
class GatewayState:
    settings: Settings
    client: OllamaClient
    keyring: Keyring
    limiter: Limiter
    audit: AuditLog | None
    metrics: NullMetrics
    # Ollama models that answered "does not support thinking" (per worker; see api.py).
    no_thinking: set[str] = field(default_factory=set)
    tokens: TokenEstimator = field(default_factory=TokenEstimator)

    @classmethod
    def build(cls, settings: Settings) -> GatewayState:
        labels = [host_label(i) for i in range(len(settings.ollama_urls))]
        metrics = build_metrics(settings, labels)
        events = Events(
            upstream_error=metrics.upstream_error,
            circuit_change=metrics.circuit_change,
            upstream_done=metrics.upstream_done,
            upstream_probed=metrics.upstream_probed,
        )
        client = OllamaClient(settings.ollama_urls, settings.upstream, settings.models, events)
        a = settings.audit
        audit = AuditLog(a.path, a.housekeeping) if a.enabled else None
        return cls(
            settings,
            client,
            Keyring(settings.auth.keys),
            Limiter(settings.rate_limit, settings.auth, on_slot=metrics.slot_change),
            audit,
            metrics,
        )
