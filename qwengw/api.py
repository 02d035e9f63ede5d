"""The blueprint: thin views that run each request through the modules, in this order:

allowlist → authentication → request validation → rate and concurrency limits → upstream.

A rejected request never reaches Ollama. Audit, metrics and slot release happen when the WSGI
server closes the response (``call_on_close``), which also runs when a streaming client leaves.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from gunicorn.http.errors import ParseException

from . import translate
from .allowlist import client_ip, in_networks, parse_ip
from .audit import AuditRecord
from .auth import Identity, extract_key
from .disconnect import Watcher, deadline, guard_sends, watch
from .errors import (
    ClientGone,
    Forbidden,
    GatewayError,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    RequestTimeout,
    Unauthorized,
)
from .state import GatewayState
from .upstream import UpstreamStream

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
OPEN_ENDPOINTS = {"health"}  # liveness says nothing about the deployment: no gate
API_ENDPOINTS = {"chat_completions", "embeddings", "list_models", "get_model"}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@dataclass
class RequestCtx:
    record: AuditRecord
    started: float
    identity: Identity | None = None
    decision_headers: dict[str, str] = field(default_factory=dict)
    slot: str | None = None  # identity holding an in-flight slot
    slot_checked: bool = False
    upstream: UpstreamStream | None = None
    streaming: bool = False
    finished: bool = False
    watcher: Watcher | None = None
    client_gone: bool = False
    quiet: bool = False  # /health: no audit line (a flood of probes must not fill the log)


def _state() -> GatewayState:
    return current_app.extensions["qwengw"]  # type: ignore[no-any-return]


def _ctx() -> RequestCtx:
    return g.qwengw  # type: ignore[no-any-return]


def _json_dumps(obj: Any) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\\udc80" in the request, echoed back): escaped, still valid JSON.
        return json.dumps(obj, separators=(",", ":")).encode()


def _json_response(obj: Any, status: int = 200) -> Response:
    return Response(_json_dumps(obj), status=status, mimetype="application/json")


class _Blueprint(Blueprint):
    """Routes that never redirect: werkzeug answers ``/v1//models`` with a 308 whose HTML body
    and ``Location`` (built from the client's ``Host``) are not ours to send. Without slash
    merging such a path is a plain JSON 404."""

    def add_url_rule(self, rule: str, *args: Any, **options: Any) -> None:
        options.setdefault("merge_slashes", False)
        super().add_url_rule(rule, *args, **options)


def make_blueprint(*, whole_app: bool = False) -> Blueprint:
    """A fresh blueprint per app, so two gateways in one process never share handlers.

    ``whole_app``: the gate and the audit cover every request of the app (unknown paths and
    wrong methods included), as when the gateway is the whole app. Embedded in a host app,
    they cover only the gateway's routes.
    """
    bp = _Blueprint("qwengw", __name__)
    if whole_app:
        bp.before_app_request(_gate)
        bp.after_app_request(_finish)
    else:
        bp.before_request(_gate)
        bp.after_request(_finish)
    bp.add_url_rule("/v1/chat/completions", "chat_completions", chat_completions, methods=["POST"])
    bp.add_url_rule("/v1/embeddings", "embeddings", embeddings, methods=["POST"])
    bp.add_url_rule("/v1/models", "list_models", list_models, methods=["GET"])
    bp.add_url_rule("/v1/models/<path:model_id>", "get_model", get_model, methods=["GET"])
    bp.add_url_rule("/health", "health", health, methods=["GET"])
    bp.add_url_rule("/ready", "ready", ready, methods=["GET"])
    bp.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
    return bp


# --------------------------------------------------------------------------- the gate


def _gate() -> None:
    st = _state()
    s = st.settings
    peer = request.remote_addr
    trusted = s.whitelist.trusted_proxies
    ip = client_ip(
        peer, request.headers.get("X-Forwarded-For"), request.headers.get("X-Real-IP"), trusted
    )
    rid = request.headers.get("X-Request-Id", "")
    if not (rid and REQUEST_ID.fullmatch(rid) and in_networks(parse_ip(peer), trusted)):
        rid = os.urandom(16).hex()
    record = AuditRecord(
        request_id=rid, client_ip=str(ip) if ip else None, method=request.method, path=request.path
    )
    g.qwengw = ctx = RequestCtx(record, time.perf_counter())
    st.metrics.request_started()
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    if endpoint in OPEN_ENDPOINTS:
        ctx.quiet = True
        return
    if s.whitelist.enabled and not in_networks(ip, s.whitelist.ips):
        raise Forbidden("ip not allowed", code="ip_not_allowed")
    if endpoint in API_ENDPOINTS and s.auth.enabled:
        ip_key = record.client_ip or "unknown"
        st.limiter.auth_blocked(ip_key)
        try:
            ctx.identity = st.keyring.authenticate(extract_key(request.headers, s.auth.header_key))
        except Unauthorized:
            st.limiter.auth_failed(ip_key)
            st.metrics.auth_rejected()
            raise
        record.key_id = ctx.identity.key_id
        if s.auth.user_header:
            user = request.headers.get(s.auth.user_header)
            record.user = user[:128] if user else None
    max_body = s.request.max_body_bytes
    if request.content_length is not None and request.content_length > max_body:
        raise PayloadTooLarge(f"request body too large, max {max_body} bytes")
    # A chunked body has no length to check up front: reading stops one byte past the limit,
    # and _json_body turns "more than the limit" into the same 413.
    request.max_content_length = max_body + 1
    if endpoint in API_ENDPOINTS and request.method == "POST":
        # The in-flight slot is held while the body arrives: a key cannot park more bodies
        # than its concurrency allows (and none longer than client.body_timeout).
        _limited(st, lambda: _take_slot(st, ctx))
        _read_body(s.client.body_timeout)


def _read_body(seconds: float) -> None:
    """The whole body into the request's cache, within ``seconds`` (400 if its framing is bad)."""
    try:
        with deadline(request.environ, seconds, RequestTimeout(_BODY_TIMEOUT % seconds)):
            request.get_data(cache=True)
    except ParseException as exc:
        # gunicorn's chunked-body errors (bad size, missing CRLF, forbidden trailer) are not
        # OSError, so werkzeug would let them through as a 500. gunicorn closes the connection
        # after this answer: where the next request starts is unknown.
        raise InvalidRequest(
            f"malformed request body ({type(exc).__name__}): check Transfer-Encoding: chunked"
        ) from None


_BODY_TIMEOUT = "the request body did not arrive within %gs"


def _admit_validated(
    st: GatewayState,
    ctx: RequestCtx,
    model: str,
    stream: bool,
    prompt_chars: int,
    what: str,
    param: str,
) -> None:
    """A valid request: record it, bound its size, take its limits, watch its client."""
    rec = ctx.record
    rec.model, rec.stream, rec.prompt_chars = model, stream, prompt_chars
    limit = st.settings.request.max_prompt_chars
    if prompt_chars > limit:
        raise InvalidRequest(
            f"{what} too long, max {limit} chars", param=param, code="context_length_exceeded"
        )
    _admit(st, ctx)
    _watch_client(ctx)


def _admit(st: GatewayState, ctx: RequestCtx) -> None:
    """An in-flight slot (taken in the gate already), then the rate: per key, or per client IP
    when auth is off.

    The slot comes first so that a request refused for concurrency does not use up rate; a
    request then refused by the rate gives its slot back in ``_complete``.
    """
    _limited(st, lambda: _take_slot(st, ctx))
    if st.settings.rate_limit.enabled:
        _limited(st, lambda: _count_rate(st, ctx))


def _identity(ctx: RequestCtx) -> str:
    return ctx.identity.key_id if ctx.identity else f"ip:{ctx.record.client_ip}"


def _take_slot(st: GatewayState, ctx: RequestCtx) -> None:
    if ctx.slot is not None or ctx.slot_checked:
        return
    ctx.slot_checked = True
    limit = (ctx.identity.max_concurrent if ctx.identity else None) or (
        st.settings.rate_limit.max_concurrent
    )
    identity = _identity(ctx)
    if st.limiter.acquire(identity, limit):
        ctx.slot = identity


def _count_rate(st: GatewayState, ctx: RequestCtx) -> None:
    decision = st.limiter.hit(_identity(ctx), ctx.identity.key_id if ctx.identity else None)
    if decision:
        ctx.decision_headers = decision.headers()


def _limited(st: GatewayState, step: Any) -> None:
    try:
        step()
    except GatewayError as err:
        if err.status == 429:
            st.metrics.rate_limited(err.code or "rate_limit_exceeded")
        raise


def _watch_client(ctx: RequestCtx) -> None:
    """From here on, a client that leaves stops the upstream work (see disconnect.py)."""

    def on_gone(watcher: Watcher) -> None:
        ctx.client_gone = True
        if ctx.upstream is not None:
            ctx.upstream.abort()  # reading lines: close the socket under the read
        else:
            watcher.interrupt(ClientGone("the client closed the connection"))  # still connecting

    ctx.watcher = watch(request.environ, on_gone)


def _stop_watching(ctx: RequestCtx) -> None:
    if ctx.watcher is not None:
        ctx.watcher.stop()
        ctx.watcher = None


def _finish(resp: Response) -> Response:
    ctx: RequestCtx | None = g.get("qwengw")
    if ctx is None:
        return resp
    resp.headers["X-Request-Id"] = ctx.record.request_id
    for name, value in ctx.decision_headers.items():
        resp.headers.setdefault(name, value)
    if not ctx.streaming:
        ctx.record.status = resp.status_code
        if resp.status_code >= 400 and resp.mimetype == "application/json":
            body = resp.get_json(silent=True) or {}
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                ctx.record.error_code = err.get("code")
    st = _state()
    if not resp.direct_passthrough:
        resp.response = guard_sends(
            request.environ,
            resp.response,
            st.settings.client.send_timeout,
            on_stall=lambda: _client_stalled(ctx),
            on_first=lambda: _response_started(ctx),
        )
    resp.call_on_close(lambda: _complete(st, ctx))
    return resp


def _response_started(ctx: RequestCtx) -> None:
    if ctx.watcher is not None:
        ctx.watcher.response_started()


def _client_stalled(ctx: RequestCtx) -> None:
    """The client stopped reading (client.send_timeout): cancelled exactly as if it had left."""
    ctx.client_gone = True
    _stop_watching(ctx)
    if ctx.upstream is not None:
        ctx.upstream.abort()


def _complete(st: GatewayState, ctx: RequestCtx) -> None:
    """Runs once the response is fully sent, or the client has gone: free and record."""
    _stop_watching(ctx)
    if ctx.upstream is not None:
        ctx.upstream.close()
    if ctx.slot is not None:
        st.limiter.release(ctx.slot)
        ctx.slot = None
    rec = ctx.record
    if ctx.client_gone or (ctx.streaming and not ctx.finished):
        rec.cancelled = True
        rec.status = 499  # nginx's "client closed request", as the logs expect
    rec.duration_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
    st.metrics.request_finished(rec)
    if st.audit is not None and not ctx.quiet:
        st.audit.write(rec)


# --------------------------------------------------------------------------- views


def _json_body() -> Any:
    _read_body(_state().settings.client.body_timeout)  # read in the gate already: cached
    data = request.get_data(cache=True)
    if not data:
        raise InvalidRequest("the request body is required (JSON)")
    max_body = _state().settings.request.max_body_bytes
    if len(data) > max_body:
        raise PayloadTooLarge(f"request body too large, max {max_body} bytes")
    try:
        body = request.get_json(force=True, silent=True)
    except RecursionError:  # e.g. 100,000 nested brackets: not a stack trace in the log
        body = None
    if body is None:
        raise InvalidRequest("the request body is not valid JSON")
    return body


def _lines(up: UpstreamStream, ctx: RequestCtx) -> Iterator[dict[str, Any]]:
    """Upstream lines, noting time to first token (first line with output) for the audit."""
    for line in up:
        if ctx.record.ttft_ms is None:
            msg = line.get("message") or {}
            if (
                msg.get("content")
                or msg.get("thinking")
                or msg.get("tool_calls")
                or line.get("done")
            ):
                ctx.record.ttft_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
        yield line


def _record_usage(ctx: RequestCtx, usage: dict[str, int] | None) -> None:
    if usage:
        ctx.record.prompt_tokens = usage["prompt_tokens"]
        ctx.record.completion_tokens = usage["completion_tokens"]


def _sse(obj: Any) -> bytes:
    return b"data: " + _json_dumps(obj) + b"\n\n"


def chat_completions() -> Response:
    st, ctx = _state(), _ctx()
    s = st.settings
    req = translate.chat_request_to_ollama(_json_body(), s.models)
    rec = ctx.record
    _admit_validated(st, ctx, req.public_model, req.stream, req.prompt_chars, "prompt", "messages")
    up = st.client.stream_chat(
        req.payload, request_id=rec.request_id, public_model=req.public_model
    )
    ctx.upstream = up
    rec.upstream = up.host.label
    completion_id, created = f"chatcmpl-{os.urandom(16).hex()}", int(time.time())
    if not req.stream:
        result = translate.aggregate_chat(
            _lines(up, ctx), completion_id=completion_id, created=created, model=req.public_model
        )
        _stop_watching(ctx)
        _record_usage(ctx, result["usage"])
        return _json_response(result)

    translator = translate.ChatStream(completion_id, created, req.public_model, req.include_usage)
    ctx.streaming = True
    rec.status = 200

    def generate() -> Iterator[bytes]:
        try:
            for line in _lines(up, ctx):
                for chunk in translator.feed(line):
                    yield _sse(chunk)
            yield b"data: [DONE]\n\n"
        except ClientGone:
            return  # nobody is listening; _complete records the cancellation
        except GatewayError as err:
            # Headers are gone already: the error travels as one SSE event, then [DONE].
            rec.error_code = err.code
            rec.status = err.status
            yield _sse(err.body())
            yield b"data: [DONE]\n\n"
        finally:
            _stop_watching(ctx)
            if translator.usage is not None:
                _record_usage(ctx, translator.usage)
            else:  # cut short: Ollama's counts never came; report the tokens seen so far
                rec.completion_tokens = translator.output_lines
            up.close()
        ctx.finished = True

    return Response(generate(), mimetype="text/event-stream", headers=SSE_HEADERS)


def embeddings() -> Response:
    st, ctx = _state(), _ctx()
    s = st.settings
    req = translate.embeddings_request_to_ollama(_json_body(), s.models)
    rec = ctx.record
    _admit_validated(st, ctx, req.public_model, False, req.prompt_chars, "input", "input")
    native = st.client.call_json(
        "POST", "/api/embed", req.payload, request_id=rec.request_id, public_model=req.public_model
    )
    _stop_watching(ctx)
    result = translate.embeddings_response(native, req)
    rec.prompt_tokens = result["usage"]["prompt_tokens"]
    return _json_response(result)


def _model_list() -> list[dict[str, Any]]:
    st = _state()
    client, models = st.client, st.settings.models
    if not models:
        tags = client.cached("tags", lambda: client.call_json("GET", "/api/tags", read_timeout=10))
        return translate.models_list(tags, {})
    try:  # only for the `created` dates: the list itself comes from the config
        tags = client.cached(
            "tags-dates",
            lambda: client.call_json(
                "GET", "/api/tags", read_timeout=st.settings.upstream.connect_timeout
            ),
        )
    except GatewayError:
        tags = {"models": []}
    return translate.models_list(tags, models)


def list_models() -> Response:
    return _json_response({"object": "list", "data": _model_list()})


def get_model(model_id: str) -> Response:
    for model in _model_list():
        if model["id"] == model_id:
            return _json_response(model)
    raise ModelNotFound(model_id)


def health() -> Response:
    return _json_response({"status": "ok"})


def ready() -> Response:
    st = _state()
    hosts = []
    available: set[str] = set()
    for host, tags in st.client.cached("probe", st.client.probe):
        hosts.append(
            {"upstream": host.label, "reachable": tags is not None, "circuit": host.breaker.state}
        )
        for m in (tags or {}).get("models") or []:
            for key in ("model", "name"):
                if isinstance(m.get(key), str):
                    available.add(m[key])
                    available.add(m[key].removesuffix(":latest"))
    missing = [
        public
        for public, internal in st.settings.models.items()
        if internal not in available and internal.removesuffix(":latest") not in available
    ]
    ok = any(h["reachable"] for h in hosts) and not missing
    body: dict[str, Any] = {
        "status": "ready",
        "upstreams": hosts,
        "missing_models": missing,
    }
    limiter = st.limiter
    if limiter.in_use and limiter.remote:
        # Limits in an unreachable storage fail closed (503 to every limited request) or
        # open (no limits): either way a load balancer should know.
        reachable = limiter.storage_problem() is None
        body["rate_limit_storage"] = {
            "reachable": reachable,
            "on_error": "open" if limiter.fail_open else "closed",
        }
        ok = ok and (reachable or limiter.fail_open)
    body["status"] = "ready" if ok else "not_ready"
    return _json_response(body, 200 if ok else 503)


def metrics() -> Response:
    return _state().metrics.render()
