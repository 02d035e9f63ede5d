"""Gateway overhead measured against the upstream itself, on this machine, in one run.

Starts the fast fake Ollama (bench/fake_ollama.py, its own process and loop), the gateway
under ``gunicorn wsgi:app`` (2 gevent workers) with auth, allowlist, rate and concurrency limits,
audit log and metrics all on, and the floor apps (bench/floor_app.py, 2 workers), then measures
the gateway path and the direct path side by side, interleaved:

1. non-streaming added latency (gateway − direct), p50/p99, sequential, keep-alive;
2. the floor: bare gunicorn, Flask, and a Flask + urllib3 proxy; then that proxy and the
   gateway in one loop (with Redis: and a ``memory://`` gateway beside it): the targets use it;
3. throughput at concurrency 1, 16, 64 (requests/s, both paths), gateway CPU per request, and
   the floor proxy's CPU per request at 16;
4. 200 simultaneous streams (8 chunks, 250 ms apart): completed, TTFT p50/p99 both paths;
5. CPU per streamed chunk: 16 streams × 500 chunks, through the gateway and direct;
6. RSS of each gunicorn process after the run.

``--redis`` repeats it all with the limits in Redis. ``--controls`` also measures what each
control costs (the gateway with one control on, beside one with every control off).
``--profile`` also records the gateway workers with py-spy during a throughput run. Each run
ends with the targets of issue #14, met or missed, as ratios within the run.

Run from the repo root: ``python -m bench.run [--redis] [--controls] [--profile] [--no-write]``.
It prints the tables and writes docs/benchmarks.md (with bench/notes.md appended); the results
are kept in a JSON file, and ``--render FILE`` writes the doc again from them. Loopback only;
about 2–3 minutes per mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gevent
import gevent.socket as gsocket
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
KEYS = [f"bench-key-{i:02d}" for i in range(16)]  # requests rotate over 16 callers
CHUNKS, CHUNK_DELAY = 8, 0.25
STREAMS = 200
FLOOR_BODY = b'{"model":"fast","messages":[{"role":"user","content":"Say hello."}]}'

# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def gateway_config(tmp: Path, ollama_port: int, storage: str) -> dict[str, Any]:
    """Every control on, as the production example has them (limits high enough not to trip)."""
    return {
        "listen": "127.0.0.1:18789",  # overridden by QWENGW_BIND
        "ollama_api": f"http://127.0.0.1:{ollama_port}",
        "log_level": "warning",
        "workers": 2,
        "models": {"fast": "fast", "slow": "slow", "long": "long"},
        "auth": {
            "enabled": True,
            "header_key": "X-Api-Key",
            "keys": [{"id": k, "sha256": hashlib.sha256(k.encode()).hexdigest()} for k in KEYS],
        },
        "whitelist": {
            "enabled": True,
            "ips": ["10.0.0.0/8", "127.0.0.1/32"],
            "trusted_proxies": ["127.0.0.1"],
        },
        # Moving-window lists as short as a production limit's (60/minute: ≤ 60 entries), while
        # never tripping: the 16 keys see ~100 requests/s each at most. Both storages drop
        # entries once out of the 1 s window (limits' own Redis script kept a list until it
        # held `max_requests`: with 100,000, tens of thousands of entries by the end of a run).
        "rate_limit": {
            "enabled": True,
            "max_requests": 500,
            "window_seconds": 1,
            "storage": storage,
            "on_storage_error": "closed",
            "max_concurrent": 1000,
        },
        "audit": {"enabled": True, "path": str(tmp / "audit.log")},
        "metrics": {"enabled": True},
    }


# "What each control costs": the gateway with every control off, then with one control on.
CONTROLS_OFF: dict[str, Any] = {
    "auth": {"enabled": False},
    "whitelist": {"enabled": False},
    "rate_limit": {"enabled": False, "max_concurrent": None},
    "audit": {"enabled": False},
    "metrics": {"enabled": False},
}
CONTROL_VARIANTS: dict[str, dict[str, Any]] = {
    "every control off": {},
    "API keys + failed-auth check (16 hashed keys)": {"auth": None},
    "allowlist behind a trusted proxy": {"whitelist": None},
    # Auth is off in this row, so every request counts against one client IP: a limit this loop
    # cannot reach (~1,500 requests/s), still one entry per request per window.
    "rate limit (moving window)": {"rate_limit": {"max_concurrent": None, "max_requests": 5000}},
    "concurrency cap per key": {"rate_limit": {"enabled": False}},
    "audit log": {"audit": None},
    "metrics (multiprocess)": {"metrics": None},
    "every control on": {k: None for k in CONTROLS_OFF},
}


def variant_config(base: dict[str, Any], keep: dict[str, Any]) -> dict[str, Any]:
    """``base`` with every control off except those in ``keep`` (None: as in base; a dict:
    base's section updated with it)."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, off in CONTROLS_OFF.items():
        if section in keep:
            cfg[section].update(keep[section] or {})
        else:
            cfg[section].update(off)
    return cfg


@dataclass
class Stack:
    tmp: Path
    storage: str
    keep: dict[str, Any] | None = None  # a control variant; None: every control on
    with_floor: bool = True
    fake_port: int = field(default_factory=free_port)
    gw_port: int = field(default_factory=free_port)
    floor_port: int = field(default_factory=free_port)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    gunicorn: subprocess.Popen[bytes] | None = None
    floor: subprocess.Popen[bytes] | None = None
    fake: subprocess.Popen[bytes] | None = None

    def start(self, shared_fake: int | None = None) -> Stack:
        """Start the fake Ollama (or use ``shared_fake``, another stack's), the gateway, and
        the floor app."""
        if shared_fake is not None:
            self.fake_port = shared_fake
        else:
            self._start_fake()
        self._start_gateway()
        if self.with_floor:
            self._start_floor()
        self._wait_workers()
        return self

    def _start_fake(self) -> None:
        fake = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.fake_ollama",
                "--port",
                str(self.fake_port),
                "--chunks",
                str(CHUNKS),
                "--chunk-delay",
                str(CHUNK_DELAY),
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "fake.log", "ab"),
        )
        self.procs.append(fake)
        self.fake = fake
        wait_port(self.fake_port)

    def _start_gateway(self) -> None:
        cfg = self.tmp / "qwengw.yaml"
        config = gateway_config(self.tmp, self.fake_port, self.storage)
        if self.keep is not None:
            config = variant_config(config, self.keep)
        cfg.write_text(yaml.safe_dump(config))
        (self.tmp / "metrics").mkdir(exist_ok=True)
        env = {
            **os.environ,
            "QWENGW_CONFIG": str(cfg),
            "QWENGW_BIND": f"127.0.0.1:{self.gw_port}",
            "QWENGW_WORKERS": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(self.tmp / "metrics"),
            "QWENGW_MAX_REQUESTS": "0",
        }  # no recycling mid-bench
        self.gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=open(self.tmp / "gunicorn.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(self.gunicorn)
        wait_port(self.gw_port)

    def _start_floor(self) -> None:
        floor_env = {**os.environ, "FAKE_OLLAMA": f"http://127.0.0.1:{self.fake_port}"}
        self.floor = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-k",
                "gevent",
                "-w",
                "2",  # as many workers as the gateway: CPU per request compares like for like
                "--log-level",
                "warning",
                "-b",
                f"127.0.0.1:{self.floor_port}",
                "--no-control-socket",
                "bench.floor_app:app",
            ],
            cwd=ROOT,
            env=floor_env,
            stdout=open(self.tmp / "floor.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        self.procs.append(self.floor)
        wait_port(self.floor_port)

    def _wait_workers(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            len(self.workers()) < 2 or (self.floor is not None and len(self.floor_workers()) < 2)
        ):
            time.sleep(0.1)

    def workers(self) -> list[int]:
        assert self.gunicorn is not None
        return children(self.gunicorn.pid)

    def floor_workers(self) -> list[int]:
        return children(self.floor.pid) if self.floor is not None else []

    def fake_pid(self) -> int | None:
        return self.fake.pid if self.fake is not None else None

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM if p is not self.gunicorn else signal.SIGINT)
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        out += [int(c) for c in task.read_text().split()]
    return sorted(out)


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def cpu_seconds(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


# --------------------------------------------------------------------------- HTTP client

KEY_ROTATION = [0]


def gateway_request(stream: bool, model: str) -> Callable[[], bytes]:
    """An OpenAI chat request as nginx would forward it, rotating over the bench keys."""
    body = json.dumps(
        {"model": model, "stream": stream, "messages": [{"role": "user", "content": "Say hello."}]}
    ).encode()
    prebuilt = []
    for key in KEYS:
        prebuilt.append(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"X-Api-Key: %s\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n"
            b"Content-Length: %d\r\n%s\r\n%s"
            % (key.encode(), len(body), b"Connection: close\r\n" if stream else b"", body)
        )

    def make() -> bytes:
        KEY_ROTATION[0] = (KEY_ROTATION[0] + 1) % len(prebuilt)
        return prebuilt[KEY_ROTATION[0]]

    return make


def direct_request(stream: bool, model: str) -> Callable[[], bytes]:
    """The native request the gateway itself sends to Ollama (always streaming)."""
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "stream": True}
    ).encode()
    raw = (
        b"POST /api/chat HTTP/1.1\r\nHost: ollama\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s"
        % (len(body), b"Connection: close\r\n" if stream else b"", body)
    )
    return lambda: raw


class Conn:
    """One keep-alive HTTP/1.1 connection that reads Content-Length and chunked answers."""

    def __init__(self, port: int) -> None:
        self.sock = gsocket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by peer")
        self.buf += data

    def request(self, raw: bytes) -> int:
        self.sock.sendall(raw)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status = int(head[9:12])
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            while b"\r\n0\r\n\r\n" not in self.buf and not self.buf.startswith(b"0\r\n\r\n"):
                self._fill()
            end = (
                self.buf.index(b"0\r\n\r\n") + 5
                if self.buf.startswith(b"0\r\n")
                else (self.buf.index(b"\r\n0\r\n\r\n") + 7)
            )
            self.buf = self.buf[end:]
        else:
            i = lower.index(b"content-length:") + 15
            length = int(lower[i : lower.index(b"\r\n", i) if b"\r\n" in lower[i:] else None])
            while len(self.buf) < length:
                self._fill()
            self.buf = self.buf[length:]
        return status

    def close(self) -> None:
        self.sock.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


# --------------------------------------------------------------------------- phases


def latency(gw_port: int, fake_port: int, n: int) -> dict[str, Any]:
    """Sequential non-streaming requests on one keep-alive connection per path, alternating."""
    g, d = Conn(gw_port), Conn(fake_port)
    greq, dreq = gateway_request(False, "fast"), direct_request(False, "fast")
    for _ in range(200):  # warm-up: pools, imports, caches
        g.request(greq())
        d.request(dreq())
    gl, dl, bad = [], [], 0
    for i in range(n):
        order = ((g, greq, gl), (d, dreq, dl)) if i % 2 else ((d, dreq, dl), (g, greq, gl))
        for conn, req, out in order:
            raw = req()
            t = time.perf_counter()
            status = conn.request(raw)
            out.append((time.perf_counter() - t) * 1000)
            bad += status != 200
    g.close()
    d.close()
    return {
        "gateway": {"p50": pct(gl, 50), "p99": pct(gl, 99)},
        "direct": {"p50": pct(dl, 50), "p99": pct(dl, 99)},
        "added": {"p50": pct(gl, 50) - pct(dl, 50), "p99": pct(gl, 99) - pct(dl, 99)},
        "n": n,
        "errors": bad,
    }


DIALECT_BODIES = {  # the same small question in each dialect the gateway speaks
    "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Say hello."}]}),
    "messages": (
        "/v1/messages",
        {"max_tokens": 64, "messages": [{"role": "user", "content": "Say hello."}]},
    ),
    "responses": ("/v1/responses", {"input": "Say hello."}),
    "completions": ("/v1/completions", {"prompt": "Say hello."}),
}


def dialects(stack: Stack, n: int) -> dict[str, dict[str, float]]:
    """Non-streaming latency of each dialect through the gateway, interleaved request by
    request on one keep-alive connection each; every control on, as for chat."""
    raws = {}
    for key, (name, (path, extra)) in zip(KEYS, DIALECT_BODIES.items(), strict=False):
        body = json.dumps({"model": "fast", **extra}).encode()
        raws[name] = (
            b"POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            b"X-Api-Key: %s\r\nX-Forwarded-For: 10.1.2.3\r\nX-Real-IP: 10.1.2.3\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (path.encode(), key.encode(), len(body), body)
        )
    times = _interleave(
        {name: (stack.gw_port, lambda raw=raw: raw) for name, raw in raws.items()}, n
    )
    return {name: {"p50": pct(v, 50), "p99": pct(v, 99)} for name, v in times.items()}


def dialect_table(res: dict[str, Any]) -> list[str]:
    dl = res["dialects"]
    chat = dl["chat"]["p50"]
    rows = [
        "| dialect (non-streaming, through the gateway) | p50 (ms) | p99 (ms) | p50 vs chat |",
        "|---|---|---|---|",
    ]
    for name, (path, _) in DIALECT_BODIES.items():
        d = dl[name]
        diff = d["p50"] - chat
        rows.append(
            f"| `{path}` | {f1(d['p50'])} | {f1(d['p99'])} | "
            f"{'' if name == 'chat' else f'{diff * 1000:+.0f} µs'} |"
        )
    return rows


def floor(stack: Stack, n: int) -> dict[str, dict[str, float]]:
    """Latency of the reference apps (bench/floor_app.py) next to direct, request by request
    in one loop."""
    body = FLOOR_BODY
    paths: dict[str, tuple[int, Callable[[], bytes]]] = {
        "direct": (stack.fake_port, direct_request(False, "fast"))
    }
    for name in ("raw", "hello", "proxy"):
        raw = (
            b"POST /%s HTTP/1.1\r\nHost: floor\r\nContent-Type: "
            b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (name.encode(), len(body), body)
        )
        paths[name] = (stack.floor_port, lambda raw=raw: raw)
    times = _interleave(paths, n)
    return {name: {"p50": pct(v, 50), "p99": pct(v, 99)} for name, v in times.items()}


def versus(stack: Stack, tmp: Path, n: int) -> dict[str, dict[str, float]]:
    """What the targets compare, in one loop: direct, the Flask + urllib3 floor, the gateway;
    in Redis mode also a gateway with the same controls in ``memory://`` (sharing the fake),
    so that what Redis adds is measured side by side rather than across two runs."""
    floor_raw = (
        b"POST /proxy HTTP/1.1\r\nHost: floor\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(FLOOR_BODY), FLOOR_BODY)
    )
    paths: dict[str, tuple[int, Callable[[], bytes]]] = {
        "direct": (stack.fake_port, direct_request(False, "fast")),
        "proxy": (stack.floor_port, lambda: floor_raw),
        "gateway": (stack.gw_port, gateway_request(False, "fast")),
    }
    memory = None
    if not stack.storage.startswith("memory"):
        (tmp / "memory-ref").mkdir(exist_ok=True)
        memory = Stack(tmp / "memory-ref", "memory://", with_floor=False).start(stack.fake_port)
        paths["gateway in memory://"] = (memory.gw_port, gateway_request(False, "fast"))
    try:
        times = _interleave(paths, n)
        out = {name: {"p50": pct(v, 50), "p99": pct(v, 99)} for name, v in times.items()}
        if memory is not None:
            # CPU per request of both at concurrency 16, alternating, in the same minute.
            request = gateway_request(False, "fast")
            cpu = {"gateway": [0.0, 0.0], "gateway in memory://": [0.0, 0.0]}
            for name in ("gateway", "gateway in memory://") * 2:
                pids = (stack if name == "gateway" else memory).workers()
                port = stack.gw_port if name == "gateway" else memory.gw_port
                before = cpu_seconds(pids)
                rps, _ = throughput(port, request, 16, 2.0)
                cpu[name][0] += cpu_seconds(pids) - before
                cpu[name][1] += rps * 2.0
            for name, (seconds, requests) in cpu.items():
                out[name]["cpu_ms_per_req"] = 1000 * seconds / requests
    finally:
        if memory is not None:
            memory.stop()
    return out


def throughput(
    port: int, make: Callable[[], bytes], conc: int, seconds: float
) -> tuple[float, int]:
    """Closed loop: ``conc`` keep-alive clients for ``seconds``; (requests/s, non-200s)."""
    done = [0, 0]
    stop_at = [0.0]

    def client() -> None:
        conn = Conn(port)
        try:
            while time.perf_counter() < stop_at[0]:
                status = conn.request(make())
                done[0] += 1
                done[1] += status != 200
        finally:
            conn.close()

    stop_at[0] = time.perf_counter() + 0.3  # warm-up
    gevent.joinall([gevent.spawn(client) for _ in range(conc)], raise_error=True)
    done[:] = [0, 0]
    t0 = time.perf_counter()
    stop_at[0] = t0 + seconds
    gevent.joinall([gevent.spawn(client) for _ in range(conc)], raise_error=True)
    return done[0] / (time.perf_counter() - t0), done[1]


def throughput_table(stack: Stack, levels: tuple[int, ...], seconds: float) -> dict[str, Any]:
    """Per level: direct, gateway, gateway, direct (interleaved), averaged; gateway CPU/request.
    At concurrency 16 the floor proxy runs twice between them, for its CPU per request."""
    out: dict[str, Any] = {}
    greq, dreq = gateway_request(False, "fast"), direct_request(False, "fast")
    body = b'{"model":"fast","messages":[{"role":"user","content":"Say hello."}]}'
    freq = (
        b"POST /proxy HTTP/1.1\r\nHost: floor\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    for c in levels:
        g_rps, d_rps, errors, cpu, reqs = [], [], 0, 0.0, 0.0
        f_cpu, f_reqs = 0.0, 0.0
        order = ["direct", "gateway", "gateway", "direct"]
        if c == 16 and stack.with_floor:
            order = ["direct", "gateway", "floor", "floor", "gateway", "direct"]
        for path in order:
            if path == "direct":
                rps, err = throughput(stack.fake_port, dreq, c, seconds)
                d_rps.append(rps)
            elif path == "floor":
                pids = stack.floor_workers()
                before = cpu_seconds(pids)
                rps, err = throughput(stack.floor_port, lambda: freq, c, seconds)
                f_cpu += cpu_seconds(pids) - before
                f_reqs += rps * seconds
            else:
                before = cpu_seconds(stack.workers())
                rps, err = throughput(stack.gw_port, greq, c, seconds)
                cpu += cpu_seconds(stack.workers()) - before
                reqs += rps * seconds
                g_rps.append(rps)
            errors += err
        out[str(c)] = {
            "direct": statistics.mean(d_rps),
            "gateway": statistics.mean(g_rps),
            "cpu_ms_per_req": 1000 * cpu / reqs if reqs else float("nan"),
            "errors": errors,
        }
        if f_reqs:
            out[str(c)]["floor_cpu_ms_per_req"] = 1000 * f_cpu / f_reqs
    return out


def one_stream(port: int, raw: bytes, last_token: bytes, end: bytes) -> tuple[bool, float | None]:
    """(completed, TTFT ms) for one stream on its own connection; TTFT counts from connect."""
    t0 = time.perf_counter()
    ttft = None
    buf = b""
    try:
        with gevent.Timeout(30):
            sock = gsocket.create_connection(("127.0.0.1", port))
            try:
                sock.sendall(raw)
                while True:
                    data = sock.recv(65536)
                    if not data:
                        break
                    buf += data
                    if ttft is None and b"tok0" in buf:
                        ttft = (time.perf_counter() - t0) * 1000
                    if last_token in buf and end in buf:
                        break
            finally:
                sock.close()
    except (OSError, gevent.Timeout):
        return False, ttft
    ok = buf.startswith(b"HTTP/1.1 200") and last_token in buf and end in buf
    return ok, ttft


def streams(port: int, raw: bytes, end: bytes, n: int) -> dict[str, Any]:
    last = b"tok%d" % (CHUNKS - 1)
    jobs = [gevent.spawn(one_stream, port, raw, last, end) for _ in range(n)]
    gevent.joinall(jobs)
    results = [j.value for j in jobs]
    ttfts = [t for ok, t in results if t is not None]
    return {"completed": sum(ok for ok, _ in results), "ttft": ttfts}


def stream_burst(stack: Stack) -> dict[str, Any]:
    """200 simultaneous streams per path, in the order direct, gateway, gateway, direct."""
    graw = gateway_request(True, "slow")()
    draw = direct_request(True, "slow")()
    acc: dict[str, dict[str, Any]] = {
        "direct": {"completed": [], "ttft": []},
        "gateway": {"completed": [], "ttft": []},
    }
    for path in ("direct", "gateway", "gateway", "direct"):
        if path == "direct":
            r = streams(stack.fake_port, draw, b'"done": true', STREAMS)
        else:
            r = streams(stack.gw_port, graw, b"data: [DONE]", STREAMS)
        acc[path]["completed"].append(r["completed"])
        acc[path]["ttft"] += r["ttft"]
        time.sleep(0.5)
    return {
        p: {
            "completed": min(v["completed"]),
            "runs": len(v["completed"]),
            "ttft_p50": pct(v["ttft"], 50),
            "ttft_p99": pct(v["ttft"], 99),
        }
        for p, v in acc.items()
    }


def chunk_cpu(stack: Stack, n_streams: int = 16) -> dict[str, Any]:
    """CPU per streamed chunk: ``n_streams`` 500-chunk streams at once, through the gateway
    (its workers' CPU), direct (the fake's own CPU: what writing one chunk costs a gevent
    process) and through the floor app's relay (Flask + urllib3 passing pieces on unparsed: what
    any relay on this worker costs), each divided by the chunks delivered, idle CPU removed."""
    from bench.fake_ollama import LONG_CHUNKS

    def one(port: int, raw: bytes, end: bytes, marker: bytes) -> bool:
        with gevent.Timeout(60):
            sock = gsocket.create_connection(("127.0.0.1", port))
            try:
                sock.sendall(raw)
                buf = b""
                while end not in buf[-64:]:
                    data = sock.recv(65536)
                    if not data:
                        return False
                    buf += data
                return buf.count(marker) >= LONG_CHUNKS
            finally:
                sock.close()

    def measure(pids: list[int], job: Callable[[], bool]) -> dict[str, float]:
        gevent.joinall([gevent.spawn(job) for _ in range(2)])  # warm: pools, imports, caches
        idle_before, t_idle = cpu_seconds(pids), time.perf_counter()
        time.sleep(1.0)
        idle = (cpu_seconds(pids) - idle_before) / (time.perf_counter() - t_idle)
        before, t0 = cpu_seconds(pids), time.perf_counter()
        jobs = [gevent.spawn(job) for _ in range(n_streams)]
        gevent.joinall(jobs)
        took = time.perf_counter() - t0
        cpu = cpu_seconds(pids) - before - idle * took
        ok = sum(1 for j in jobs if j.value)
        return {
            "completed": ok,
            "us_per_chunk": cpu / max(1, ok * LONG_CHUNKS) * 1e6,
            "seconds": took,
        }

    graw = gateway_request(True, "long")()
    draw = direct_request(True, "long")()
    gateway = measure(
        stack.workers(),
        lambda: one(stack.gw_port, graw, b"data: [DONE]", b"chat.completion.chunk"),
    )
    fake = stack.fake_pid()
    direct = (
        measure([fake], lambda: one(stack.fake_port, draw, b"0\r\n\r\n", b'"content"'))
        if fake is not None
        else {}
    )
    relay = {}
    if stack.with_floor:
        rraw = (
            b"POST /relay HTTP/1.1\r\nHost: floor\r\nContent-Type: application/json\r\n"
            b"Connection: close\r\nContent-Length: 2\r\n\r\n{}"
        )
        relay = measure(
            stack.floor_workers(),
            lambda: one(stack.floor_port, rraw, b"0\r\n\r\n", b'"content"'),
        )
    return {
        "streams": n_streams,
        "completed": gateway["completed"],
        "us_per_chunk": gateway["us_per_chunk"],
        "seconds": gateway["seconds"],
        "direct": direct,
        "relay": relay,
    }


def rss(stack: Stack) -> list[dict[str, Any]]:
    assert stack.gunicorn is not None
    out = [{"process": "master", "pid": stack.gunicorn.pid, **proc_status(stack.gunicorn.pid)}]
    for i, pid in enumerate(stack.workers()):
        out.append({"process": f"worker {i + 1}", "pid": pid, **proc_status(pid)})
    return out


def profile(stack: Stack, seconds: float, out_dir: Path) -> dict[str, Any]:
    """py-spy both workers while the gateway runs at concurrency 16; summarise the stacks."""
    from bench.profile_summary import summarise

    if not shutil.which("py-spy"):
        return {"error": "py-spy not installed (pip install py-spy)"}
    recs = []
    for pid in stack.workers():
        raw = out_dir / f"pyspy-{pid}.txt"
        recs.append(
            (
                raw,
                subprocess.Popen(
                    [
                        "py-spy",
                        "record",
                        "-p",
                        str(pid),
                        "-r",
                        "250",
                        "-d",
                        str(int(seconds) + 1),
                        "-f",
                        "raw",
                        "-o",
                        str(raw),
                        "--nonblocking",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
        )
    time.sleep(0.5)
    rps, _ = throughput(stack.gw_port, gateway_request(False, "fast"), 16, seconds)
    for _, p in recs:
        p.wait(timeout=60)
    return {"rps_while_profiling": rps, **summarise([r for r, _ in recs if r.exists()])}


# --------------------------------------------------------------------------- run + report


def run_mode(storage: str, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    stack = Stack(tmp, storage).start()
    try:
        res: dict[str, Any] = {"storage": storage.split("://")[0]}
        print(f"[{res['storage']}] latency ...", file=sys.stderr, flush=True)
        res["latency"] = latency(stack.gw_port, stack.fake_port, args.requests)
        res["floor"] = floor(stack, args.requests // 2)
        res["versus"] = versus(stack, tmp, args.requests // 2)
        print(f"[{res['storage']}] dialects ...", file=sys.stderr, flush=True)
        res["dialects"] = dialects(stack, args.requests // 2)
        print(f"[{res['storage']}] throughput ...", file=sys.stderr, flush=True)
        res["throughput"] = throughput_table(stack, (1, 16, 64), args.seconds)
        print(f"[{res['storage']}] {STREAMS} streams ...", file=sys.stderr, flush=True)
        res["streams"] = stream_burst(stack)
        print(f"[{res['storage']}] CPU per streamed chunk ...", file=sys.stderr, flush=True)
        res["chunk_cpu"] = chunk_cpu(stack)
        if args.profile:
            print(f"[{res['storage']}] profile ...", file=sys.stderr, flush=True)
            res["profile"] = profile(stack, 8.0, tmp)
        res["rss"] = rss(stack)
        lines = sum(1 for _ in open(tmp / "audit.log", "rb"))
        res["audit_lines"] = lines
    finally:
        stack.stop()
    if args.controls:
        res["controls"] = controls(tmp, storage, args.requests // 2)
    return res


def controls(tmp: Path, storage: str, n: int) -> dict[str, dict[str, float]]:
    """Added p50/p99 (gateway − direct) with only one control on at a time.

    The gateway with every control off runs throughout; each variant is started in turn and
    its requests are interleaved with direct ones and with the all-off gateway's, so a row's
    cost against "every control off" is measured in one loop, with as few processes awake as
    in the main latency run (eight gateways at once inflated every row by ~1 ms)."""
    variants = {
        name: keep
        for name, keep in CONTROL_VARIANTS.items()
        # Redis only changes the controls that keep state in the storage (failed-auth counts
        # come with the keys).
        if not storage.startswith("redis") or "rate_limit" in keep or "auth" in keep
    }
    tag = storage.split(":")[0]
    print(f"[{tag}] controls ...", file=sys.stderr, flush=True)
    off_dir = tmp / "control-off"
    off_dir.mkdir()
    reference = Stack(off_dir, storage, keep={}, with_floor=False).start()
    out: dict[str, dict[str, float]] = {}
    try:
        for i, (name, keep) in enumerate(variants.items()):
            if not keep:
                continue  # the reference itself
            work = tmp / f"control{i}"
            work.mkdir()
            stack = Stack(work, storage, keep=keep, with_floor=False).start(reference.fake_port)
            try:
                times = _interleave(
                    {
                        "direct": (reference.fake_port, direct_request(False, "fast")),
                        "off": (reference.gw_port, gateway_request(False, "fast")),
                        "on": (stack.gw_port, gateway_request(False, "fast")),
                    },
                    n,
                )
            finally:
                stack.stop()
            d50, d99 = pct(times["direct"], 50), pct(times["direct"], 99)
            off = {"p50": pct(times["off"], 50) - d50, "p99": pct(times["off"], 99) - d99}
            out.setdefault("every control off", off)
            out[name] = {
                "p50": pct(times["on"], 50) - d50,
                "p99": pct(times["on"], 99) - d99,
                "vs_off": pct(times["on"], 50) - pct(times["off"], 50),
            }
    finally:
        reference.stop()
    return out


def _interleave(
    paths: dict[str, tuple[int, Callable[[], bytes]]], n: int
) -> dict[str, list[float]]:
    """``n`` requests per path (after 200 to warm up), alternating the order each round."""
    conns = {name: Conn(port) for name, (port, _) in paths.items()}
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(n + 200):
        names = list(paths) if i % 2 else list(reversed(paths))
        for name in names:
            raw = paths[name][1]()
            t = time.perf_counter()
            if conns[name].request(raw) != 200:
                raise RuntimeError(f"{name}: not 200")
            if i >= 200:
                times[name].append((time.perf_counter() - t) * 1000)
    for conn in conns.values():
        conn.close()
    return times


def controls_table(res: dict[str, Any]) -> list[str]:
    rows = [
        "| gateway with only this control on | added p50 (ms) | added p99 (ms) | p50 vs all off "
        "(same loop) |",
        "|---|---|---|---|",
    ]
    for name, added in res.items():
        vs = f"{added['vs_off'] * 1000:+.0f} µs" if "vs_off" in added else ""
        rows.append(f"| {name} | {f1(added['p50'])} | {f1(added['p99'])} | {vs} |")
    return rows


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    os_name = "Linux"
    if Path("/etc/os-release").exists():
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    pkgs = ", ".join(
        f"{p} {version(p)}"
        for p in (
            "gunicorn",
            "gevent",
            "Flask",
            "geventhttpclient",
            "urllib3",
            "limits",
            "prometheus_client",
            "redis",
        )
    )
    return {
        "cpu": f"{cpu}, {os.cpu_count()} CPUs",
        "memory": f"{mem_kib / 1048576:.0f} GiB",
        "os": f"{os_name}, kernel {platform.release()}",
        "python": platform.python_version(),
        "packages": pkgs,
    }


def f1(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}"


def table(res: dict[str, Any]) -> list[str]:
    lat, thr, st = res["latency"], res["throughput"], res["streams"]
    rows = [
        "| measurement | direct (fake Ollama) | through the gateway | added / ratio |",
        "|---|---|---|---|",
        f"| non-streaming latency p50 (ms), {lat['n']} sequential, keep-alive | "
        f"{f1(lat['direct']['p50'])} | {f1(lat['gateway']['p50'])} | "
        f"**+{f1(lat['added']['p50'])}** |",
        f"| non-streaming latency p99 (ms) | {f1(lat['direct']['p99'])} | "
        f"{f1(lat['gateway']['p99'])} | **+{f1(lat['added']['p99'])}** |",
    ]
    for c, t in thr.items():
        rows.append(
            f"| throughput, concurrency {c} (req/s) | {f1(t['direct'])} | {f1(t['gateway'])} "
            f"| {t['gateway'] / t['direct'] * 100:.0f}% of direct; "
            f"{f1(t['cpu_ms_per_req'])} ms gateway CPU/req |"
        )
    d, g = st["direct"], st["gateway"]
    rows += [
        f"| {STREAMS} simultaneous streams ({CHUNKS} chunks, {int(CHUNK_DELAY * 1000)} ms apart): "
        f"completed (worst of {g['runs']} bursts) | {d['completed']}/{STREAMS} | "
        f"{g['completed']}/{STREAMS} | |",
        f"| streams: time to first token p50 (ms) | {f1(d['ttft_p50'])} | {f1(g['ttft_p50'])} | "
        f"+{f1(g['ttft_p50'] - d['ttft_p50'])} |",
        f"| streams: time to first token p99 (ms) | {f1(d['ttft_p99'])} | {f1(g['ttft_p99'])} | "
        f"**+{f1(g['ttft_p99'] - d['ttft_p99'])}** |",
    ]
    if "chunk_cpu" in res:
        cc = res["chunk_cpu"]
        direct = cc.get("direct") or {}
        rows += [
            f"| CPU per streamed chunk ({cc['streams']} streams × 500 chunks at once, "
            f"{cc['completed']} complete; direct: the fake's own CPU) (µs) | "
            f"{direct.get('us_per_chunk', float('nan')):.1f} | {cc['us_per_chunk']:.1f} | "
            f"+{cc['us_per_chunk'] - direct.get('us_per_chunk', float('nan')):.1f} |",
            f"| those {cc['streams']} streams: time to the last chunk (s) | "
            f"{direct.get('seconds', float('nan')):.2f} | {cc['seconds']:.2f} | |",
        ]
        relay = cc.get("relay") or {}
        if relay:
            rows.append(
                f"| the floor: a Flask + urllib3 relay of the same streams, nothing parsed "
                f"({relay['completed']} complete), its workers' CPU per chunk (µs) | | "
                f"{relay['us_per_chunk']:.1f} | |"
            )
    for p in res["rss"]:
        rows.append(
            f"| RSS after the run, gunicorn {p['process']} (MiB) | | "
            f"{p['VmRSS'] / 1024:.1f} (peak {p['VmHWM'] / 1024:.1f}) | |"
        )
    errs = lat["errors"] + sum(t["errors"] for t in thr.values())
    rows.append(f"| non-200 answers during the run | | {errs} | |")
    return rows


def floor_table(res: dict[str, Any]) -> list[str]:
    rows = [
        "| same box, same gunicorn gevent worker | p50 (ms) | p99 (ms) | p50 above direct | "
        "p99 above direct |",
        "|---|---|---|---|---|",
    ]
    names = {
        "direct": "direct to the fake Ollama",
        "raw": "bare WSGI callable (gunicorn alone)",
        "hello": "Flask view returning fixed JSON",
        "proxy": "Flask + urllib3: read JSON, one pooled call to the fake, return its body",
        "gateway": "the gateway, every control on",
        "gateway in memory://": "the gateway, every control on, limits in `memory://`",
    }
    for loop, label in (("floor", "loop 1"), ("versus", "loop 2, what the targets use")):
        fl = res.get(loop, {})
        for key, name in names.items():
            if key in fl:
                rows.append(
                    f"| {label}: {name} | {f1(fl[key]['p50'])} | {f1(fl[key]['p99'])} | "
                    f"+{f1(fl[key]['p50'] - fl['direct']['p50'])} | "
                    f"+{f1(fl[key]['p99'] - fl['direct']['p99'])} |"
                )
    thr = res["throughput"].get("16", {})
    if "floor_cpu_ms_per_req" in thr:
        rows.append(
            f"| CPU per request at concurrency 16 (ms): Flask + urllib3 "
            f"{thr['floor_cpu_ms_per_req']:.3f}, the gateway {thr['cpu_ms_per_req']:.3f} | | | | |"
        )
    return rows


def added(res: dict[str, Any], name: str, p: str) -> float:
    """``name``'s p50 or p99 above direct in the loop the targets use."""
    vs = res["versus"]
    return float(vs[name][p] - vs["direct"][p])


def targets(res: dict[str, Any]) -> list[str]:
    """The issue's targets (#14), each a ratio or a difference within one run."""
    st = res["streams"]
    worker_rss = [p["VmRSS"] / 1024 for p in res["rss"] if p["process"].startswith("worker")]
    checks: list[tuple[str, bool, str]] = []
    if "versus" in res:
        g50, f50 = added(res, "gateway", "p50"), added(res, "proxy", "p50")
        g99, f99 = added(res, "gateway", "p99"), added(res, "proxy", "p99")
        if "gateway in memory://" not in res["versus"]:
            checks += [
                (
                    "added p50 ≤ 1.3 × the Flask + urllib3 floor's",
                    g50 <= 1.3 * f50,
                    f"{g50:.2f} vs {f50:.2f} ms: {g50 / f50:.2f}×",
                ),
                (
                    "added p99 ≤ 1.5 × the floor's",
                    g99 <= 1.5 * f99,
                    f"{g99:.2f} vs {f99:.2f} ms: {g99 / f99:.2f}×",
                ),
            ]
        else:
            m50 = added(res, "gateway in memory://", "p50")
            checks.append(
                (
                    "added p50 ≤ memory://'s + 0.3 ms (same loop)",
                    g50 <= m50 + 0.3,
                    f"{g50:.2f} vs {m50:.2f} ms: {(g50 - m50) * 1000:+.0f} µs",
                )
            )
    thr = res["throughput"].get("16", {})
    if "floor_cpu_ms_per_req" in thr:
        g, f = thr["cpu_ms_per_req"], thr["floor_cpu_ms_per_req"]
        checks.append(
            (
                "CPU per request at concurrency 16 ≤ 1.3 × the floor app's",
                g <= 1.3 * f,
                f"{g:.3f} vs {f:.3f} ms: {g / f:.2f}×",
            )
        )
    ttft = st["gateway"]["ttft_p99"] - st["direct"]["ttft_p99"]
    checks += [
        (
            f"{STREAMS} simultaneous streams: TTFT p99 ≤ direct + 150 ms",
            ttft <= 150,
            f"+{ttft:.0f} ms",
        ),
        (
            f"{STREAMS}/{STREAMS} streams complete",
            st["gateway"]["completed"] == STREAMS,
            f"{st['gateway']['completed']}/{STREAMS}",
        ),
        (
            "≤ 60 MB per worker",
            max(worker_rss) * 1.048576 <= 60,
            f"{max(worker_rss):.1f} MiB ({max(worker_rss) * 1.048576:.1f} MB)",
        ),
    ]
    if "chunk_cpu" in res:
        us = res["chunk_cpu"]["us_per_chunk"]
        relay = res["chunk_cpu"].get("relay") or {}
        floor_us = (
            f" (a bare Flask + urllib3 relay: {relay['us_per_chunk']:.1f} µs)" if relay else ""
        )
        checks.append(
            ("gateway CPU per streamed chunk ≤ 25 µs", us <= 25, f"{us:.1f} µs{floor_us}")
        )
    if "dialects" in res:
        chat = res["dialects"]["chat"]["p50"]
        worst = max(d["p50"] - chat for n, d in res["dialects"].items() if n != "chat")
        checks.append(
            ("every dialect's p50 ≤ chat's + 0.3 ms", worst <= 0.3, f"worst {worst * 1000:+.0f} µs")
        )
    return [f"| {name} | {got} | {'met' if ok else '**missed**'} |" for name, ok, got in checks]


def render_doc(
    results: list[dict[str, Any]], cmd: str, mach: dict[str, str], took: float | None, notes: str
) -> str:
    out = [
        "# Benchmarks: what the gateway costs",
        "",
        "Written by `bench/run.py`; rerun it on your own box to get your figures. Everything runs "
        "on loopback on one machine: the load generator, the fake Ollama, the gateway (and "
        "Redis) share the same cores, so these figures are pessimistic for the gateway.",
        "",
        "## Machine and command",
        "",
        f"- CPU: {mach['cpu']}; memory: {mach['memory']}",
        f"- OS: {mach['os']}; Python {mach['python']}",
        f"- {mach['packages']}",
        f"- command: `{cmd}`" + (f" (took {took:.0f} s)" if took else ""),
        "",
        "Gateway: `gunicorn wsgi:app`, 2 gevent workers, with API-key auth (16 keys, requests "
        "rotate over them), IP allowlist behind a trusted proxy (`X-Forwarded-For`), rate limit "
        "(moving window) and per-key concurrency limit, JSON audit log to a file, Prometheus "
        "metrics in multiprocess mode. The *direct* path sends the very request the gateway "
        "sends to Ollama (`POST /api/chat`, streaming NDJSON) straight to the fake, so "
        "*added* is the gateway's own cost. The fake (`bench/fake_ollama.py`) is a raw-socket "
        "gevent server in its own process that sends pre-built bytes. Paths are interleaved "
        "(latency: alternate requests; throughput and stream bursts: direct, gateway, gateway, "
        "direct).",
        "",
    ]
    for res in results:
        out += [f"## Limits in `{res['storage']}://`", ""] + table(res) + [""]
        out += ["| target (#14) | measured | |", "|---|---|---|"] + targets(res) + [""]
        if "floor" in res:
            out += (
                [
                    "Where the added latency comes from: the same request through reference "
                    "apps on the same kind of gunicorn gevent worker (`bench/floor_app.py`, 2 "
                    "workers like the gateway), request by request in one loop with direct "
                    "requests; then the floor proxy and the gateway in a loop of their own "
                    "(in Redis mode with a `memory://` gateway beside it), which the targets use:",
                    "",
                ]
                + floor_table(res)
                + [""]
            )
        if "controls" in res:
            out += (
                [
                    "What each control costs: the gateway with every control off runs "
                    "throughout; a gateway with only one control on is started in turn, and "
                    "their requests are interleaved with direct ones in one loop per row:",
                    "",
                ]
                + controls_table(res["controls"])
                + [""]
            )
        if "dialects" in res:
            out += (
                [
                    "Each API dialect through the same gate (same controls, same upstream), "
                    "interleaved request by request:",
                    "",
                ]
                + dialect_table(res)
                + [""]
            )
    if len(results) == 2:
        r = results[1]
        vs = r["versus"]
        dp50 = vs["gateway"]["p50"] - vs["gateway in memory://"]["p50"]
        dcpu = vs["gateway"]["cpu_ms_per_req"] - vs["gateway in memory://"]["cpu_ms_per_req"]
        out += [
            "## What Redis costs",
            "",
            f"Moving the limits to Redis (exact across workers and instances) adds "
            f"**{dp50 * 1000:.0f} µs** to the p50 latency of a request (a Redis-mode and a "
            f"`memory://` gateway side by side in one loop) and **{dcpu * 1000:.0f} µs** of "
            f"gateway CPU per request at concurrency 16 "
            f"({vs['gateway in memory://']['cpu_ms_per_req']:.2f} → "
            f"{vs['gateway']['cpu_ms_per_req']:.2f} ms, the two alternating in the same minute). "
            "A chat request makes 2 Redis round trips, each one Lua script "
            "(`qwengw/redis_scripts.py`): its admission in the gate (the failed-auth check, the "
            "in-flight slot, the rate-limit hit with the window stats for the headers) and, at "
            "the end, the slot's release. Redis runs on the same 2 cores.",
            "",
        ]
    for res in results:
        if "profile" in res:
            out += profile_section(res)
    out += [notes.rstrip(), ""] if notes else []
    return "\n".join(out)


def profile_section(res: dict[str, Any]) -> list[str]:
    p = res["profile"]
    if "error" in p:
        return [f"(profile skipped: {p['error']})", ""]
    out = [
        f"## Profile (`{res['storage']}://`, py-spy, both workers, concurrency 16, "
        f"{p['rps_while_profiling']:.0f} req/s while sampled)",
        "",
        f"Share of the samples in which the workers were running Python (not idle in the "
        f"gevent hub): **{p['busy_share'] * 100:.0f}%** of {p['samples']} samples.",
        "",
        "| where the busy time goes (inclusive) | share of busy samples |",
        "|---|---|",
    ]
    out += [f"| {name} | {share * 100:.1f}% |" for name, share in p["categories"]]
    out += ["", "| top functions by own time | share of busy samples |", "|---|---|"]
    out += [f"| `{name}` | {share * 100:.1f}% |" for name, share in p["top_self"]]
    return out + [""]


def print_table(results: list[dict[str, Any]]) -> None:
    for res in results:
        print(f"\n== limits in {res['storage']}:// ==")
        for row in (
            table(res)
            + ["", "| target | measured | |"]
            + targets(res)
            + [""]
            + (floor_table(res) if "floor" in res else [])
            + ([""] + dialect_table(res) if "dialects" in res else [])
            + ([""] + controls_table(res["controls"]) if "controls" in res else [])
        ):
            print(row)
        if "profile" in res:
            for row in profile_section(res):
                print(row)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--redis", action="store_true", help="also run with limits in Redis")
    ap.add_argument("--profile", action="store_true", help="py-spy the workers (needs py-spy)")
    ap.add_argument(
        "--controls", action="store_true", help="also measure each control alone (+1 min)"
    )
    ap.add_argument("--requests", type=int, default=3000, help="sequential requests per path")
    ap.add_argument("--seconds", type=float, default=2.0, help="per throughput run (4 per level)")
    ap.add_argument("--no-write", action="store_true", help="do not write docs/benchmarks.md")
    ap.add_argument("--notes", help="Markdown appended to the doc (default: bench/notes.md)")
    ap.add_argument(
        "--render",
        metavar="JSON",
        help="only write the doc again from a saved run (after editing bench/notes.md)",
    )
    args = ap.parse_args(argv)
    saved = Path(tempfile.gettempdir()) / "qwengw-bench.json"
    if args.render:
        run = json.loads(Path(args.render).read_text())
        write_doc(run["results"], run["cmd"], run["machine"], run["took"], args.notes)
        return 0
    if args.redis and not shutil.which("redis-server"):
        print("bench: --redis needs redis-server (apt-get install redis-server)", file=sys.stderr)
        return 2
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="qwengw-bench-") as tmp_s:
        tmp = Path(tmp_s)
        (tmp / "memory").mkdir()
        results.append(run_mode("memory://", tmp / "memory", args))
        if args.redis:
            (tmp / "redis").mkdir()
            port = free_port()
            redis = subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp / "redis"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                wait_port(port)
                results.append(run_mode(f"redis://127.0.0.1:{port}/0", tmp / "redis", args))
            finally:
                redis.terminate()
                redis.wait(timeout=10)
    took = time.monotonic() - started
    print_table(results)
    cmd = (
        "python -m bench.run"
        + (" --redis" if args.redis else "")
        + (" --profile" if args.profile else "")
        + (" --controls" if args.controls else "")
    )
    mach = machine()
    saved.write_text(
        json.dumps({"results": results, "cmd": cmd, "machine": mach, "took": took}, indent=1)
    )
    if not args.no_write:
        write_doc(results, cmd, mach, took, args.notes)
    print(f"results saved in {saved} (--render {saved} writes the doc from them)")
    return 0


def write_doc(
    results: list[dict[str, Any]],
    cmd: str,
    mach: dict[str, str],
    took: float | None,
    notes_arg: str | None,
) -> None:
    notes_path = Path(notes_arg) if notes_arg else Path(__file__).with_name("notes.md")
    notes = notes_path.read_text() if notes_path.exists() else ""
    DOC.write_text(render_doc(results, cmd, mach, took, notes))
    print(f"wrote {DOC.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
