"""Configuration: the seed file loads unchanged; every mistake is named by its key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qwengw.config import (
    ConfigError,
    Settings,
    hash_key,
    load_settings,
    redact_uri,
    settings_from_dict,
    storage_endpoints,
    warnings,
)

SEED = """\
listen: ":18789"
ollama_api: "http://localhost:11434"
log_level: "info"
rate_limit: {enabled: true, max_requests: 30, window_seconds: 60}
auth: {enabled: true, header_key: "X-Api-Key", valid_keys: ["prod-key-2024-qwen3"]}
whitelist: {enabled: true, ips: ["127.0.0.1", "10.0.0.0/16"]}
"""


def test_seed_config_loads_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(SEED)
    s = load_settings(path)
    assert (s.listen_host, s.listen_port) == ("0.0.0.0", 18789)
    assert s.ollama_urls == ("http://localhost:11434",)
    assert s.rate_limit.enabled and s.rate_limit.max_requests == 30
    assert s.auth.enabled and s.auth.header_key == "X-Api-Key" and s.auth.plain_key_count == 1
    assert s.auth.keys[0].sha256 == hash_key("prod-key-2024-qwen3")
    assert "prod-key-2024-qwen3" not in repr(s)  # the key itself is not kept
    assert [str(n) for n in s.whitelist.ips] == ["127.0.0.1/32", "10.0.0.0/16"]


def test_defaults() -> None:
    s = load_settings({})
    assert s.listen == "127.0.0.1:18789" and s == Settings()
    assert not s.auth.enabled and s.request.max_prompt_chars == 32768


@pytest.mark.parametrize(
    "raw, problem",
    [
        ({"listne": ":1"}, "listne: unknown key"),
        ({"auth": {"enabled": "yes"}}, "auth.enabled: expected true or false, got a string"),
        ({"rate_limit": {"max_requests": 0}}, "rate_limit.max_requests: must be greater than 0"),
        (
            {"rate_limit": {"max_requests": True}},
            "rate_limit.max_requests: expected an integer, got a boolean",
        ),
        ({"rate_limit": {"storage": "mysql://x"}}, "rate_limit.storage: expected memory://"),
        (
            {"rate_limit": {"on_storage_error": "maybe"}},
            "rate_limit.on_storage_error: expected 'open' or 'closed'",
        ),
        ({"whitelist": {"ips": ["10.0.0.300"]}}, "whitelist.ips[0]: '10.0.0.300' is not an IP"),
        ({"listen": "localhost"}, "listen: expected HOST:PORT"),
        ({"ollama_api": "localhost:11434"}, "ollama_api: expected an http:// or https:// URL"),
        ({"auth": {"enabled": True}}, "auth: enabled but no keys are configured"),
        (
            {"auth": {"keys": [{"id": "a", "sha256": "xyz"}]}},
            "auth.keys[0].sha256: required, 64 hex",
        ),
        (
            {"auth": {"keys": [{"id": "a", "sha256": "0" * 64, "rate_limit": "lots"}]}},
            "auth.keys[0].rate_limit: 'lots' is not a rate",
        ),
        ({"upstream": {"idle_timeout": -1}}, "upstream.idle_timeout: must be greater than 0"),
        ({"models": {"pub": 3}}, "models.pub: expected a non-empty string"),
        (
            {"ollama_api": "http://u:secret@10.0.0.1:11434"},
            "ollama_api: credentials, query strings",
        ),
        (
            {"ollama_api": "http://10.0.0.1:11434/ollama"},
            "ollama_api: a path prefix is not supported",
        ),
        ({"listen": 18789}, 'listen: expected a quoted "HOST:PORT", e.g. "127.0.0.1:18789"'),
        ([1, 2], "(top level): expected a mapping"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, object], problem: str) -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_dict(raw)
    assert any(p.startswith(problem) for p in e.value.problems), e.value.problems


def test_bad_key_entry_is_not_also_reported_as_no_keys() -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"auth": {"enabled": True, "keys": [{"id": "a", "sha256": "<paste>"}]}})
    assert len(e.value.problems) == 1 and "sha256" in e.value.problems[0]
    assert "secret" not in str(e.value)


def test_warnings() -> None:
    s = settings_from_dict({"listen": ":18789", "rate_limit": {"enabled": True}})
    text = " | ".join(warnings(s, workers=2))
    assert "up to 2x the configured rate" in text and "every interface" in text
    assert "auth is disabled" in text


def test_all_problems_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"listen": 5, "log_level": "loud", "audit": {"pth": "x"}})
    assert len(e.value.problems) == 3


def test_hashed_keys_and_keys_file(tmp_path: Path) -> None:
    (tmp_path / "keys.yaml").write_text(f"keys:\n  - id: file-key\n    sha256: {hash_key('k2')}\n")
    (tmp_path / "c.yaml").write_text(
        f"auth:\n  enabled: true\n  keys_file: keys.yaml\n  keys:\n"
        f"    - {{id: clawdbot, sha256: {hash_key('k1')}, rate_limit: 60/minute, "
        f"max_concurrent: 4}}\n"
    )
    s = load_settings(tmp_path / "c.yaml")
    assert [k.id for k in s.auth.keys] == ["clawdbot", "file-key"]
    assert s.auth.keys[0].max_concurrent == 4 and s.auth.plain_key_count == 0


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwengw.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_cli(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(SEED)
    out = run_cli("check-config", str(good))
    assert out.returncode == 0 and "OK" in out.stdout and "plain-text" in out.stdout
    assert "prod-key-2024-qwen3" not in out.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("rate_limit: {enabled: true, max_requests: -3}\nauth: {enabld: true}\n")
    out = run_cli("check-config", str(bad))
    assert out.returncode == 1
    assert "rate_limit.max_requests: must be greater than 0" in out.stdout
    assert "auth.enabld: unknown key" in out.stdout


def test_hash_key_cli() -> None:
    out = run_cli("hash-key", stdin="prod-key-2024-qwen3\n")
    assert out.returncode == 0 and out.stdout.strip() == hash_key("prod-key-2024-qwen3")
    assert len(out.stdout.strip()) == 64


def test_audit_housekeeping_setting() -> None:
    assert settings_from_dict({}).audit.housekeeping is False
    assert settings_from_dict({"audit": {"housekeeping": True}}).audit.housekeeping is True
    with pytest.raises(ConfigError) as e:
        settings_from_dict({"audit": {"housekeeping": "yes"}})
    assert e.value.problems == ["audit.housekeeping: expected true or false, got a string"]


def test_client_section() -> None:
    s = load_settings({})
    assert (s.client.body_timeout, s.client.send_timeout, s.client.max_connections) == (30, 60, 250)
    s = load_settings({"client": {"body_timeout": 5, "send_timeout": 1.5, "max_connections": 0}})
    assert s.client.body_timeout == 5.0 and isinstance(s.client.body_timeout, float)
    with pytest.raises(ConfigError) as err:
        settings_from_dict({"client": {"body_timeout": float("inf"), "max_connections": -1}})
    assert err.value.problems == [
        "client.body_timeout: must be a finite number",
        "client.max_connections: must be 0 or more",
    ]


@pytest.mark.parametrize(
    ("uri", "shown", "endpoints"),
    [
        ("memory://", "memory://", []),
        ("redis://:s3cret@10.0.0.5:6380/1", "redis://10.0.0.5:6380/1", [("10.0.0.5", 6380)]),
        ("rediss://user:pw@cache/0?ssl_cert_reqs=none", "rediss://cache/0", [("cache", 6379)]),
        ("redis+unix://:pw@/run/r.sock?db=2", "redis+unix:///run/r.sock", ["/run/r.sock"]),
        (
            "redis+sentinel://:pw@s1:26379,[::1]/main",
            "redis+sentinel://s1:26379,[::1]/main",
            [("s1", 26379), ("::1", 26379)],
        ),
    ],
)
def test_storage_uris_for_logs_and_start_up_checks(
    uri: str, shown: str, endpoints: list[object]
) -> None:
    assert redact_uri(uri) == shown
    assert storage_endpoints(uri) == endpoints


def test_an_audit_directory_that_is_missing_is_warned(tmp_path: Path) -> None:
    from qwengw.config import warnings

    missing = load_settings({"audit": {"path": str(tmp_path / "nope" / "audit.log")}})
    assert any("audit.path: the directory" in w and "nope" in w for w in warnings(missing))
    present = load_settings({"audit": {"path": str(tmp_path / "audit.log")}})
    assert not any(w.startswith("audit.path") for w in warnings(present))
    stdout = load_settings({"audit": {"path": "-"}})
    assert not any(w.startswith("audit.path") for w in warnings(stdout))
