"""The few exceptions the gateway raises, and the one place that renders them as OpenAI errors.

Every error a client sees has the shape ``{"error": {"message", "type", "param", "code"}}``.
Messages never contain keys, upstream URLs or upstream model names: the code that raises is
responsible for the message, this module for the shape and the status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response
from flask.blueprints import Blueprint
from werkzeug.exceptions import HTTPException

log = logging.getLogger("qwengw")


class GatewayError(Exception):
    """Base of every error that becomes an HTTP response."""

    status = 500
    type = "api_error"
    code: str | None = "internal_error"

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
        super().__init__(f"The model '{model}' does not exist", param="model")


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
    status = 429
    type = "rate_limit_exceeded"
    code = "rate_limit_exceeded"


class ClientGone(GatewayError):
    """The client closed its connection; nobody will read this (logged as 499)."""

    status = 499
    type = "invalid_request_error"
    code = "client_closed_request"


class UpstreamError(GatewayError):
    """Ollama failed: a 5xx answer, or a stream that broke, stopped early or sent garbage."""

    status = 502
    type = "api_error"
    code = "upstream_error"


class UpstreamUnavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    type = "api_error"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    """The gateway itself cannot decide (e.g. rate-limit storage down and failing closed)."""

    status = 503
    type = "api_error"
    code = "service_unavailable"


def error_response(err: GatewayError) -> Response:
    resp = Response(json.dumps(err.body()), status=err.status, mimetype="application/json")
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


def _from_http_exception(exc: HTTPException) -> GatewayError:
    status = exc.code or 500
    if status == 413:
        return PayloadTooLarge("request body too large", status=413)
    if status == 404:
        return NotFound("Unknown path; the API lives under /v1/", code="not_found")
    if status == 405:
        return InvalidRequest("method not allowed", code="method_not_allowed", status=405)
    if status < 500:
        err = InvalidRequest(exc.description or exc.name, code="invalid_request", status=status)
        return err
    return GatewayError("internal server error", status=status)


def register_error_handlers(target: Flask | Blueprint) -> None:
    """Render every error as OpenAI JSON: gateway errors, werkzeug errors, and anything else."""

    def on_gateway_error(err: GatewayError) -> Response:
        return error_response(err)

    def on_http_exception(exc: HTTPException) -> Response:
        return error_response(_from_http_exception(exc))

    def on_unexpected(exc: Exception) -> Response:
        # Log the traceback for operators; the client gets a generic message only.
        log.exception("unhandled error: %s", type(exc).__name__)
        return error_response(GatewayError("internal server error"))

    target.register_error_handler(GatewayError, on_gateway_error)
    target.register_error_handler(HTTPException, on_http_exception)
    target.register_error_handler(Exception, on_unexpected)
