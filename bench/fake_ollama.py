"""A fast fake Ollama for the benchmark: raw sockets on gevent's loop, pre-built responses.

It must never be the bottleneck, so it does almost nothing per request: read the head and the
body, look at the path and the model name, and send bytes built at start-up. ``POST /api/chat``
always answers in Ollama's streaming form (chunked NDJSON), as the gateway always asks for it.

* model ``fast``: the whole answer (2 content lines + the done line) in one write;
* model ``long``: 500 content lines, each written on its own 2 ms apart (CPU per chunk);
* model ``slow``: ``--chunks`` content lines ``--chunk-delay`` seconds apart (the first at once),
  then the done line. That is a token stream a client can time.

``POST /api/generate`` answers model ``fast`` the same way, in its own line shape (legacy
completions). ``GET /api/tags`` and ``/api/version`` answer too, so the gateway's ``/ready`` works.
Run: ``python -m bench.fake_ollama --port 11435`` (prints ``ready`` when listening).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys

from gevent import sleep
from gevent.server import StreamServer

MAX_HEAD = 65536
LONG_CHUNKS = 500
LONG_GAP = 0.002  # seconds between the lines of a `long` stream: writes stay apart


def _line(model: str, content: str, done: bool = False) -> bytes:
    obj: dict[str, object] = {
        "model": model,
        "created_at": "2026-11-24T12:00:00.000000Z",
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        obj.update(
            {
                "done_reason": "stop",
                "total_duration": 123456789,
                "load_duration": 1234567,
                "prompt_eval_count": 11,
                "prompt_eval_duration": 2345678,
                "eval_count": 8,
                "eval_duration": 98765432,
            }
        )
    return json.dumps(obj).encode() + b"\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
    b"Date: Tue, 24 Nov 2026 12:00:00 GMT\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def _json_response(status: str, obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return (
        b"HTTP/1.1 %s\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status.encode(), len(body), body)
    )


class Responses:
    """Every byte string the fake sends, built once."""

    def __init__(self, chunks: int) -> None:
        self.fast = (
            STREAM_HEAD
            + _chunk(
                _line("fast", "Hello") + _line("fast", " world") + _line("fast", "", done=True)
            )
            + b"0\r\n\r\n"
        )
        generate = [
            json.loads(line)
            for line in (_line("fast", "Hello"), _line("fast", " world"), _line("fast", "", True))
        ]
        for line in generate:  # /api/generate lines carry the text at the top level
            line["response"] = line.pop("message")["content"]
        self.fast_generate = (
            STREAM_HEAD
            + _chunk(b"".join(json.dumps(line).encode() + b"\n" for line in generate))
            + b"0\r\n\r\n"
        )
        self.slow_lines = [_chunk(_line("slow", f" tok{i}")) for i in range(chunks)]
        self.slow_tail = _chunk(_line("slow", "", done=True)) + b"0\r\n\r\n"
        # model `long`: LONG_CHUNKS token lines, each its own write (as Ollama writes tokens)
        self.long_lines = [_chunk(_line("long", f" t{i}")) for i in range(LONG_CHUNKS)]
        self.long_tail = _chunk(_line("long", "", done=True)) + b"0\r\n\r\n"
        models = [
            {
                "name": m,
                "model": m,
                "modified_at": "2026-11-24T12:00:00Z",
                "size": 1,
                "digest": "0" * 64,
                "details": {"family": "bench"},
            }
            for m in ("fast", "slow")
        ]
        self.tags = _json_response("200 OK", {"models": models})
        self.version = _json_response("200 OK", {"version": "0.12.6"})
        self.not_found = _json_response("404 Not Found", {"error": "model not found"})


class FakeOllama:
    def __init__(self, chunks: int, chunk_delay: float) -> None:
        self.r = Responses(chunks)
        self.delay = chunk_delay

    def handle(self, sock: socket.socket, _addr: object) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = sock.recv(65536)
                    if not data or len(buf) > MAX_HEAD:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                method, path = lines[0].split(b" ", 2)[:2]
                length = 0
                close = False
                for h in lines[1:]:
                    name, _, value = h.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                while len(buf) < length:
                    data = sock.recv(65536)
                    if not data:
                        return
                    buf += data
                body, buf = buf[:length], buf[length:]
                self.respond(sock, method, path, body)
                if close:
                    return
        except OSError:
            return
        finally:
            sock.close()

    def respond(self, sock: socket.socket, method: bytes, path: bytes, body: bytes) -> None:
        r = self.r
        if method == b"POST" and path == b"/api/chat":
            if b'"model": "slow"' in body or b'"model":"slow"' in body:
                sock.sendall(STREAM_HEAD + r.slow_lines[0])
                for chunk in r.slow_lines[1:]:
                    sleep(self.delay)
                    sock.sendall(chunk)
                sleep(self.delay)
                sock.sendall(r.slow_tail)
            elif b'"model": "fast"' in body or b'"model":"fast"' in body:
                sock.sendall(r.fast)
            elif b'"model": "long"' in body or b'"model":"long"' in body:
                sock.sendall(STREAM_HEAD)
                for chunk in r.long_lines:
                    sock.sendall(chunk)
                    sleep(LONG_GAP)
                sock.sendall(r.long_tail)
            else:
                sock.sendall(r.not_found)
        elif method == b"POST" and path == b"/api/generate":
            fast = b'"model": "fast"' in body or b'"model":"fast"' in body
            sock.sendall(r.fast_generate if fast else r.not_found)
        elif path == b"/api/tags":
            sock.sendall(r.tags)
        elif path in (b"/api/version", b"/"):
            sock.sendall(r.version)
        else:
            sock.sendall(r.not_found)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=11435)
    ap.add_argument("--chunks", type=int, default=8)
    ap.add_argument("--chunk-delay", type=float, default=0.25)
    args = ap.parse_args(argv)
    fake = FakeOllama(args.chunks, args.chunk_delay)
    server = StreamServer((args.host, args.port), fake.handle, backlog=4096)
    server.init_socket()
    print("ready", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    sys.exit(0)


if __name__ == "__main__":
    main()
