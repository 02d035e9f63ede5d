"""The README's run command on a copy of this checkout, as a new user runs it: it makes its own
virtualenv (Debian's Python refuses `pip install`, PEP 668), installs qwengw there from PyPI
and starts the gateway; Ctrl-C stops it. About 15 s with a warm pip cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, ctrl_c, free_port, in_terminal, wait_healthy
from tests.fakes.fake_ollama import FakeOllama

pytestmark = pytest.mark.integration


def checkout_copy(dest: Path) -> Path:
    """The files git would commit (tracked, and new ones not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).write_bytes(src.read_bytes())
    return dest


def test_readme_run_command_installs_into_a_fresh_venv_and_serves(
    tmp_path: Path, fake: FakeOllama
) -> None:
    readme = (ROOT / "README.md").read_text()
    run_line = re.search(r"```bash\n(.*?)\n", readme).group(1).split("#")[0].strip()
    repo = checkout_copy(tmp_path / "qwengw")
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\nollama_api: "{fake.url}"\nworkers: 1\n'
        f'audit: {{path: "{tmp_path / "audit.log"}"}}\n'
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("QWENGW_") and k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    # Not in a virtualenv: the interpreter this one was made from (Debian's, in CI).
    env["PYTHON"] = getattr(sys, "_base_executable", sys.executable)
    env["QWENGW_CONFIG"] = str(config)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")
    log = tmp_path / "run.log"
    started = time.monotonic()
    with in_terminal(["bash", "-c", run_line], cwd=repo, env=env, log=log) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log, timeout=240)
        print(f"install and start: {time.monotonic() - started:.1f} s")
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "qwen3:32b", "messages": [{"role": "user", "content": "Hi"}]},
            timeout=10,
        )
        assert r.json()["choices"][0]["message"]["content"] == "Hello from the fake Ollama!"
        assert ctrl_c(proc) == 0
    text = log.read_text()
    assert "externally-managed-environment" not in text and "Traceback" not in text, text
    venv_python = repo / ".venv" / "bin" / "python"
    assert venv_python.exists(), text
    where = subprocess.run(
        [str(venv_python), "-c", "import qwengw; print(qwengw.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert ".venv" in where.stdout  # installed there, not run from the checkout
