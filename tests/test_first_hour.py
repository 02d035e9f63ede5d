"""The first hour of a new user (issue #13): what `qwengw` and `nginxgen` say when something is
off, run as a user runs them (subprocesses), and the repository around them."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from qwengw.config import ConfigError, apply_environment, load_settings, settings_from_dict
from qwengw.config import warnings as config_warnings
from tests.conftest import ROOT, ctrl_c, free_port, in_terminal, wait_healthy

GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QWENGW_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, "PYTHONPATH": str(ROOT), **extra}


def run(*argv: str, env: dict[str, str] | None = None, cwd: Path = ROOT, timeout: float = 30):
    return subprocess.run(
        [sys.executable, *argv],
        env=env or clean_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# ----------------------------------------------------------------- start and stop (items 3-7, 14)


@pytest.mark.integration
def test_busy_address_is_one_line_naming_it() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        out = run("-m", "qwengw", "serve", env=clean_env(QWENGW_BIND=f"127.0.0.1:{port}"))
    assert out.returncode == 1 and time.monotonic() - started < 15  # not five retries
    assert "Connection in use" not in out.stderr and "Traceback" not in out.stderr
    (line,) = [ln for ln in out.stderr.splitlines() if "cannot listen" in ln]
    assert f"127.0.0.1:{port}: it is already in use" in line
    assert "listen:" in line and "QWENGW_BIND=HOST:PORT" in line


@pytest.mark.integration
def test_ctrl_c_stops_quietly_warnings_once_one_format_and_connect_failures_name_the_url(
    tmp_path: Path,
) -> None:
    """Ctrl-C reaches the master and both workers (one process group): no traceback. The
    start-up warnings come once, from the master, in gunicorn's format like every other line.
    A request to an Ollama that is down logs its URL and why, matching the runbook's grep."""
    port, dead = free_port(), free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        f'listen: "127.0.0.1:{port}"\nollama_api: "http://127.0.0.1:{dead}"\nworkers: 2\n'
        f'audit: {{path: "{tmp_path / "audit.log"}"}}\n'
    )
    log = tmp_path / "serve.log"
    argv = [sys.executable, "-m", "qwengw", "serve", "--config", str(config)]
    env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "m"))
    with in_terminal(argv, env=env, log=log) as proc:
        wait_healthy(f"http://127.0.0.1:{port}", proc, log)
        deadline = time.monotonic() + 20
        while log.read_text().count("Booting worker") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        r = requests.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "qwen3:32b", "messages": [{"role": "user", "content": "x"}]},
            timeout=10,
        )
        assert r.status_code == 503 and str(dead) not in r.text  # the URL is for the log only
        time.sleep(0.3)  # let the log line land
        assert ctrl_c(proc) == 0
    text = log.read_text()
    for bad in ("Traceback", "SystemExit", "greenlet", "failed with"):
        assert bad not in text, text
    assert text.count("auth is disabled") == 1, text
    assert all(GUNICORN_LINE.match(line) for line in text.splitlines() if line.strip()), text
    reachable = [line for line in text.splitlines() if "not reachable" in line]
    assert len(reachable) == 2, text  # at start-up, and for the request
    assert (
        f"Ollama is not reachable at http://127.0.0.1:{dead} (ollama-1): Connection refused"
        in (reachable[1])
    )
    runbook = (ROOT / "docs" / "operations.md").read_text()
    assert 'grep "not reachable"' in runbook


@pytest.mark.parametrize(
    "env, message",
    [
        ({"QWENGW_WORKERS": "abc"}, "QWENGW_WORKERS='abc': expected a whole number"),
        ({"QWENGW_WORKERS": "0"}, "QWENGW_WORKERS='0': must be greater than 0"),
        ({"QWENGW_BIND": "localhost"}, "QWENGW_BIND='localhost': expected HOST:PORT"),
        ({"QWENGW_GRACEFUL_TIMEOUT": "2m"}, "QWENGW_GRACEFUL_TIMEOUT='2m': expected a whole"),
        ({"QWENGW_MAX_REQUESTS": "-1"}, "QWENGW_MAX_REQUESTS='-1': must be 0 or more"),
    ],
)
def test_environment_overrides_are_checked_like_the_keys(env: dict[str, str], message: str):
    with pytest.raises(ConfigError) as e:
        apply_environment(load_settings({}), env)
    assert e.value.source == "the environment"
    assert any(p.startswith(message) for p in e.value.problems), e.value.problems
    with pytest.raises(ConfigError, match="workers: must be greater than 0"):
        settings_from_dict({"workers": 0})  # the YAML key says the same


def test_environment_overrides_apply() -> None:
    s = apply_environment(load_settings({}), {"QWENGW_BIND": "[::1]:9", "QWENGW_WORKERS": "3"})
    assert (s.listen, s.workers) == ("[::1]:9", 3)
    assert apply_environment(load_settings({}), {"QWENGW_WORKERS": ""}).workers == 2


@pytest.mark.integration
@pytest.mark.parametrize("command", ["serve", "gunicorn"])
def test_bad_environment_stops_both_entry_points_without_a_traceback(command: str) -> None:
    argv = ["-m", "qwengw", "serve"] if command == "serve" else ["-m", "gunicorn", "wsgi:app"]
    out = run(*argv, env=clean_env(QWENGW_WORKERS="abc", QWENGW_BIND=f"127.0.0.1:{free_port()}"))
    assert out.returncode == 2, out.stderr
    assert "QWENGW_WORKERS='abc': expected a whole number" in out.stderr
    assert "Traceback" not in out.stderr and "Failed to read config file" not in out.stderr


# ----------------------------------------------------------------------------- help (item 6)


def test_help_says_what_each_argument_is_and_the_environment() -> None:
    serve = run("-m", "qwengw", "serve", "--help").stdout
    for name in ("QWENGW_CONFIG", "QWENGW_BIND", "QWENGW_WORKERS", "QWENGW_GRACEFUL_TIMEOUT"):
        assert name in serve
    assert "positional arguments:\n  FILE " in run("-m", "qwengw", "check-config", "-h").stdout
    report = run("-m", "qwengw", "report", "--help").stdout
    assert "or - for standard input" in report
    assert run("-m", "qwengw", "--version").stdout.strip() == "qwengw 0.1.0"
    assert run("-m", "nginxgen", "--version").stdout.startswith("nginxgen 0.1.0")
    for sub in ("show", "write"):
        text = run("-m", "nginxgen", sub, "--help").stdout
        # every option has words after it (on its line, or on the next when it is long)
        bare = re.findall(r"^  (--[\w-]+(?: [A-Z.:]+)?)\n  (?! )", text + "\n  ", flags=re.M)
        assert bare == [], bare
    show = run("-m", "nginxgen", "show", "--help").stdout
    for default in ("fullchain.pem", "default: 80", "default: 443", "qwengw.access.log"):
        assert default in show, show
    assert "_letsencrypt" in show


@pytest.mark.integration
def test_check_config_reads_qwengw_config_like_serve(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text('listen: "127.0.0.1:18790"\n')
    out = run("-m", "qwengw", "check-config", env=clean_env(QWENGW_CONFIG=str(config)))
    assert out.returncode == 0 and f"{config}: OK" in out.stdout
    assert "127.0.0.1:18790" in out.stdout
    out = run(
        "-m",
        "qwengw",
        "check-config",
        env=clean_env(QWENGW_CONFIG=str(config), QWENGW_WORKERS="0"),
    )
    assert out.returncode == 1 and "QWENGW_WORKERS='0': must be greater than 0" in out.stdout


# ---------------------------------------------------------------- YAML and the two tools (8, 9)


def test_yaml_errors_name_the_file_and_line(tmp_path: Path, capsys) -> None:
    from qwengw.cli import main

    bad = tmp_path / "broken.yaml"
    bad.write_text('listen: "127.0.0.1:18789"\nauth:\n  enabled: true\n keys: []\n')
    assert main(["check-config", str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{bad} is invalid:") and "line 4, column 2" in out
    assert "<unicode string>" not in out


GATEWAY_FILES = {
    "good": ('listen: "127.0.0.1:18790"\nwhitelist: {trusted_proxies: ["127.0.0.1"]}\n', None),
    "body size as a word": ('request: {max_body_bytes: "big"}\n', "request.max_body_bytes"),
    "timeout with a unit": ('upstream: {first_token_timeout: "2m"}\n', "first_token_timeout"),
    "proxies as a string": ('whitelist: {trusted_proxies: "127.0.0.1"}\n', "expected a list"),
    "a typo": ("auth: {enabld: true}\n", "auth.enabld: unknown key"),
    "yaml syntax": ('listen: "a\nmodels: [1\n', "not valid YAML: line "),
    "bad listen": ('listen: "localhost"\n', "listen: expected HOST:PORT"),
    "workers zero": ("workers: 0\n", "workers: must be greater than 0"),
}


@pytest.mark.parametrize("case", GATEWAY_FILES)
def test_nginxgen_and_check_config_agree_on_the_gateway_config(case: str, tmp_path, capsys):
    from nginxgen.cli import main as nginxgen
    from qwengw.cli import main as qwengw

    text, problem = GATEWAY_FILES[case]
    path = tmp_path / "qwengw.yaml"
    path.write_text(text)
    checked = qwengw(["check-config", str(path)])
    said = capsys.readouterr().out
    shown = nginxgen(["show", "--server-name", "a.example", "--gateway-config", str(path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    if problem is None:
        assert checked == 0 and shown == 0 and "server 127.0.0.1:18790;" in out
        assert "warning" not in err
        return
    assert checked == 1 and shown == 2 and problem in said
    assert err == f"nginxgen: error: {said}"  # the very same lines


# ----------------------------------------------------------------------- messages (13, 15)


def test_nginx_error_pages_speak_the_gateways_words() -> None:
    import json

    from nginxgen.build import error_body
    from qwengw import create_app

    app = create_app({"whitelist": {"enabled": True, "ips": ["10.0.0.0/8"]}, "metrics": {}})
    denied = app.test_client().get("/v1/models", environ_base={"REMOTE_ADDR": "127.0.0.1"})
    assert denied.status_code == 403
    assert denied.get_json() == json.loads(error_body(403))


def test_placeholder_key_hash_is_warned(tmp_path: Path) -> None:
    example = (ROOT / "deploy" / "qwengw.yaml.example").read_text()
    assert "pip install 'qwengw[metrics]'" not in example
    (tmp_path / "config.yaml").write_text(example)
    (tmp_path / "keys.yaml").write_text("keys: []\n")
    s = load_settings(tmp_path / "config.yaml")
    text = " | ".join(config_warnings(s))
    assert "auth key 'ops' has a placeholder sha256" in text and "qwengw hash-key" in text


# -------------------------------------------------------------------- the repository (2, 16, 17)


def test_repository_around_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    first = re.search(r"```bash\n(.*?)```", readme, flags=re.S).group(1).splitlines()
    run_line, test_line = (line.split("#")[0].strip() for line in first)
    assert run_line == "bash scripts/serve.sh" and test_line == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()  # CI runs the same
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "ruff check" in test_sh and "ruff format -q --check" in test_sh
    assert "ruff==" in (ROOT / "setup.py").read_text()  # pinned: the formatter changes
    tour = readme[readme.index("## Five-minute tour") :]
    assert tour.index("pip install openai") < tour.index("from openai import OpenAI")
    ignored = subprocess.run(
        ["git", "check-ignore", "qwengw.yaml", "audit.log", "report.html"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if ignored.returncode == 128:
        pytest.skip("not a git checkout")
    assert ignored.stdout.split() == ["qwengw.yaml", "audit.log", "report.html"]


def test_connect_failures_are_said_in_the_systems_words() -> None:
    from qwengw.http1 import ConnectFailed, HostPool
    from qwengw.upstream import connect_failure, url_for_log

    assert url_for_log("http://user:secret@10.0.0.5:11434") == "http://10.0.0.5:11434"
    assert url_for_log("http://[::1]:11434") == "http://[::1]:11434"
    pool = HostPool(f"http://127.0.0.1:{free_port()}", maxsize=1)
    with pytest.raises(ConnectFailed) as e:
        pool.request("GET", "/", None, {}, connect_timeout=1, read_timeout=1)
    assert connect_failure(e.value, 1.0) == "Connection refused"
    unknown = HostPool("http://no-such-host.invalid:11434", maxsize=1)
    with pytest.raises(ConnectFailed) as e:
        unknown.request("GET", "/", None, {}, connect_timeout=1, read_timeout=1)
    assert "Name or service not known" in connect_failure(e.value, 1.0) or "resolution" in (
        connect_failure(e.value, 1.0)
    )
    timeout = ConnectFailed(TimeoutError("timed out"))
    assert connect_failure(timeout, 3.0) == "no answer within upstream.connect_timeout (3 s)"
