"""Fixtures for nginxgen: a real nginx on loopback high ports, its own prefix, self-signed
certificates from a trustme CA, and small stand-in upstreams (chat UI, gateway).

Reusable end to end: the ``run_nginx`` fixture is a function ``run_nginx(site_text, tmp_path)
-> NginxHandle`` (``.https_port``, ``.http_port``, ``.ca``, ``.ca_pem``, ``.stop()``; stopped at
teardown anyway) that starts any emitted site, for example with the real gateway behind it.
Everything else is reachable through the ``ng`` fixture (a namespace of these helpers), since
test modules cannot import a conftest under ``--import-mode=importlib``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import crossplane
import pytest
import trustme

from nginxgen.model import TLS, SiteSpec

NGINX = os.environ.get("QWENGW_NGINX", "/usr/sbin/nginx")
GIXY = os.environ.get("QWENGW_GIXY", "/opt/gixy-venv/bin/gixy")
NAMES = ("ai.example.test", "localhost", "127.0.0.1")
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SSE_EVENTS = 4
SSE_INTERVAL = 0.4  # seconds between two events sent by the gateway stand-in
APP_JS = b"console.log('ui app');\n"

_CA = trustme.CA()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need_tool(path: str, what: str) -> None:
    """Fail in CI (env CI set), skip locally, when a tool the test needs is missing."""
    if os.access(path, os.X_OK):
        return
    msg = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI is set, so this is an error)")
    pytest.skip(msg)


# ---------------------------------------------------------------- certificates


@dataclass
class CertFiles:
    cert: str
    key: str
    chain: str
    ca_pem: str


def issue_certs(directory: Path, names: tuple[str, ...] = NAMES) -> CertFiles:
    """Leaf cert (+ chain) for `names`, signed by the session CA, written under directory."""
    directory.mkdir(parents=True, exist_ok=True)
    leaf = _CA.issue_cert(*names)
    cert, key, chain, ca = (directory / n for n in ("cert.pem", "key.pem", "chain.pem", "ca.pem"))
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    for extra in leaf.cert_chain_pems[1:]:
        extra.write_to_path(str(cert), append=True)
    leaf.private_key_pem.write_to_path(str(key))
    _CA.cert_pem.write_to_path(str(chain))
    _CA.cert_pem.write_to_path(str(ca))
    return CertFiles(str(cert), str(key), str(chain), str(ca))


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return _CA


@pytest.fixture
def certs(tmp_path: Path) -> CertFiles:
    return issue_certs(tmp_path / "tls")


# ---------------------------------------------------------------- nginx runner


@dataclass
class NginxHandle:
    prefix: Path
    http_port: int
    https_port: int
    ca: trustme.CA
    ca_pem: str
    proc: subprocess.Popen | None = None

    def url(self, path: str = "/", tls: bool = True) -> str:
        if tls:
            return f"https://127.0.0.1:{self.https_port}{path}"
        return f"http://127.0.0.1:{self.http_port}{path}"

    def error_log(self) -> str:
        p = self.prefix / "logs" / "error.log"
        return p.read_text() if p.exists() else ""

    def cmd(self, *extra: str) -> list[str]:
        return [NGINX, "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), *extra]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def wrapper_conf(prefix: Path, include: str) -> str:
    """An nginx.conf that keeps everything (pid, logs, temp files) inside `prefix`."""
    temp = prefix / "temp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must read files in tmp_path
    paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return (
        f"{user}worker_processes 1;\nworker_rlimit_nofile 8192;\ndaemon off;\n"
        f"pid {prefix / 'nginx.pid'};\nerror_log {prefix / 'logs' / 'error.log'} info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "    types { text/html html; application/javascript js; text/css css; }\n"
        "    default_type application/octet-stream;\n"
        f"    access_log {prefix / 'logs' / 'access.log'};\n{paths}"
        f"    include {include};\n}}\n"
    )


def prepare_prefix(site_text: str, tmp_path: Path, name: str = "nginx") -> Path:
    prefix = tmp_path / name
    for sub in ("logs", "temp", "conf"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "conf" / "site.conf").write_text(site_text)
    (prefix / "nginx.conf").write_text(wrapper_conf(prefix, str(prefix / "conf" / "site.conf")))
    return prefix


def listen_ports(site_conf: Path) -> tuple[int, int]:
    """(http_port, https_port) read from the site's server blocks."""
    parsed = crossplane.parse(str(site_conf), single=True, check_ctx=False)
    http = https = 0
    for stmt in parsed["config"][0]["parsed"]:
        if stmt["directive"] != "server" or "block" not in stmt:
            continue
        for ls in (s for s in stmt["block"] if s["directive"] == "listen"):
            port = int(ls["args"][0].rsplit(":", 1)[-1])
            if "ssl" in ls["args"][1:]:
                https = https or port
            else:
                http = http or port
    return http, https


def nginx_t(site_text: str, tmp_path: Path, name: str = "nginx-t") -> tuple[int, str]:
    prefix = prepare_prefix(site_text, tmp_path, name)
    proc = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.returncode, proc.stdout + proc.stderr


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not open port {port}")


def start_nginx(site_text: str, tmp_path: Path, name: str = "nginx") -> NginxHandle:
    """Start the real nginx (no daemon, own prefix) on `site_text`; caller must .stop() it.

    The site's certificates must come from the session CA (`issue_certs`) for `.ca` to
    verify them; ports are read from the site's `listen` directives."""
    need_tool(NGINX, "nginx")
    prefix = prepare_prefix(site_text, tmp_path, name)
    http_port, https_port = listen_ports(prefix / "conf" / "site.conf")
    ca_pem = prefix / "ca.pem"
    _CA.cert_pem.write_to_path(str(ca_pem))
    handle = NginxHandle(prefix, http_port, https_port, _CA, str(ca_pem))
    with open(prefix / "logs" / "stderr.log", "wb") as err:
        handle.proc = subprocess.Popen(handle.cmd(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        for port in (p for p in (https_port, http_port) if p):
            wait_port(port, handle.proc)
    except RuntimeError as exc:
        handle.stop()
        stderr = (prefix / "logs" / "stderr.log").read_text()
        raise RuntimeError(f"{exc}\n{stderr}\n{handle.error_log()}") from None
    return handle


# ---------------------------------------------------------------- stand-in upstreams


@dataclass
class Stub:
    server: ThreadingHTTPServer
    seen: list[dict[str, Any]] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: Stub

    def log_message(self, *args: Any) -> None:  # keep pytest output clean
        pass

    def _record(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        info = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "client": self.client_address[0],
            "body_len": len(body),
        }
        self.stub.seen.append(info)
        return info

    def _json(self, obj: Any, status: int = 200) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class UIHandler(_Handler):
    """Chat UI stand-in: echoes request headers, serves /assets/app.js, accepts websockets."""

    def do_GET(self) -> None:
        info = self._record()
        if self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers["Sec-WebSocket-Key"]
            accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            msg = b"hello from ui"
            self.wfile.write(bytes([0x81, len(msg)]) + msg)  # one unmasked text frame
            self.wfile.flush()
            self.close_connection = True
            return
        if self.path.split("?")[0].endswith(".js"):
            self.send_response(200)
            self.send_header("Content-Type", "application/javascript")
            self.send_header("Content-Length", str(len(APP_JS)))
            self.end_headers()
            self.wfile.write(APP_JS)
            return
        self._json({"ui": True, **info})


class GatewayHandler(_Handler):
    """Gateway stand-in: SSE with fixed pacing on chat completions, else echoes the request."""

    def do_POST(self) -> None:
        info = self._record()
        if not self.path.startswith("/v1/chat/completions"):
            return self._json({"gateway": True, **info})
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(SSE_EVENTS + 1):
            if i:
                time.sleep(SSE_INTERVAL)
            data = "[DONE]" if i == SSE_EVENTS else json.dumps({"i": i})
            chunk = f"data: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_GET(self) -> None:
        self._json({"gateway": True, **self._record()})


def start_stub(handler: type[_Handler]) -> Stub:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    stub = Stub(server)
    handler_cls = type(handler.__name__, (handler,), {"stub": stub})
    server.RequestHandlerClass = handler_cls
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return stub


@pytest.fixture(scope="module")
def ui_stub() -> Iterator[Stub]:
    stub = start_stub(UIHandler)
    yield stub
    stub.stop()


@pytest.fixture(scope="module")
def gateway_stub() -> Iterator[Stub]:
    stub = start_stub(GatewayHandler)
    yield stub
    stub.stop()


# ---------------------------------------------------------------- site helpers


def edge_spec(
    workdir: Path,
    ui: str | tuple[str, ...] = "127.0.0.1:9",
    gateway: str | tuple[str, ...] = "127.0.0.1:9",
    **overrides: Any,
) -> SiteSpec:
    """A SiteSpec for loopback tests: session-CA certs, free high ports, logs in workdir."""
    files = issue_certs(workdir / "tls")
    (workdir / "acme").mkdir(parents=True, exist_ok=True)
    kw: dict[str, Any] = dict(
        server_names=("ai.example.test",),
        tls=TLS(files.cert, files.key),
        ui=(ui,) if isinstance(ui, str) else ui,
        gateway=(gateway,) if isinstance(gateway, str) else gateway,
        http_port=free_port(),
        https_port=free_port(),
        listen_addresses=("127.0.0.1",),
        acme_root=str(workdir / "acme"),
        access_log=str(workdir / "edge-access.log"),
    )
    kw.update(overrides)
    return SiteSpec(**kw)


@pytest.fixture
def gixy_findings(tmp_path: Path):
    """Run gixy-ng (its own venv) on a wrapper around a site → list of findings."""

    def run(site_text: str) -> list[dict[str, Any]]:
        need_tool(GIXY, "gixy-ng (python3 -m venv /opt/gixy-venv && pip install gixy-ng)")
        d = tmp_path / "gixy"
        d.mkdir(exist_ok=True)
        (d / "site.conf").write_text(site_text)
        # An absolute include: a relative one may be resolved against the working directory.
        (d / "nginx.conf").write_text(
            "worker_rlimit_nofile 8192;\nevents { worker_connections 1024; }\n"
            f"http {{\n    include {d / 'site.conf'};\n}}\n"
        )
        proc = subprocess.run(
            [GIXY, "-f", "json", str(d / "nginx.conf")], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode in (0, 1), proc.stderr
        return json.loads(proc.stdout or "[]")

    return run


@pytest.fixture
def run_nginx() -> Iterator[Any]:
    """``run_nginx(site_text, tmp_path, name="nginx") -> NginxHandle``; stops them all after."""
    started: list[NginxHandle] = []

    def run(site_text: str, tmp_path: Path, name: str = "nginx") -> NginxHandle:
        handle = start_nginx(site_text, tmp_path, name)
        started.append(handle)
        return handle

    yield run
    for handle in started:
        handle.stop()


@pytest.fixture(scope="session")
def ng() -> SimpleNamespace:
    """The helpers above, for test modules (they cannot import conftest)."""
    return SimpleNamespace(
        free_port=free_port,
        need_tool=need_tool,
        issue_certs=issue_certs,
        edge_spec=edge_spec,
        start_nginx=start_nginx,
        nginx_t=nginx_t,
        wait_port=wait_port,
        prepare_prefix=prepare_prefix,
        wrapper_conf=wrapper_conf,
        start_stub=start_stub,
        UIHandler=UIHandler,
        GatewayHandler=GatewayHandler,
        NGINX=NGINX,
        GIXY=GIXY,
        SSE_EVENTS=SSE_EVENTS,
        SSE_INTERVAL=SSE_INTERVAL,
        APP_JS=APP_JS,
        WS_GUID=WS_GUID,
        ca=_CA,
    )
