"""qwengw: an OpenAI-compatible gateway in front of Ollama, with auth, allowlist, limits and audit.

Names are imported lazily: gunicorn's master imports ``qwengw.config`` before gevent patches
the workers, and must not pull in ssl or the HTTP client (they would then escape the patching).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ConfigError", "Gateway", "GatewayError", "Settings", "create_app", "load_settings"]
__version__ = "0.1.0"

_WHERE = {
    "Gateway": "app",
    "create_app": "app",
    "ConfigError": "config",
    "Settings": "config",
    "load_settings": "config",
    "GatewayError": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'qwengw' has no attribute {name!r}")
