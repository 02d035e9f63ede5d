"""The README's five-minute tour, run as written: its bash blocks (and the SDK snippet) in one
bash process, against the fake Ollama it starts itself.

Only the ports change: free ones instead of 11434 and 18789, in the text and, for the first
`qwengw serve` (built-in defaults), through $QWENGW_CONFIG, so the suite never meets a real Ollama
or gateway. `qwengw`, `nginxgen` and `python` are this checkout's. The tour writes its files in a
scratch directory that sees the checkout's `tests/`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

pytestmark = pytest.mark.integration


def blocks(markdown: str, section: str) -> list[tuple[str, str]]:
    """(language, code) of each fenced block in the ``## section`` of a Markdown text."""
    start = markdown.index(f"## {section}")
    end = markdown.find("\n## ", start + 1)
    text = markdown[start : end if end != -1 else None]
    return re.findall(r"```(\w+)\n(.*?)```", text, flags=re.S)


def tour_script(ollama_port: int, gateway_port: int) -> str:
    parts = []
    for lang, code in blocks((ROOT / "README.md").read_text(), "Five-minute tour"):
        if lang == "python":  # the SDK snippet, while the first gateway runs
            code = f"python - <<'PYTHON_SNIPPET'\n{code}PYTHON_SNIPPET\n"
        parts.append(code)
    script = "".join(parts)
    return script.replace("11434", str(ollama_port)).replace("18789", str(gateway_port))


def shim(bindir: Path, name: str, module: str | None) -> None:
    target = f"-m {module} " if module else ""
    path = bindir / name
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" {target}"$@"\n')
    path.chmod(0o755)


def test_readme_tour_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "checkout"
    work.mkdir()
    (work / "tests").symlink_to(ROOT / "tests")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shim(bindir, "qwengw", "qwengw")
    shim(bindir, "nginxgen", "nginxgen")
    shim(bindir, "python", None)
    ollama_port, gateway_port = free_port(), free_port()
    script = tour_script(ollama_port, gateway_port)
    ports = tmp_path / "ports.yaml"
    ports.write_text(
        f'listen: "127.0.0.1:{gateway_port}"\nollama_api: "http://127.0.0.1:{ollama_port}"\n'
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QWENGW_")},
        "QWENGW_CONFIG": str(ports),
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "PYTHONPATH": str(ROOT),  # this checkout's packages, not an installed copy
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
    }
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the tour hung:\n{out}\n{err}") from None
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # anything the tour left running
        except ProcessLookupError:
            pass
    both = out + err
    # first gateway, built-in defaults: health, models, chat, stream, the SDK
    assert '{"status":"ok"}' in out, both
    assert out.count("Hello from the fake Ollama!") >= 2 and "data: [DONE]" in out, both
    # the gate: check-config, a key, the headers, the 401 in OpenAI's wording
    assert "qwengw.yaml: OK" in out and "problem" not in out, both
    assert re.search(r"(?im)^x-request-id: \S+", out) and "x-ratelimit-limit-requests" in out
    assert (
        "You didn't provide an API key" in out and 'WWW-Authenticate: Bearer realm="qwengw"' in out
    )
    # the report and its page
    assert re.search(r"requests\s+\d", out), both
    assert (work / "report.html").stat().st_size > 1000
    # nginxgen takes port and trusted proxy from the tour's file, without a warning
    assert f"server 127.0.0.1:{gateway_port};" in out
    assert "nginxgen: warning" not in err, err
    assert "Traceback" not in err, err
