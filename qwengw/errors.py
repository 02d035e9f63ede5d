"""The few exceptions the gateway raises, and the one place that renders them as OpenAI errors.

Every error a client sees has the shape ``{"error": {"message", "type", "param", "code"}}``.
Messages never contain keys, upstream URLs or upstream model names: the code that raises is
responsible for the message, this module for the shape and the status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, request
from flask.blueprints import Blueprint
from werkzeug.exceptions import HTTPException

log = logging.getLogger("qwengw")


class GatewayError(Exception):
    """Base of every error that becomes an HTTP response."""

    status = 500
    type = "server_error"
    code: str | None = "internal_error"
    upstream: str | None = None  # the Ollama host's label when one was involved (for the audit)

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class Unauthorized(GatewayError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        # RFC 9110: a 401 names the scheme that would work.
        super().__init__(message, code=code, headers={"WWW-Authenticate": 'Bearer realm="qwengw"'})


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"
    code = "ip_not_allowed"


class NotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        shown = model if len(model) <= 200 else model[:200] + "…"  # an error is not an echo
        super().__init__(f"The model '{shown}' does not exist", param="model")


class RequestTimeout(GatewayError):
    """The client did not send its whole request body in time (``client.body_timeout``)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class RateLimited(GatewayError):
    """A limit refused the request. ``type`` is OpenAI's ("requests" for a request rate); the
    concurrency and failed-authentication limits say which they are in ``code``."""

    status = 429
    type = "requests"
    code = "rate_limit_exceeded"


class ClientGone(GatewayError):
    """The client closed its connection; nobody will read this (logged as 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class UpstreamError(GatewayError):
    """Ollama failed: a 5xx answer, or a stream that broke, stopped early or sent garbage."""

    status = 502
    type = "server_error"
    code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    status = 503
    type = "server_error"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "server_error"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    """The gateway itself cannot decide (e.g. rate-limit storage down and failing closed)."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


# The refusals the edge (the nginx site nginxgen writes) makes itself on /v1/, worded as the
# gateway words the same refusal: one vocabulary (status, type, code, message) for a client,
# whichever door refused it. nginxgen's error pages are rendered from this table.
EDGE_ERRORS: dict[int, GatewayError] = {
    403: Forbidden("ip not allowed"),
    413: PayloadTooLarge("request body too large"),
    429: RateLimited("rate limit reached for this client address; slow down and retry"),
    502: UpstreamUnavailable("the gateway is not reachable; try again shortly"),
    503: UpstreamUnavailable("the gateway is not reachable; try again shortly"),
    504: UpstreamTimeout("the gateway did not answer in time; try again shortly"),
}


# Anthropic's error types by status (what its SDKs map to their exception classes).
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ANTHROPIC_PREFIX = "/v1/messages"
PATHS_SERVED = (
    "POST /v1/chat/completions, POST /v1/completions, POST /v1/responses, POST /v1/messages, "
    "POST /v1/messages/count_tokens, POST /v1/embeddings, GET /v1/models, GET /v1/models/{id}, "
    "GET /health, GET /ready, GET /metrics"
)


def is_anthropic_path(path: str) -> bool:
    return path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/")


def anthropic_status(err: GatewayError) -> int:
    # Anthropic says 529 when it is overloaded; Claude Code and the SDKs retry it as such.
    return 529 if err.code == "upstream_busy" else err.status


def anthropic_error(err: GatewayError) -> dict[str, Any]:
    """The inner ``{"type", "message"}`` of an Anthropic error (HTTP body or SSE event)."""
    status = anthropic_status(err)
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    return {"type": ANTHROPIC_TYPES.get(status, fallback), "message": err.message}


def error_response(err: GatewayError, path: str = "", request_id: str | None = None) -> Response:
    """The error in the shape of the dialect that ``path`` speaks (OpenAI unless Anthropic)."""
    status = err.status
    if is_anthropic_path(path):
        status = anthropic_status(err)
        body: dict[str, Any] = {"type": "error", "error": anthropic_error(err)}
        if request_id:
            body["request_id"] = request_id
    else:
        body = err.body()
    resp = Response(json.dumps(body), status=status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


def _from_http_exception(exc: HTTPException) -> GatewayError:
    status = exc.code or 500
    if status == 413:
        return PayloadTooLarge("request body too large", status=413)
    if status == 404:
        return NotFound(f"Unknown path. This server answers: {PATHS_SERVED}.", code="not_found")
    if status == 405:
        return InvalidRequest("method not allowed", code="method_not_allowed", status=405)
    if status < 500:
        err = InvalidRequest(exc.description or exc.name, code="invalid_request", status=status)
        return err
    return GatewayError("internal server error", status=status)


def register_error_handlers(target: Flask | Blueprint) -> None:
    """Render every error as OpenAI JSON: gateway errors, werkzeug errors, and anything else."""

    def render(err: GatewayError) -> Response:
        ctx = g.get("qwengw")
        if ctx is None:
            return error_response(err, request.path)
        ctx.record.error_code = err.code  # the audit's code, whatever shape the body has
        ctx.record.upstream = ctx.record.upstream or err.upstream  # which host failed
        return error_response(err, request.path, ctx.record.request_id)

    def on_http_exception(exc: HTTPException) -> Response:
        return render(_from_http_exception(exc))

    def on_unexpected(exc: Exception) -> Response:
        # Log the traceback for operators; the client gets a generic message only.
        log.exception("unhandled error: %s", type(exc).__name__)
        return render(GatewayError("internal server error"))

    target.register_error_handler(GatewayError, render)
    target.register_error_handler(HTTPException, on_http_exception)
    target.register_error_handler(Exception, on_unexpected)
