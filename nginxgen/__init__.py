"""nginxgen: compile, lint and install the hardened Nginx site in front of qwengw.

Pipeline (crossplane style): SiteSpec (model) → payload (build, pure) → text (crossplane.build)
→ findings (lint, on a parsed payload) → install (deploy, the only I/O).
"""

from .build import render, site_payload
from .lint import lint, lint_file, lint_text
from .model import TLS, GatewaySettings, Headers, RateLimit, SiteSpec, SpecError
from .tree import Finding

__all__ = [
    "Finding",
    "GatewaySettings",
    "Headers",
    "RateLimit",
    "SiteSpec",
    "SpecError",
    "TLS",
    "lint",
    "lint_file",
    "lint_text",
    "render",
    "site_payload",
]
