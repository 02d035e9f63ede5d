"""Reference apps for the floor under the gateway's latency, on the same gunicorn gevent worker.

``/raw``: a bare WSGI callable; ``/hello``: Flask returning fixed JSON; ``/proxy``: Flask that
reads the JSON body, makes the same upstream call as the gateway with urllib3 (pooled, one
``urlopen`` on a cached pool), reads the whole answer and returns it; ``/relay``: the same call
for the fake's 500-line stream, each piece passed on as urllib3 reads it (the floor under CPU
per streamed chunk). Nothing else: no auth, limits, audit, metrics or translation.
``FAKE_OLLAMA`` is the upstream base URL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from typing import Any

import urllib3
from flask import Flask, Response, request

flask_app = Flask("floor")
_pool = urllib3.PoolManager(maxsize=256, retries=False).connection_from_url(
    os.environ.get("FAKE_OLLAMA", "http://127.0.0.1:11434")
)


def _chat_body(model: str) -> bytes:
    """The native request the gateway sends for one of the fake's models."""
    return json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "stream": True}
    ).encode()


_BODY = _chat_body("fast")


@flask_app.post("/hello")
def hello() -> Response:
    request.get_json(force=True)
    return Response(b'{"ok":true}', mimetype="application/json")


def _chat(body: bytes) -> urllib3.BaseHTTPResponse:
    return _pool.urlopen(
        "POST",
        "/api/chat",
        body=body,
        headers={"Content-Type": "application/json"},
        preload_content=False,
        redirect=False,
    )


@flask_app.post("/proxy")
def proxy() -> Response:
    request.get_json(force=True)
    resp = _chat(_BODY)
    data = resp.read()
    resp.release_conn()
    return Response(data, mimetype="application/json")


_LONG = _chat_body("long")  # the fake's 500-line stream


@flask_app.post("/relay")
def relay() -> Response:
    request.get_json(force=True)
    resp = _chat(_LONG)

    def pieces() -> Iterable[bytes]:
        while data := resp.read1(65536):
            yield data
        resp.release_conn()

    return Response(pieces(), mimetype="application/x-ndjson")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ["PATH_INFO"] == "/raw":
        environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "11")])
        return [b'{"ok":true}']
    return flask_app(environ, start_response)
