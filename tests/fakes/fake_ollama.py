"""A fake Ollama that speaks the native wire format over real HTTP on loopback.

NDJSON streaming with chunked transfer encoding and the real field names, a final ``done`` line
with counts, ``{"error": ...}`` bodies with the real statuses. It records what it received and
notices when a streaming client goes away. Switches (``FakeOllama.behave``) make it slow, broken,
busy, thinking or calling tools.

Run alone: ``python tests/fakes/fake_ollama.py --port 11434`` (handy for trying the gateway).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODELS = ["qwen3:32b", "qwen3:0.6b", "nomic-embed-text:latest"]


@dataclass
class Behaviour:
    reply: str = "Hello from the fake Ollama!"
    thinking: str | None = None  # streamed as message.thinking before the content
    tool_calls: list[dict[str, Any]] | None = None  # native form, arguments as objects
    tool_calls_on_done: bool = False  # put the tool calls on the final done line
    done_reason: str = "stop"
    status: int | None = None  # answer this status with {"error": error} before streaming
    error: str = "boom"
    first_token_delay: float = 0.0  # seconds before the status line (Ollama sends nothing earlier)
    chunk_delay: float = 0.0  # seconds between lines
    cut_after: int | None = None  # close the connection after N lines, with no done line
    garbage_after: int | None = None  # send a non-JSON line after N lines, then stop
    error_after: int | None = None  # send {"error": ...} after N lines, then stop
    repeat: int = 1  # repeat the reply's words this many times (long streams)
    schema_values: dict[str, Any] = field(default_factory=dict)  # property name → value
    forced_choice: int = 0  # which `oneOf` variant a constrained answer takes
    no_thinking: bool = False  # answer 400 "does not support thinking" to `think: true`
    no_insert: bool = False  # answer 400 "does not support insert" to a `suffix`


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeState:
    behaviour: Behaviour = field(default_factory=Behaviour)
    models: list[str] = field(default_factory=lambda: list(MODELS))
    requests: list[Recorded] = field(default_factory=list)
    client_gone: list[float] = field(default_factory=list)  # monotonic times a stream client left
    streams_started: int = 0
    streams_finished: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- plumbing
    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return raw.decode("utf-8", "replace")

    def _record(self, body: Any) -> None:
        st = self.server.state
        with st.lock:
            st.requests.append(Recorded(self.command, self.path, dict(self.headers), body))

    def _json(self, status: int, obj: Any) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _client_left(self) -> bool:
        """True when the peer closed its end (readable with nothing to read)."""
        r, _, _ = select.select([self.connection], [], [], 0)
        if not r:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _wait(self, seconds: float) -> None:
        """Sleep, but notice a client that leaves meanwhile (like Go's background read)."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if self._client_left():
                raise ClientGone
            if left <= 0:
                return
            select.select([self.connection], [], [], min(left, 0.02))

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except OSError:
            raise ClientGone from None

    # -- routes
    def do_GET(self) -> None:
        self._record(None)
        st = self.server.state
        if self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/version":
            self._json(200, {"version": "0.12.6"})
        elif self.path == "/api/tags":
            self._json(
                200,
                {
                    "models": [
                        {
                            "name": m,
                            "model": m,
                            "modified_at": "2025-05-10T08:06:48.63-07:00",
                            "size": 20201253588,
                            "digest": "0" * 64,
                            "details": {
                                "format": "gguf",
                                "family": "qwen3",
                                "parameter_size": "32.8B",
                                "quantization_level": "Q4_K_M",
                            },
                        }
                        for m in st.models
                    ]
                },
            )
        elif self.path == "/api/ps":
            self._json(200, {"models": []})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        st = self.server.state
        b = st.behaviour
        if not isinstance(body, dict):
            return self._json(400, {"error": "missing request body"})
        model = body.get("model")
        if self.path not in ("/api/chat", "/api/generate", "/api/embed", "/api/show"):
            return self._json(404, {"error": "404 page not found"})
        if not model:
            return self._json(400, {"error": "model is required"})
        if model not in st.models and f"{model}:latest" not in st.models:
            return self._json(404, {"error": f"model '{model}' not found"})
        try:
            if b.first_token_delay:
                self._wait(b.first_token_delay)
            if b.status is not None:
                return self._json(b.status, {"error": b.error})
            if self.path == "/api/embed":
                return self._embed(body)
            if self.path == "/api/show":
                return self._json(200, {"capabilities": ["completion", "tools", "thinking"]})
            if body.get("think") and b.no_thinking:
                return self._json(400, {"error": f'"{model}" does not support thinking'})
            if body.get("suffix") and b.no_insert:
                return self._json(
                    400, {"error": f"registry.ollama.ai/library/{model} does not support insert"}
                )
            self._chat(body, b)
        except ClientGone:
            with st.lock:
                st.client_gone.append(time.monotonic())
            self.close_connection = True

    def _embed(self, body: dict[str, Any]) -> None:
        inputs = body["input"] if isinstance(body.get("input"), list) else [body.get("input")]
        vectors = [
            [round(0.1 * (i + 1) + 0.01 * j, 4) for j in range(4)] for i in range(len(inputs))
        ]
        self._json(
            200,
            {
                "model": body["model"],
                "embeddings": vectors,
                "total_duration": 1000,
                "load_duration": 10,
                "prompt_eval_count": 3 * len(inputs),
            },
        )

    def _lines(self, body: dict[str, Any], b: Behaviour) -> list[dict[str, Any]]:
        model = body["model"]
        reply = b.reply
        if isinstance(body.get("format"), dict):  # constrained output: JSON the schema admits
            reply = json.dumps(schema_value(body["format"], body["format"], b, ""))
        words = reply.split(" ") * b.repeat
        pieces = [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0]
        lines: list[dict[str, Any]] = []
        if b.thinking:
            for t in b.thinking.split(" "):
                lines.append({"message": {"role": "assistant", "content": "", "thinking": t + " "}})
        for p in pieces:
            lines.append({"message": {"role": "assistant", "content": p}})
        if b.tool_calls and not b.tool_calls_on_done:
            lines.append(
                {"message": {"role": "assistant", "content": "", "tool_calls": b.tool_calls}}
            )
        final: dict[str, Any] = {"message": {"role": "assistant", "content": ""}}
        if b.tool_calls and b.tool_calls_on_done:
            final["message"]["tool_calls"] = b.tool_calls
        final.update(
            {
                "done": True,
                "done_reason": b.done_reason,
                "total_duration": 123456789,
                "load_duration": 1234567,
                "prompt_eval_count": 11,
                "prompt_eval_duration": 2345678,
                "eval_count": len(lines),
                "eval_duration": 98765432,
            }
        )
        out = []
        for line in lines:
            out.append({"model": model, "created_at": _now(), **line, "done": False})
        out.append({"model": model, "created_at": _now(), **final})
        if self.path == "/api/generate":  # text and thinking at the top level, no tool calls
            for line in out:
                msg = line.pop("message")
                line["response"] = msg.get("content", "")
                if msg.get("thinking"):
                    line["thinking"] = msg["thinking"]
        return out

    def _chat(self, body: dict[str, Any], b: Behaviour) -> None:
        st = self.server.state
        lines = self._lines(body, b)
        if body.get("stream") is False:
            agg = dict(lines[-1])
            agg["message"] = {
                "role": "assistant",
                "content": "".join(ln["message"].get("content", "") for ln in lines),
            }
            return self._json(200, agg)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        with st.lock:
            st.streams_started += 1
        for i, line in enumerate(lines):
            if i and b.chunk_delay:
                self._wait(b.chunk_delay)
            if b.cut_after is not None and i == b.cut_after:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if b.garbage_after is not None and i == b.garbage_after:
                self._chunk(b"this is not json\n")
                break
            if b.error_after is not None and i == b.error_after:
                self._chunk(json.dumps({"error": b.error}).encode() + b"\n")
                break
            self._chunk(json.dumps(line).encode() + b"\n")
        self._chunk(b"")
        with st.lock:
            st.streams_finished += 1


def schema_value(schema: Any, root: dict[str, Any], b: Behaviour, name: str) -> Any:
    """A value the JSON schema admits, as a grammar-constrained model would write one."""
    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            if part:
                target = target[part]
        return schema_value(target, root, b, name)
    if name in b.schema_values:
        return b.schema_values[name]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    for key in ("oneOf", "anyOf"):
        if key in schema:
            options = schema[key]
            return schema_value(options[min(b.forced_choice, len(options) - 1)], root, b, name)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: schema_value(v, root, b, k) for k, v in props.items()}
    if kind == "array":
        return [schema_value(schema.get("items") or {}, root, b, name)]
    return {"string": "x", "integer": 1, "number": 1.5, "boolean": True}.get(kind)


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int]) -> None:
        super().__init__(addr, Handler)
        self.state = FakeState()


class FakeOllama:
    """Start with ``FakeOllama().start()``; ``url`` is its base URL."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, tls: ssl.SSLContext | None = None
    ) -> None:
        """``tls``: serve HTTPS with this server context (Ollama behind a TLS proxy); the URL
        then names ``localhost``, which the test certificate is for."""
        self.server = FakeServer((host, port))
        self.tls = tls
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        if self.tls is not None:
            return f"https://localhost:{port}"
        return f"http://{host}:{port}"

    @property
    def state(self) -> FakeState:
        return self.server.state

    def start(self) -> FakeOllama:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def behave(self, **changes: Any) -> None:
        self.state.behaviour = replace(Behaviour(), **changes)

    def reset(self) -> None:
        st = self.state
        with st.lock:
            st.behaviour = Behaviour()
            st.models = list(MODELS)
            st.requests.clear()
            st.client_gone.clear()
            st.streams_started = st.streams_finished = 0

    def chat_requests(self) -> list[Recorded]:
        return [r for r in self.state.requests if r.path == "/api/chat"]

    def generate_requests(self) -> list[Recorded]:
        return [r for r in self.state.requests if r.path == "/api/generate"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11434)
    ap.add_argument("--chunk-delay", type=float, default=0.05)
    args = ap.parse_args()
    fake = FakeOllama(args.host, args.port)
    fake.behave(chunk_delay=args.chunk_delay)
    print(f"fake Ollama on {fake.url}", flush=True)
    fake.server.serve_forever()


if __name__ == "__main__":
    main()
