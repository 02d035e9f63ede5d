"""Shared fixtures: a fake Ollama on loopback, and real gunicorn gevent gateways in front of it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fakes.fake_ollama import FakeOllama

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


class Gateway:
    """A real ``gunicorn wsgi:app`` (gevent workers) started from the repo root."""

    def __init__(
        self, config: dict[str, Any], tmp: Path, workers: int = 1, env: dict[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.audit_path = tmp / "audit.log"
        config = {**config, "audit": {"path": str(self.audit_path), **config.get("audit", {})}}
        self.config_path = tmp / "qwengw.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log_path = tmp / "gunicorn.log"
        self.env = {
            **os.environ,
            "QWENGW_CONFIG": str(self.config_path),
            "QWENGW_BIND": f"127.0.0.1:{self.port}",
            "QWENGW_WORKERS": str(workers),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
            **(env or {}),
        }
        (tmp / "metrics").mkdir(exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Gateway:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "wsgi:app"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.log()}")
            try:
                if requests.get(self.url + "/health", timeout=0.5).status_code == 200:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        raise TimeoutError(f"gateway did not start: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def audit(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines() if line]

    def audit_for(self, request_id: str, timeout: float = 3.0) -> dict[str, Any]:
        """The audit line of one request (written when its response closes)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in self.audit():
                if rec.get("request_id") == request_id:
                    return rec
            time.sleep(0.02)
        raise AssertionError(f"no audit line for {request_id}: {self.audit()[-3:]}")

    def stop(self, sig: int = signal.SIGINT) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()


@pytest.fixture(scope="session")
def fake_ollama() -> Iterator[FakeOllama]:
    fake = FakeOllama().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_ollama: FakeOllama) -> Iterator[FakeOllama]:
    fake_ollama.reset()
    yield fake_ollama
    fake_ollama.reset()


@pytest.fixture
def start_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``start_gateway(config, workers=1)`` → a running Gateway, stopped after the test."""
    started: list[Gateway] = []

    def start(
        config: dict[str, Any], workers: int = 1, env: dict[str, str] | None = None
    ) -> Gateway:
        gw = Gateway(config, tmp_path_factory.mktemp("gw"), workers, env).start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port, without persistence."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def flush(self) -> None:
        import redis

        redis.Redis(port=self.port).flushall()


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@contextmanager
def in_terminal(argv: list[str], *, env: dict[str, str], log: Path, cwd: Path = ROOT):
    """``argv`` started as a shell starts a foreground job: in a process group of its own, which
    is what Ctrl-C signals (``ctrl_c``). Killed with its children if the test leaves it running."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ctrl_c(proc: subprocess.Popen[bytes], timeout: float = 20) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=timeout)


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 20) -> None:
    """Until ``url``/health answers; the log says why when the process exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url + "/health", timeout=0.5).ok:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"no answer from {url} in {timeout} s:\n{log.read_text()}")
