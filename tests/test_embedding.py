"""The gateway mounted into an existing Flask app, served by real gunicorn gevent workers."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.conftest import ROOT, free_port
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration

HOST_APP = """\
from flask import Flask, jsonify
from qwengw import Gateway

app = Flask("host")

@app.get("/")
def index():
    return "host home page"

@app.get("/api/things")
def things():
    return jsonify(things=[1, 2, 3])

Gateway({{"ollama_api": "{ollama}", "audit": {{"enabled": False}}}}).init_app(app)
"""


def test_host_app_keeps_its_routes(tmp_path: Path, fake: FakeOllama) -> None:
    (tmp_path / "hostapp.py").write_text(textwrap.dedent(HOST_APP.format(ollama=fake.url)))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-k",
            "gevent",
            "-w",
            "1",
            "--no-control-socket",
            "-b",
            f"127.0.0.1:{port}",
            "hostapp:app",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(url + "/", timeout=0.5)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, "host app did not start"
                time.sleep(0.05)
        assert requests.get(url + "/", timeout=5).text == "host home page"
        assert requests.get(url + "/api/things", timeout=5).json() == {"things": [1, 2, 3]}
        missing = requests.get(url + "/not-here", timeout=5)
        assert missing.status_code == 404 and "<" in missing.text  # the host's own (HTML) 404
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        out = client.chat.completions.create(
            model="qwen3:32b", messages=[{"role": "user", "content": "hi"}]
        )
        assert out.choices[0].message.content == "Hello from the fake Ollama!"
        bad = requests.post(url + "/v1/chat/completions", json={"model": "qwen3:32b"}, timeout=5)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages"
    finally:
        proc.terminate()
        proc.wait(timeout=15)
