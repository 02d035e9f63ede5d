"""SiteSpec validation and the gateway's YAML as the source of truth."""

from pathlib import Path

import pytest

from nginxgen.model import (
    TLS,
    GatewaySettings,
    Headers,
    RateLimit,
    SiteSpec,
    SpecError,
    gateway_warnings,
    parse_size,
    parse_version,
)


def test_defaults_use_letsencrypt_layout_and_loopback_upstreams():
    spec = SiteSpec(server_names=("ai.example.com",))
    assert spec.tls == TLS(
        "/etc/letsencrypt/live/ai.example.com/fullchain.pem",
        "/etc/letsencrypt/live/ai.example.com/privkey.pem",
        "/etc/letsencrypt/live/ai.example.com/chain.pem",
    )
    assert spec.tls.stapling is False  # Let's Encrypt has no OCSP responders any more
    assert spec.ui == ("127.0.0.1:8080",) and spec.gateway == ("127.0.0.1:18789",)
    assert spec.nginx_version == (1, 22, 1) and not spec.http2_directive
    assert spec.client_max_body_size == 1048576 and spec.read_timeout >= 300


def test_stapling_is_automatic_for_non_letsencrypt_chains():
    assert TLS("/etc/ssl/site.pem", "/etc/ssl/site.key", "/etc/ssl/chain.pem").stapling is True
    assert TLS("/etc/ssl/site.pem", "/etc/ssl/site.key").stapling is False
    with pytest.raises(SpecError):
        TLS("/c", "/k", stapling=True)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_names": ()},
        {"server_names": ("bad name",)},
        {"server_names": ("a.example",), "ui": ("nohostport",)},
        {"server_names": ("a.example",), "gateway": ()},
        {"server_names": ("a.example",), "allow": ("10.0.0.0/33",)},
        {"server_names": ("a.example",), "http_port": 443},
        {"server_names": ("a.example",), "read_timeout": 60},
        {"server_names": ("a.example",), "static_root": "relative/dir"},
        {"server_names": ("a.example",), "static_root": "/"},
    ],
)
def test_invalid_specs_are_refused(kwargs):
    with pytest.raises(SpecError):
        SiteSpec(**kwargs)


def test_headers_and_rate_limit_validation():
    with pytest.raises(SpecError):
        Headers(hsts_max_age=3600)
    with pytest.raises(SpecError):
        Headers(csp="#nope")
    with pytest.raises(SpecError):
        Headers(frame_options="ALLOW-FROM x")
    with pytest.raises(SpecError):
        RateLimit(rate="fast")


def test_units():
    assert parse_size("25m") == 25 * 1024 * 1024
    assert parse_size("512k") == 512 * 1024 and parse_size(1000) == 1000
    assert parse_version("1.25") == (1, 25, 0) and parse_version("1.22.1") == (1, 22, 1)
    with pytest.raises(SpecError):
        parse_size("lots")


def test_gateway_defaults_and_listen_forms():
    gw = GatewaySettings.from_mapping({})
    assert gw.upstream == "127.0.0.1:18789" and gw.max_body_bytes == 1048576
    assert gw.read_timeout == 300  # max(120, 60) + 30 < 300
    assert GatewaySettings.from_mapping({"listen": ":18790"}).upstream == "127.0.0.1:18790"
    assert GatewaySettings.from_mapping({"listen": "0.0.0.0:1"}).upstream == "127.0.0.1:1"


def test_gateway_yaml_drives_the_edge(tmp_path: Path):
    gw_file = tmp_path / "gateway.yaml"
    gw_file.write_text(
        "listen: ':19000'\nrequest: {max_body_bytes: 26214400}\n"
        "upstream: {first_token_timeout: 600, idle_timeout: 90, connect_timeout: 4}\n"
        "whitelist: {trusted_proxies: ['127.0.0.1/32']}\n"
    )
    site = tmp_path / "site.yaml"
    site.write_text(
        "server_name: ai.example.com\ngateway_config: gateway.yaml\n"
        "rate_limit: {rate: 5r/s, burst: 5, connections: 4}\nnginx_version: '1.25.1'\n"
    )
    spec = SiteSpec.from_yaml(site)
    assert spec.gateway == ("127.0.0.1:19000",)
    assert spec.client_max_body_size == 26214400
    assert spec.read_timeout == 630 and spec.connect_timeout == 6
    assert spec.rate_limit == RateLimit("5r/s", 5, 4)
    assert spec.http2_directive
    assert gateway_warnings(spec, GatewaySettings.from_yaml(gw_file)) == []


def test_untrusted_nginx_address_is_warned():
    spec = SiteSpec(server_names=("a.example",))
    gw = GatewaySettings.from_mapping({"whitelist": {"trusted_proxies": ["10.0.0.0/8"]}})
    (warning,) = gateway_warnings(spec, gw)
    assert "127.0.0.1" in warning and "trusted_proxies" in warning


def test_unknown_yaml_key_is_an_error(tmp_path: Path):
    site = tmp_path / "site.yaml"
    site.write_text("server_name: a.example\nserver_tokens: on\n")
    with pytest.raises(SpecError, match="unknown key"):
        SiteSpec.from_yaml(site)
