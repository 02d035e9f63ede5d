"""`gunicorn wsgi:app` and `qwengw serve` start the same gateway, bound to the configured listen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml

from tests.conftest import ROOT, free_port
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration


def wait_health(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if requests.get(url + "/health", timeout=0.5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.05)
    raise AssertionError(log.read_text())


@pytest.mark.parametrize("command", ["gunicorn", "serve"])
def test_binds_to_configured_listen_with_gevent_workers(
    tmp_path: Path, fake: FakeOllama, command: str
) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "listen": f"127.0.0.1:{port}",
                "ollama_api": fake.url,
                "workers": 2,
                "audit": {"path": str(tmp_path / "a.log")},
            }
        )
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("QWENGW_BIND", "QWENGW_WORKERS", "PROMETHEUS_MULTIPROC_DIR")
    }
    if command == "gunicorn":
        argv, cwd = [sys.executable, "-m", "gunicorn", "wsgi:app"], ROOT
        env["QWENGW_CONFIG"] = str(config)
    else:
        argv, cwd = [sys.executable, "-m", "qwengw.cli", "serve", "--config", str(config)], tmp_path
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_health(f"http://127.0.0.1:{port}", proc, log)
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=5,
            json={"model": "qwen3:32b", "messages": [{"role": "user", "content": "x"}]},
        )
        assert r.status_code == 200
        text = log.read_text()
        # gunicorn's gevent worker, with the gateway's per-address connection cap on top.
        assert "Using worker: qwengw.worker.Worker" in text and text.count("Booting worker") == 2
        assert "MonkeyPatchWarning" not in text  # nothing imported ssl/urllib3 before patching
        assert "Ollama reachable" in text
        idle = requests.Session()  # an idle keep-alive connection, as Nginx keeps them
        assert idle.get(f"http://127.0.0.1:{port}/health", timeout=5).status_code == 200
        started = time.monotonic()
        proc.terminate()
        proc.wait(timeout=20)
        assert time.monotonic() - started < 8  # a restart is not held by idle connections
        idle.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(log.read_text()) from None


def test_serve_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("rate_limit: {enabled: yes, max_requests: -1}\n")
    out = subprocess.run(
        [sys.executable, "-m", "qwengw.cli", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "rate_limit.max_requests: must be greater than 0" in out.stderr
