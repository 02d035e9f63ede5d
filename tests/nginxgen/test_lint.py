"""Lint rules: the seed site's findings, and one small bad config per rule."""

import json
from pathlib import Path

import pytest

from nginxgen.build import render
from nginxgen.cli import main
from nginxgen.lint import RULES, lint_file, lint_text
from nginxgen.model import GatewaySettings, SiteSpec

DATA = Path(__file__).resolve().parent.parent / "data"
SEED = DATA / "seed-site.conf"

# The seed's defects (NGINX-NOTES §3.2) as rule ids, with the lines they point at.
SEED_EXPECTED = {
    ("NG01", 29),  # asset location drops the security headers
    ("NG03", 29),  # asset regex has no handler → 404
    ("NG04", 33),  # the regex shadows /v1/
    ("NG05", 34),  # proxy_pass .../ strips /v1/
    ("NG06", 23),  # Connection "upgrade" hard-coded
    ("NG08", 33),  # SSE buffered
    ("NG09", 33),  # 60 s read timeout
    ("NG12", 16),  # X-XSS-Protection
    ("NG14", 8),  # no HSTS
    ("NG15", 17),  # Referrer-Policy leaks
    ("NG15", 18),  # CSP unsafe-inline, schemes
    ("NG16", 8),  # no ssl_protocols / ssl_ciphers
    ("NG20", 3),  # server_tokens on (port 80)
    ("NG20", 8),  # server_tokens on (port 443)
    ("NG21", 33),  # client_max_body_size default 1m
    ("NG22", 3),  # server-level return, no ACME
    ("NG23", 6),  # $server_name in the redirect
    ("NG24", 26),  # XFF passthrough (/)
    ("NG24", 37),  # XFF passthrough (/v1/)
    ("NG26", 13),  # dead ssl_trusted_certificate
    ("NG29", 29),  # 1y immutable on unhashed files
    ("NG30", 33),  # no rate limit
}


def test_seed_site_gets_the_findings_it_deserves():
    findings = lint_file(SEED)
    got = {(f.rule, f.line) for f in findings}
    assert got == SEED_EXPECTED
    assert all(f.file == str(SEED) and f.why and f.fix for f in findings)
    assert len(findings) == 24


def test_seed_against_gateway_config(tmp_path: Path):
    gw = GatewaySettings.from_mapping({"listen": ":19000", "request": {"max_body_bytes": 26214400}})
    rules = {(f.rule, f.severity) for f in lint_file(SEED, gateway=gw)}
    assert ("NG33", "error") in rules  # proxied to a port the gateway does not listen on
    assert ("NG33", "warning") in rules  # 127.0.0.1 not a trusted proxy
    assert ("NG21", "warning") in rules


@pytest.mark.parametrize("version", [(1, 22, 1), (1, 25, 1), (1, 27, 0)])
def test_emitted_default_site_is_clean(version):
    spec = SiteSpec(server_names=("ai.example.com",), nginx_version=version)
    assert lint_text(render(spec), nginx_version=version) == []


def test_http2_gate():
    new = render(SiteSpec(server_names=("a.example",), nginx_version=(1, 25, 1)))
    assert [f.rule for f in lint_text(new, nginx_version=(1, 22, 1))] == ["NG18"]
    old = render(SiteSpec(server_names=("a.example",)))
    assert [f.rule for f in lint_text(old, nginx_version=(1, 25, 1))] == ["NG18", "NG18"]


def _rules(text: str, **kw) -> set[str]:
    return {f.rule for f in lint_text(text, **kw)}


SNIPPETS = {
    "NG02": "server { listen 80; server_tokens off; proxy_set_header Host $host;"
    " location / { proxy_set_header X-A 1; return 200; } }",
    "NG07": "server { listen 80; server_tokens off; location / {"
    " proxy_set_header Connection $connection_upgrade; return 200; } }",
    "NG10": "upstream u { server 127.0.0.1:1; keepalive 8; }"
    " server { listen 80; server_tokens off; location / { proxy_pass http://u; } }",
    "NG11": "server { listen 80; server_tokens off; location / { proxy_pass http://backend; } }",
    "NG13": "server { listen 80; server_tokens off; add_header X-Frame-Options DENY;"
    " location / { return 200; } }",
    "NG19": "server { listen 80; server_tokens off; add_header_inherit merge;"
    " location / { return 200; } }",
    "NG25": "server { listen 80; server_tokens off; location / {"
    " proxy_set_header Host $http_host; return 200; } }",
    "NG32": "server { listen 80; server_tokens off;"
    " location ^~ /.well-known/acme-challenge/ { root /x; } location / { return 200; } }"
    " server { listen 443 ssl; server_tokens off; location / { return 200; } }",
    "NG00": "server { listen 80; location / { return 200; }",
}


@pytest.mark.parametrize("rule_id", sorted(SNIPPETS))
def test_rule_fires_on_minimal_bad_config(rule_id):
    assert rule_id in _rules(SNIPPETS[rule_id])


def test_every_rule_is_documented():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "nginx.md").read_text()
    for rule_id, rule in RULES.items():
        assert f"### {rule_id} {rule.name} (" in doc, rule_id
        assert f"| {rule_id} |" in doc, rule_id  # the rule table
    for rule_id in ("NG00", "NG34", "NG35", "NG36"):  # reported while reading the files
        assert f"### {rule_id} " in doc and f"| {rule_id} |" in doc, rule_id


def test_keepalive_needs_an_empty_connection_for_plain_requests():
    site = (
        "map $http_upgrade $connection_upgrade {{ default upgrade; '' {empty}; }}"
        " upstream u {{ server 127.0.0.1:1; keepalive 8; }}"
        " server {{ listen 80; server_tokens off; location / {{ proxy_pass http://u;"
        " proxy_http_version 1.1; proxy_set_header Connection $connection_upgrade; }} }}"
    )
    assert "NG10" in _rules(site.format(empty="close"))  # nginx's websocket example
    assert "NG10" not in _rules(site.format(empty="''"))


def test_zones_defined_in_conf_d_are_seen_from_a_site(tmp_path: Path):
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "sites-enabled").mkdir()
    (tmp_path / "nginx.conf").write_text(
        "events {}\nhttp {\n    include conf.d/*.conf;\n    include sites-enabled/*;\n}\n"
    )
    (tmp_path / "conf.d" / "zones.conf").write_text(
        "limit_req_zone $binary_remote_addr zone=login:10m rate=1r/s;\n"
        "limit_conn_zone $binary_remote_addr zone=perip:10m;\n"
    )
    site = tmp_path / "sites-enabled" / "app"
    site.write_text(
        "server {\n    listen 80;\n    server_tokens off;\n    location = /login {\n"
        "        limit_req zone=login burst=5 nodelay;\n        limit_conn perip 10;\n"
        "        limit_req zone=nowhere;\n        return 200;\n    }\n}\n"
    )
    undefined = [f.message for f in lint_file(site) if f.rule == "NG30" and f.severity == "error"]
    assert undefined == ["limit_req zone nowhere is not defined"]


def test_suppression_comment(tmp_path: Path):
    text = "# nginxgen-lint: disable=NG11\n" + SNIPPETS["NG11"]
    assert "NG11" not in _rules(text)


def test_whole_nginx_conf_is_linted_through_includes(tmp_path: Path):
    (tmp_path / "site.conf").write_text(SEED.read_text())
    conf = tmp_path / "nginx.conf"
    conf.write_text(f"events {{}}\nhttp {{\n    include {tmp_path / 'site.conf'};\n}}\n")
    assert {(f.rule, f.line) for f in lint_file(conf)} == SEED_EXPECTED


def test_cli_lint_text_and_json(capsys):
    assert main(["lint", "--no-gixy", str(SEED)]) == 1
    out = capsys.readouterr().out
    assert "NG05 [error]" in out and "why:" in out and "fix:" in out
    assert out.strip().endswith(f"24 finding(s) in {SEED} (http context)")
    assert main(["lint", "--no-gixy", "--json", str(SEED)]) == 1
    data = json.loads(capsys.readouterr().out)
    assert {"rule", "severity", "file", "line", "message", "why", "fix"} == set(data[0])


def test_cli_lint_clean_site_exits_0(tmp_path: Path, capsys):
    site = tmp_path / "site.conf"
    assert main(["show", "--server-name", "a.example"]) == 0
    site.write_text(capsys.readouterr().out)
    assert main(["lint", "--no-gixy", str(site)]) == 0


def test_cli_lint_missing_file_is_a_usage_error(capsys):
    assert main(["lint", "/nonexistent/site.conf"]) == 2
    assert "no such file" in capsys.readouterr().err


def _lines(text: str, rule_id: str, **kw) -> list[int]:
    return [f.line for f in lint_text(text, **kw) if f.rule == rule_id]


OK_SERVER = "server_tokens off; location / { return 200; }"


def test_ng28_directive_twice_in_one_block():
    bad = (
        f"server {{ listen 80; {OK_SERVER}\n"
        "    client_max_body_size 1m;\n"
        "    client_max_body_size 25m;\n"
        "    location /v1/ { proxy_read_timeout 300s;\n"
        "        proxy_read_timeout 60s; proxy_pass http://127.0.0.1:1; } }"
    )
    assert _lines(bad, "NG28") == [3, 5]
    # array directives repeat legitimately
    good = (
        "server { listen 80; server_tokens off; add_header A 1; add_header B 2;"
        " location / { proxy_set_header A 1; proxy_set_header B 2;"
        " proxy_pass http://127.0.0.1:1; } }"
    )
    assert _lines(good, "NG28") == []


def test_ng28_two_default_servers_on_one_socket():
    bad = (
        f"server {{ listen 80 default_server; {OK_SERVER} }}\n"
        f"server {{ listen *:80 default_server; {OK_SERVER} }}"
    )
    assert _lines(bad, "NG28") == [2]
    good = (
        f"server {{ listen 80 default_server; {OK_SERVER} }}\n"
        f"server {{ listen [::]:80 default_server; listen 8080 default_server; {OK_SERVER} }}"
    )
    assert _lines(good, "NG28") == []


def test_ng17_tls_policy_in_non_default_server():
    bad = (
        f"server {{ listen 443 ssl; server_name a; ssl_protocols TLSv1.2 TLSv1.3; {OK_SERVER} }}\n"
        f"server {{ listen 443 ssl; server_name b; ssl_protocols TLSv1.3; {OK_SERVER} }}"
    )
    assert _lines(bad, "NG17") == [2]
    # at http level every server gets it; a non-default server's ssl_ciphers is honoured
    good = (
        "ssl_protocols TLSv1.2 TLSv1.3;\n"
        f"server {{ listen 443 ssl; server_name a; {OK_SERVER} }}\n"
        f"server {{ listen 443 ssl; server_name b; ssl_ciphers HIGH:!aNULL; {OK_SERVER} }}"
    )
    assert _lines(good, "NG17") == []


# Valid, common configs that used to get error-level findings (issue #12): each line is
# (rule, config, severities the rule may report there; empty = none at all).
TLS = "ssl_certificate c.pem; ssl_certificate_key k.pem; server_tokens off;"
CALIBRATED = [
    ("NG22", "server { listen 80 default_server; root /var/www/html;"
     " location / { try_files $uri $uri/ =404; } }", set()),
    ("NG22", "server { listen 80; return 301 https://$host$request_uri; }", {"info"}),
    ("NG04", "server { listen 80; location /api/store/ { return 204; }"
     " location ~ ^/api/[1-9]\\d*/ { return 204; } }", set()),
    ("NG04", "server { listen 80; location /api/ { return 204; }"
     " location ~ \\.png$ { return 204; } }", {"warning"}),
    ("NG11", "server { listen 80; location / { proxy_pass http://unix:/run/app.sock; } }", set()),
    ("NG11", "server { listen 80; location / { proxy_pass http://open-webui:8080; } }", set()),
    ("NG05", "server { listen 80; location / { proxy_pass http://unix:/run/app.sock; } }", set()),
    ("NG05", "server { listen 80; location /app/ { proxy_pass http://app:3000/; } }", {"info"}),
    ("NG28", f"server {{ listen 443 ssl; listen 443 quic reuseport; {TLS} }}", set()),
    ("NG16", f"server {{ listen 443 ssl; ssl_protocols TLSv1.3; {TLS} }}", set()),
    ("NG16", f"server {{ listen 443 ssl; ssl_protocols TLSv1.2; ssl_ciphers HIGH; {TLS} }}",
     {"warning"}),  # HIGH alone includes the anonymous ADH suites
    ("NG16", f"server {{ listen 443 ssl; ssl_protocols TLSv1.2;"
     f" ssl_ciphers HIGH:!aNULL:!MD5; {TLS} }}", set()),
    ("NG07", "map $sent_http_content_type $xfo { ~*text/html DENY; }"
     " server { listen 80; add_header X-Frame-Options $xfo always; }", set()),
    ("NG14", f"server {{ listen 443 ssl default_server; {TLS} return 444; }}", set()),
    ("NG14", f"server {{ listen 443 ssl; {TLS} return 301 https://example.com$request_uri; }}",
     {"warning"}),  # only HSTS is asked of a redirect-only server
    ("NG32", f"server {{ listen 80 default_server; return 444; }}"
     f" server {{ listen 443 ssl; {TLS} return 204; }}", set()),
]  # fmt: skip


@pytest.mark.parametrize("rule_id,text,allowed", CALIBRATED)
def test_calibrated_rules_on_common_valid_configs(rule_id, text, allowed):
    found = [f for f in lint_text(text) if f.rule == rule_id]
    assert {f.severity for f in found} == allowed, found


def test_missing_header_findings_say_why_that_header(tmp_path: Path):
    text = f"server {{ listen 443 ssl; {TLS} return 301 https://example.com$request_uri; }}"
    (only,) = [f for f in lint_text(text) if f.rule == "NG14"]
    assert "Strict-Transport-Security" in only.message and "downgraded" in only.why
    text = f"server {{ listen 443 ssl; {TLS} add_header Strict-Transport-Security"
    text += " 'max-age=63072000' always; location / { return 204; } }"
    whys = {f.message.split("missing ")[1]: f.why for f in lint_text(text) if f.rule == "NG14"}
    assert "clickjacking" in whys["X-Frame-Options (or CSP frame-ancestors)"]
    assert "HSTS" not in " ".join(whys.values())


def test_cli_fail_on_sets_the_exit_code_threshold(tmp_path: Path, capsys):
    site = tmp_path / "site.conf"
    site.write_text(SNIPPETS["NG10"])  # a warning only (keepalive not reused)
    severities = {f.severity for f in lint_file(site)}
    assert severities == {"warning"}
    assert main(["lint", "--no-gixy", str(site)]) == 1
    assert main(["lint", "--no-gixy", "--fail-on", "warning", str(site)]) == 1
    assert main(["lint", "--no-gixy", "--fail-on", "error", str(site)]) == 0
    assert "NG10 [warning]" in capsys.readouterr().out  # printed either way
