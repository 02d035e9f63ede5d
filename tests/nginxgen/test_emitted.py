"""Every site nginxgen emits, at several option sets: lint-clean, gixy-clean, ``nginx -t`` OK,
and nginx's own /v1/ errors are OpenAI-shaped JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from nginxgen.build import render
from nginxgen.lint import lint_text
from nginxgen.model import TLS, GatewaySettings, Headers, RateLimit

OPTION_SETS = {
    "defaults": {},
    "static-allow-nolimit": {"allow": ("127.0.0.1", "10.0.0.0/8"), "rate_limit": None},
    "multi-upstreams-names": {
        "server_names": ("ai.example.test", "chat.example.test"),
        "ui": ("127.0.0.1:8080", "127.0.0.1:8081"),
        "gateway": ("127.0.0.1:18789", "127.0.0.1:18790"),
        "headers": Headers(csp_report_only=True, hsts_preload=True, frame_options="SAMEORIGIN"),
    },
    "stapling": {"stapling": True},
    "gateway-config": {"gateway_settings": True},
    "nginx-1.25": {"nginx_version": (1, 25, 1)},
}
GW = GatewaySettings.from_mapping(
    {
        "listen": ":18799",
        "request": {"max_body_bytes": 26214400},
        "upstream": {"first_token_timeout": 600, "idle_timeout": 90},
        "whitelist": {"trusted_proxies": ["127.0.0.1"]},
    }
)


def make_spec(ng, work: Path, name: str):
    opts = dict(OPTION_SETS[name])
    stapling = opts.pop("stapling", False)
    with_gw = opts.pop("gateway_settings", False)
    if "allow" in opts:
        (work / "static").mkdir(parents=True, exist_ok=True)
        opts["static_root"] = str(work / "static")
    spec = ng.edge_spec(work, **opts)
    if stapling:
        files = ng.issue_certs(work / "tls")
        spec = replace(spec, tls=TLS(files.cert, files.key, files.chain))
        assert spec.tls.stapling
    if with_gw:
        spec = spec.with_gateway(GW)
    return spec


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_emitted_site_lints_clean(ng, tmp_path, name):
    spec = make_spec(ng, tmp_path, name)
    gw = GW if name == "gateway-config" else None
    assert lint_text(render(spec), nginx_version=spec.nginx_version, gateway=gw) == []


@pytest.mark.parametrize("name", sorted(OPTION_SETS))
def test_emitted_site_passes_gixy(ng, tmp_path, gixy_findings, name):
    site = render(make_spec(ng, tmp_path, name))
    serious = [f for f in gixy_findings(site) if f["severity"] in ("MEDIUM", "HIGH")]
    if serious:
        # gixy-ng 0.2.x very rarely reports findings for a site it passes on every other run
        # (seen about once in dozens of runs); a real finding is deterministic and stays.
        serious = [f for f in gixy_findings(site) if f["severity"] in ("MEDIUM", "HIGH")]
    assert serious == [], serious


def test_seed_site_fails_gixy(gixy_findings):
    seed = (Path(__file__).resolve().parent.parent / "data" / "seed-site.conf").read_text()
    plugins = {f["plugin"] for f in gixy_findings(seed)}
    assert {"version_disclosure", "add_header_redefinition", "hsts_header"} <= plugins


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(set(OPTION_SETS) - {"nginx-1.25"}))
def test_nginx_t_accepts_emitted_site(ng, tmp_path, name):
    ng.need_tool(ng.NGINX, "nginx")
    rc, out = ng.nginx_t(render(make_spec(ng, tmp_path, name)), tmp_path)
    assert rc == 0, out
    assert "test is successful" in out


@pytest.mark.integration
def test_nginx_t_rejects_125_syntax_on_122(ng, tmp_path):
    ng.need_tool(ng.NGINX, "nginx")
    rc, out = ng.nginx_t(render(make_spec(ng, tmp_path, "nginx-1.25")), tmp_path)
    assert rc != 0 and 'unknown directive "http2"' in out


def _openai_error(resp, status: int, code: str) -> None:
    assert resp.status_code == status
    assert resp.headers["content-type"].startswith("application/json")
    err = resp.json()["error"]
    assert err["code"] == code and err["param"] is None and err["message"] and err["type"]
    assert "strict-transport-security" in resp.headers  # headers on error answers too


@pytest.mark.integration
def test_nginx_errors_on_v1_are_openai_json(ng, tmp_path, run_nginx, ui_stub):
    dead = f"127.0.0.1:{ng.free_port()}"  # nothing listens: 502
    spec = ng.edge_spec(
        tmp_path,
        ui=ui_stub.addr,
        gateway=dead,
        rate_limit=RateLimit(rate="1r/m", burst=0, connections=5),
        client_max_body_size=1024,
    )
    edge = run_nginx(render(spec), tmp_path)
    url = edge.url("/v1/chat/completions")
    r = requests.post(url, data=b"{}", verify=edge.ca_pem, timeout=10)
    _openai_error(r, 502, "upstream_unavailable")
    r = requests.post(url, data=b"{}", verify=edge.ca_pem, timeout=10)
    _openai_error(r, 429, "rate_limit_exceeded")
    r = requests.post(url, data=b"x" * 4096, verify=edge.ca_pem, timeout=10)
    _openai_error(r, 413, "request_too_large")
    # The UI is unaffected and keeps its HTML/JSON.
    assert requests.get(edge.url("/"), verify=edge.ca_pem, timeout=10).json()["ui"]


@pytest.mark.integration
def test_static_root_and_allowlist(ng, tmp_path, run_nginx, ui_stub, gateway_stub):
    static = tmp_path / "static"
    (static / "assets").mkdir(parents=True)
    (static / "assets" / "disk.js").write_text("from disk")
    spec = ng.edge_spec(
        tmp_path,
        ui=ui_stub.addr,
        gateway=gateway_stub.addr,
        static_root=str(static),
        allow=("10.9.9.9",),
    )
    edge = run_nginx(render(spec), tmp_path)
    r = requests.get(edge.url("/assets/disk.js"), verify=edge.ca_pem, timeout=10)
    assert r.status_code == 200 and r.text == "from disk"
    assert "expires" in r.headers and "content-security-policy" in r.headers
    r = requests.get(edge.url("/assets/app.js"), verify=edge.ca_pem, timeout=10)
    assert r.status_code == 200 and r.content == ng.APP_JS  # not on disk → the UI answers
    assert "content-security-policy" in r.headers
    r = requests.get(edge.url("/v1/models"), verify=edge.ca_pem, timeout=10)
    _openai_error(r, 403, "ip_not_allowed")
    json.dumps(r.json())
