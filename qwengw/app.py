"""The application factory and the Flask extension that mounts the gateway into any app."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

from .api import make_blueprint
from .config import ENV_WARNINGS_SAID, Settings, load_settings
from .config import warnings as config_warnings
from .errors import register_error_handlers
from .state import GatewayState

log = logging.getLogger("qwengw")


class Gateway:
    """Flask extension: ``Gateway(config).init_app(app)`` mounts ``/v1/...``, ``/health``,
    ``/ready`` and ``/metrics`` on an existing app; its own routes keep working."""

    def __init__(
        self,
        config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None,
        app: Flask | None = None,
    ) -> None:
        self.config = config
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask, *, standalone: bool = False) -> GatewayState:
        settings = load_settings(self.config)
        state = GatewayState.build(settings)
        app.extensions["qwengw"] = state
        bp = make_blueprint(whole_app=standalone)
        if standalone:
            # App-level handlers also catch routing 404/405, which a blueprint cannot.
            register_error_handlers(app)
        else:
            register_error_handlers(bp)  # the host app keeps its own error pages
        app.register_blueprint(bp)
        _configure_logging(settings.log_level)
        if not os.environ.get(ENV_WARNINGS_SAID):
            workers = int(os.environ.get("QWENGW_WORKERS", "1"))
            for warning in config_warnings(settings, workers):
                log.warning(warning)
        return state


def _configure_logging(level: str) -> None:
    logger = logging.getLogger("qwengw")
    logger.setLevel(level.upper())
    if not logger.handlers:
        # In a gunicorn worker, write through gunicorn's error log: one format and one
        # destination for the server's lines and ours.
        handlers = list(logging.getLogger("gunicorn.error").handlers)
        if not handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(
                logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
            )
            handlers = [handler]
        for handler in handlers:
            logger.addHandler(handler)
        logger.propagate = False


def create_app(
    config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None,
) -> Flask:
    """A Flask app serving only the gateway. ``config``: a YAML path, a dict, ``Settings``, or
    None (then ``$QWENGW_CONFIG``, else built-in defaults)."""
    app = Flask("qwengw")
    Gateway(config).init_app(app, standalone=True)
    return app
