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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, Response, current_app, g, request
from gunicorn.http.errors import ParseException

from . import translate
from .allowlist import client_ip, in_networks, parse_ip
from .audit import AuditRecord
from .auth import Identity, extract_keys
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
    is_anthropic_path,
)
from .state import GatewayState
from .upstream import UpstreamStream

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
OPEN_ENDPOINTS = {"health"}  # liveness says nothing about the deployment: no gate
# The API dialect each endpoint speaks (the audit line records it).
DIALECTS = {
    "chat_completions": "openai-chat",
    "completions": "openai-completions",
    "responses": "openai-responses",
    "get_response": "openai-responses",
    "messages": "anthropic-messages",
    "count_tokens": "anthropic-messages",
    "embeddings": "openai-embeddings",
    "list_models": "models",
    "get_model": "models",
}
API_ENDPOINTS = set(DIALECTS)
# The endpoints whose requests count against the rate limits (count_tokens and lookups do not).
RATED_ENDPOINTS = {"chat_completions", "completions", "responses", "messages", "embeddings"}
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
    output_lines: int = 0  # native lines with output: ≈ tokens, when Ollama's count never came


def _state() -> GatewayState:
    return current_app.extensions["qwengw"]  # type: ignore[no-any-return]


def _ctx() -> RequestCtx:
    return g.qwengw  # type: ignore[no-any-return]


# Built once: json.dumps with any option builds a new encoder per call (~1.5 µs a chunk).
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_ENCODE_ASCII = json.JSONEncoder(separators=(",", ":")).encode


def _json_dumps(obj: Any) -> bytes:
    text = _ENCODE(obj)
    try:
        return text.encode()
    except UnicodeEncodeError:
        # A lone surrogate ("\\udc80" in the request, echoed back): escaped, still valid JSON.
        return _ENCODE_ASCII(obj).encode()


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
    bp.add_url_rule("/v1/completions", "completions", completions, methods=["POST"])
    bp.add_url_rule("/v1/responses", "responses", responses, methods=["POST"])
    bp.add_url_rule(
        "/v1/responses/<path:response_id>", "get_response", get_response, methods=["GET", "DELETE"]
    )
    bp.add_url_rule("/v1/messages", "messages", messages, methods=["POST"])
    bp.add_url_rule("/v1/messages/count_tokens", "count_tokens", count_tokens, methods=["POST"])
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
    st.metrics.request_started(request.path)
    endpoint = (request.endpoint or "").rsplit(".", 1)[-1]
    if endpoint in OPEN_ENDPOINTS:
        return
    record.dialect = DIALECTS.get(endpoint)
    if s.whitelist.enabled and not in_networks(ip, s.whitelist.ips):
        raise Forbidden("ip not allowed", code="ip_not_allowed")
    if endpoint in API_ENDPOINTS and s.auth.enabled:
        names = [s.auth.header_key]
        if is_anthropic_path(request.path) and s.auth.header_key.lower() != "x-api-key":
            names.append("x-api-key")  # what the Anthropic SDKs send with an API key
        try:
            presented = extract_keys(request.headers, names)
            ctx.identity = st.keyring.authenticate(presented, names)
        except Unauthorized:
            # A 429 instead when this IP has failed too often already.
            _limited(st, lambda: st.limiter.auth_failed(_auth_ip(ctx)))
            st.metrics.auth_rejected()
            raise
        record.key_id = ctx.identity.key_id
        if s.auth.user_header:
            user = request.headers.get(s.auth.user_header)
            record.user = user[:128] if user else None
    api = endpoint in API_ENDPOINTS
    max_body = s.request.max_body_bytes
    if request.content_length is not None and request.content_length > max_body:
        if api:
            _limited(st, lambda: _check_caller(st, ctx, slot=False))  # a blocked IP hears 429
        raise PayloadTooLarge(f"request body too large, max {max_body} bytes")
    # A chunked body has no length to check up front: reading stops one byte past the limit,
    # and _json_body turns "more than the limit" into the same 413.
    request.max_content_length = max_body + 1
    if api:
        # One storage round trip: the failed-auth block, and for a POST the in-flight slot,
        # held while the body arrives (a key cannot park more bodies than its concurrency
        # allows, nor any longer than client.body_timeout), and the request counted against
        # the rate. Counting before the body is read means an invalid request uses up rate, as
        # on OpenAI's API ("unsuccessful requests contribute to your per-minute limit"); it
        # keeps Redis to one round trip per admission.
        post = request.method == "POST"
        rated = post and endpoint in RATED_ENDPOINTS and s.rate_limit.enabled
        _limited(st, lambda: _check_caller(st, ctx, slot=post, rate=rated))
        if post:
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


def _identity(ctx: RequestCtx) -> str:
    return ctx.identity.key_id if ctx.identity else f"ip:{ctx.record.client_ip}"


def _auth_ip(ctx: RequestCtx) -> str:
    return ctx.record.client_ip or "unknown"


def _check_caller(st: GatewayState, ctx: RequestCtx, slot: bool, rate: bool = False) -> None:
    """The failed-auth block for this IP (auth on), an in-flight slot when ``slot``, and one
    request counted against the caller's rate when ``rate`` (see ``Limiter.admit``)."""
    if ctx.slot_checked:
        return
    ctx.slot_checked = slot
    limit = None
    if slot:
        limit = (ctx.identity.max_concurrent if ctx.identity else None) or (
            st.settings.rate_limit.max_concurrent
        )
    ip = _auth_ip(ctx) if st.settings.auth.enabled else None
    identity = _identity(ctx)
    admission = st.limiter.admit(
        ip, identity, limit, rate=rate, key_id=ctx.identity.key_id if ctx.identity else None
    )
    if admission.slot:
        ctx.slot = identity
    if admission.decision:
        ctx.decision_headers = admission.decision.headers()


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
    if is_anthropic_path(request.path):
        resp.headers["request-id"] = ctx.record.request_id  # where the Anthropic SDKs look
    for name, value in ctx.decision_headers.items():
        resp.headers.setdefault(name, value)
    if not ctx.streaming:
        ctx.record.status = resp.status_code
        if (
            resp.status_code >= 400
            and ctx.record.error_code is None  # not one of ours (a host app's own error page)
            and resp.mimetype == "application/json"
        ):
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
        rec.error_code = rec.error_code or ClientGone.code  # as a non-streamed one records it
    if rec.completion_tokens is None and ctx.output_lines:
        rec.completion_tokens = ctx.output_lines  # cut short: the tokens seen so far
    elif rec.prompt_tokens:
        st.tokens.observe(rec.model, rec.prompt_chars, rec.prompt_tokens)
    rec.duration_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
    st.metrics.request_finished(rec)
    if st.audit is not None:  # it leaves housekeeping out unless audit.housekeeping is on
        st.audit.write(rec)


# --------------------------------------------------------------------------- generation


def _json_body() -> Any:
    _read_body(_state().settings.client.body_timeout)  # read in the gate already: cached
    data = request.get_data(cache=True)
    if not data:
        raise InvalidRequest("the request body is required (JSON)")
    max_body = _state().settings.request.max_body_bytes
    if len(data) > max_body:
        raise PayloadTooLarge(f"request body too large, max {max_body} bytes")
    try:
        # NaN and Infinity are not JSON: refuse them here rather than forward them to Ollama.
        return json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: 100,000 nested brackets
        raise InvalidRequest("the request body is not valid JSON") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _bounds(st: GatewayState) -> translate.Bounds:
    r = st.settings.request
    return translate.Bounds(r.max_prompt_chars, r.max_messages, r.max_tools, r.max_stop)


def _admit_call(st: GatewayState, ctx: RequestCtx, call: translate.NativeCall) -> None:
    """A valid request: record it, bound its size, watch its client (its limits were taken in
    the gate)."""
    rec = ctx.record
    rec.model, rec.stream = call.public_model, call.stream
    if call.user and rec.user is None:
        rec.user = call.user
    rec.prompt_chars = translate.check_bounds(call, _bounds(st))
    _watch_client(ctx)


def _open_upstream(st: GatewayState, ctx: RequestCtx, call: translate.NativeCall) -> UpstreamStream:
    """Start the native stream. A dialect whose clients always ask for thinking (Claude Code)
    gets it dropped for a model that cannot think, as Ollama's own layer does."""
    payload = call.payload
    if call.relax_think and payload.get("think") and payload["model"] in st.no_thinking:
        payload = {k: v for k, v in payload.items() if k != "think"}
    try:
        up = st.client.stream(
            call.path, payload, request_id=ctx.record.request_id, public_model=call.public_model
        )
    except InvalidRequest as err:
        if not (call.relax_think and err.code == "thinking_not_supported"):
            raise
        st.no_thinking.add(payload["model"])
        payload = {k: v for k, v in payload.items() if k != "think"}
        up = st.client.stream(
            call.path, payload, request_id=ctx.record.request_id, public_model=call.public_model
        )
    ctx.upstream = up
    ctx.record.upstream = up.host.label
    return up


def _lines(up: UpstreamStream, ctx: RequestCtx) -> Iterator[dict[str, Any]]:
    """Upstream lines, noting for the audit: time to first output, tokens (Ollama's counts; the
    lines with output seen so far stand in when the answer is cut short, see ``_complete``)."""
    rec = ctx.record
    for line in up:
        thinking, content, calls = translate.line_parts(line)
        if thinking or content or calls:
            ctx.output_lines += 1
            if rec.ttft_ms is None:
                rec.ttft_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
        if line.get("done"):
            if rec.ttft_ms is None:
                rec.ttft_ms = round((time.perf_counter() - ctx.started) * 1000, 2)
            rec.prompt_tokens, rec.completion_tokens = translate.usage_counts(line)
        yield line


def _sse(obj: Any) -> bytes:
    return b"data: " + _json_dumps(obj) + b"\n\n"


def _sse_named(obj: Any) -> bytes:
    # Anthropic and Responses events: the SDKs dispatch on the `event:` line (= data.type).
    return b"event: " + obj["type"].encode() + b"\ndata: " + _json_dumps(obj) + b"\n\n"


def _generate(
    call: translate.NativeCall,
    answer: Callable[[Iterable[dict[str, Any]]], dict[str, Any]],
    streamer: Callable[[], translate.Streamer],
) -> Response:
    """The one path every generating endpoint takes, whatever its dialect.

    ``answer`` folds the native lines into one response body; ``streamer`` makes the dialect's
    streaming state machine. Both are called after admission (``ctx.record`` is filled in).
    """
    st, ctx = _state(), _ctx()
    _admit_call(st, ctx, call)
    up = _open_upstream(st, ctx, call)
    lines = translate.apply_tool_policy(_lines(up, ctx), call.tool_policy)
    if not call.stream:
        result = answer(lines)
        _stop_watching(ctx)
        return _json_response(result)

    ctx.streaming = True
    rec = ctx.record
    rec.status = 200
    machine = streamer()
    frame = _sse_named if machine.named_events else _sse

    def generate() -> Iterator[bytes]:
        try:
            for event in machine.start():
                yield frame(event)
            for line in lines:
                for event in machine.feed(line):
                    yield frame(event)
                if getattr(machine, "finished", False):
                    break  # e.g. a stop sequence matched: the answer is complete
            if machine.done_marker:
                yield machine.done_marker
        except ClientGone:
            return  # nobody is listening; _complete records the cancellation
        except GatewayError as err:
            # Headers are gone already: the error travels in the stream, in the dialect's shape.
            rec.error_code = err.code
            rec.status = err.status
            for event in machine.fail(err):
                yield frame(event)
            if machine.done_marker and machine.done_after_error:
                yield machine.done_marker
        finally:
            _stop_watching(ctx)
            up.close()
        ctx.finished = True

    return Response(generate(), mimetype="text/event-stream", headers=SSE_HEADERS)


# --------------------------------------------------------------------------- views


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def chat_completions() -> Response:
    st = _state()
    req = translate.chat_request_to_ollama(_json_body(), st.settings.models, _bounds(st))
    completion_id, created = _new_id("chatcmpl-"), int(time.time())
    return _generate(
        req.call,
        lambda lines: translate.aggregate_chat(
            lines,
            completion_id=completion_id,
            created=created,
            model=req.public_model,
            legacy_functions=req.legacy_functions,
        ),
        lambda: translate.ChatStream.for_request(req, completion_id, created),
    )


def completions() -> Response:
    st = _state()
    req = translate.completion_request(_json_body(), st.settings.models, _bounds(st))
    completion_id, created = _new_id("cmpl-"), int(time.time())
    model = req.call.public_model
    return _generate(
        req.call,
        lambda lines: translate.aggregate_completion(
            lines, completion_id=completion_id, created=created, model=model
        ),
        lambda: translate.CompletionStream(completion_id, created, model, req.include_usage),
    )


def responses() -> Response:
    st = _state()
    req = translate.responses_request(_json_body(), st.settings.models, _bounds(st))
    response_id, created = _new_id("resp_"), int(time.time())

    def stream() -> translate.ResponsesStream:
        return translate.ResponsesStream(response_id, created, req.call.public_model, req.echo)

    return _generate(req.call, lambda lines: translate.aggregate_response(lines, stream()), stream)


def get_response(response_id: str) -> Response:
    raise translate.response_not_found(response_id)  # stateless: nothing is ever stored


def _input_tokens(st: GatewayState, model: str, chars: int | None) -> int:
    return st.tokens.estimate(model, chars or 0)


def messages() -> Response:
    st, ctx = _state(), _ctx()
    req = translate.messages_request(_json_body(), st.settings.models, _bounds(st))
    model, message_id = req.call.public_model, translate.random_id("msg_")

    def stream() -> translate.MessagesStream:
        estimate = _input_tokens(st, model, ctx.record.prompt_chars)
        return translate.MessagesStream(message_id, model, estimate, req.stop_sequences)

    return _generate(req.call, lambda lines: translate.aggregate_message(lines, stream()), stream)


def count_tokens() -> Response:
    """An estimate from the prompt's characters (see tokens.py); Ollama is not called."""
    st, ctx = _state(), _ctx()
    req = translate.messages_request(_json_body(), st.settings.models, _bounds(st), counting=True)
    ctx.record.model = req.call.public_model
    chars = translate.check_bounds(req.call, _bounds(st))
    ctx.record.prompt_chars = chars
    return _json_response({"input_tokens": _input_tokens(st, req.call.public_model, chars)})


def embeddings() -> Response:
    st, ctx = _state(), _ctx()
    s = st.settings
    req = translate.embeddings_request_to_ollama(_json_body(), s.models, s.request.max_inputs)
    _admit_call(st, ctx, req.call)
    native = st.client.call_json(
        "POST",
        "/api/embed",
        req.payload,
        request_id=ctx.record.request_id,
        public_model=req.public_model,
    )
    _stop_watching(ctx)
    result = translate.embeddings_response(native, req)
    ctx.record.prompt_tokens = result["usage"]["prompt_tokens"]
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
    return _json_response(translate.model_page(_model_list()))


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
