"""Reading a config the way nginx does: includes, file:line, cycles, context, directives."""

from __future__ import annotations

from pathlib import Path

import pytest

from nginxgen.cli import main
from nginxgen.lint import lint
from nginxgen.loader import detect_context, find_conf_dir, load


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def rules(path: Path, **kw) -> set[tuple[str, str, int]]:
    return {(f.rule, Path(f.file).name, f.line) for f in lint(path, **kw).findings}


MAIN = "events {}\nhttp {\n    include sites-enabled/*;\n}\n"
SITE = "server {\n    listen 80;\n    server_tokens off;\n    include snippets/x.conf;\n}\n"


def test_relative_include_starts_at_the_conf_prefix(tmp_path: Path):
    write(tmp_path, {"nginx.conf": MAIN, "sites-available/a": SITE})
    write(tmp_path, {"snippets/x.conf": "location / {\n    return 204;\n}\n"})
    site = tmp_path / "sites-available" / "a"
    assert find_conf_dir(site) == tmp_path
    assert lint(site).findings == []  # snippets/x.conf found under the prefix, not beside a


def test_conf_dir_option_and_missing_include(tmp_path: Path):
    write(tmp_path, {"site.conf": SITE, "prefix/snippets/x.conf": "location / { return 204; }"})
    missing = [f for f in lint(tmp_path / "site.conf").findings if f.rule == "NG34"]
    assert [(f.line, f.severity) for f in missing] == [(4, "error")]
    assert "snippets/x.conf" in missing[0].message and "--conf-dir" in missing[0].fix
    assert lint(tmp_path / "site.conf", conf_dir=tmp_path / "prefix").findings == []


def test_globs_are_sorted_and_may_match_nothing(tmp_path: Path):
    write(
        tmp_path,
        {
            "nginx.conf": "events {}\nhttp {\n    include conf.d/*.conf;\n"
            "    include empty.d/*.conf;\n}\n",
            "conf.d/b.conf": "server_tokens off;\n",
            "conf.d/a.conf": "server_tokens on;\n",
        },
    )
    loaded = load(tmp_path / "nginx.conf")
    assert [Path(p).name for p in loaded.files] == ["nginx.conf", "a.conf", "b.conf"]
    # nginx reads a.conf first, so the second server_tokens (b.conf:1) is the duplicate
    assert ("NG28", "b.conf", 1) in rules(tmp_path / "nginx.conf")
    assert not any(r[0] == "NG34" for r in rules(tmp_path / "nginx.conf"))


def test_findings_keep_their_file_and_line_after_an_include(tmp_path: Path):
    types = "types {\n" + "".join(f"    type/x{i} x{i};\n" for i in range(40)) + "}\n"
    site = "server {\n    listen 80;\n    server_tokens off;\n    add_heder X-A b;\n}\n"
    write(
        tmp_path,
        {
            "nginx.conf": "events {}\nhttp {\n    include mime.types;\n    include site.conf;\n}\n",
            "mime.types": types,
            "site.conf": site,
        },
    )
    assert rules(tmp_path / "nginx.conf") == {("NG36", "site.conf", 4)}


def test_an_include_cycle_is_a_finding(tmp_path: Path):
    write(tmp_path, {"nginx.conf": "events {}\nhttp {\n    include nginx.conf;\n}\n"})
    found = lint(tmp_path / "nginx.conf").findings
    assert [(f.rule, f.line) for f in found] == [("NG35", 3)]


@pytest.mark.parametrize(
    "text,context",
    [
        ("user www-data;\nevents {}\ninclude http.conf;\n", "main"),
        ("events {}\nmail {\n    server {\n        listen 25;\n    }\n}\n", "main"),
        ("upstream u { server 127.0.0.1:1; }\nserver { listen 80; }\n", "http"),
        ("add_header X-A b always;\n", "http"),
        ("listen 80;\nlocation / { return 204; }\n", "server"),
        ("location /a/ { proxy_pass http://127.0.0.1:1; }\n", "server"),
        ("proxy_pass http://127.0.0.1:1;\nproxy_set_header Host $host;\n", "location"),
        ("try_files $uri =404;\nfastcgi_index index.php;\n", "location"),
        ('if ($http_origin ~ "x") {\n    add_header X-A b;\n}\n', "location"),
    ],
)
def test_context_is_detected(tmp_path: Path, text: str, context: str):
    path = write(tmp_path, {"f.conf": text}) / "f.conf"
    assert lint(path).context == context
    assert not [f for f in lint(path).findings if f.rule == "NG00"]


def test_context_override(tmp_path: Path):
    path = write(tmp_path, {"f.conf": "add_header X-A b always;\n"}) / "f.conf"
    assert lint(path, context="location").context == "location"
    assert lint(path, context="main").findings[0].rule == "NG00"  # not allowed at main level


def test_detect_context_on_an_empty_file():
    assert detect_context([]) == "http"


def test_unknown_directives_get_the_closest_name(tmp_path: Path):
    path = write(tmp_path, {"s.conf": "server {\n    server_token off;\n    frobnicate 1;\n}\n"})
    found = {f.line: f for f in lint(path / "s.conf").findings if f.rule == "NG36"}
    assert 'did you mean "server_tokens"' in found[2].message and found[2].severity == "error"
    assert "did you mean" not in found[3].message


def test_modern_and_third_party_directives(tmp_path: Path):
    text = (
        "server {\n    listen 443 ssl;\n    listen 443 quic reuseport;\n    http2 on;\n"
        "    http3 on;\n    ssl_reject_handshake on;\n"
        "    ssl_conf_command Options -SessionTicket;\n"
        "    keepalive_time 1h;\n    more_set_headers 'Server: x';\n}\n"
    )
    path = write(tmp_path, {"s.conf": text}) / "s.conf"
    found = [f for f in lint(path, nginx_version=(1, 29, 3)).findings if f.rule == "NG36"]
    assert [(f.line, f.severity) for f in found] == [(9, "info")]
    assert "headers-more" in found[0].message


def test_a_site_inherits_its_nginx_conf(tmp_path: Path):
    write(
        tmp_path,
        {
            "nginx.conf": "events {}\nhttp {\n    server_tokens off;\n"
            "    ssl_protocols TLSv1 TLSv1.2;\n    include conf.d/*.conf;\n"
            "    include sites-enabled/*;\n}\n",
            "conf.d/map.conf": "map $http_upgrade $connection_upgrade {\n"
            "    default upgrade;\n    '' '';\n}\n",
            "sites-enabled/a": "server {\n    listen 80;\n    location / {\n"
            "        proxy_set_header Connection $connection_upgrade;\n        return 204;\n"
            "    }\n}\n",
        },
    )
    # server_tokens comes from nginx.conf, the map from conf.d: nothing to report
    assert lint(tmp_path / "sites-enabled" / "a").findings == []


def test_cli_lint_options(tmp_path: Path, capsys):
    write(tmp_path, {"site.conf": SITE, "p/snippets/x.conf": "location / { return 204; }"})
    args = ["lint", "--no-gixy", str(tmp_path / "site.conf")]
    assert main([*args, "--conf-dir", str(tmp_path / "p")]) == 0
    assert capsys.readouterr().out.strip().endswith("(http context)")
    assert main([*args, "--conf-dir", str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main([*args, "--context", "server"]) == 1  # a server block inside a server
    assert "NG00" in capsys.readouterr().out
