"""The gixy-class security rules on our own small cases: each must flag its bad snippets and
stay quiet on the good ones. gixy-ng's own suite is measured
by bench/gixy_cases.py (it cannot be fetched in CI)."""

from __future__ import annotations

import pytest

from nginxgen.lint import lint_text

# rule → (snippets it must flag, snippets it must not flag)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "NG37": (  # alias traversal
        [
            "location /assets { alias /srv/assets/; }",
            "location /media { alias /srv/media; }",
            "location /a/ { location /a/img { alias /srv/img/; } }",
            "location ~ ^/dl(.*)$ { alias /srv/dl/$1; }",
            "location ~ ^/dl/(.*)$ { alias /srv/dl$1; }",
            "location ~ ^/v(1)(.*)$ { alias /srv/v/$2; }",
            "location ~ ^/u/(?<file>.+)$ { alias /srv/u$file; }",
        ],
        [
            "location /assets/ { alias /srv/assets/; }",
            "location /assets/ { alias /srv/assets; }",
            "location = /robots.txt { alias /srv/robots.txt; }",
            "location ~ ^/dl/(.*)$ { alias /srv/dl/$1; }",
            "location ~ ^/dl(/.*)$ { alias /srv/dl$1; }",
            "location ~ ^/dl([^.]*)$ { alias /srv/dl/$1; }",
            "location ~ ^/(en|fr)/help$ { alias /srv/help/; }",
        ],
    ),
    "NG38": (  # response splitting
        [
            "location / { add_header X-Path $uri; return 200; }",
            "location / { proxy_set_header X-Doc $document_uri; proxy_pass http://127.0.0.1:1; }",
            "location / { return 302 https://example.com$uri; }",
            "location / { rewrite ^ https://example.com$uri redirect; }",
            "location ~ ^/p/([^/]+)/ { proxy_pass http://127.0.0.1:1/$1; }",
            "location ~ ^/p/(?<rest>.*)$ { if ($uri ~ ^/x/(.*)$) { return 301 /$1; } }",
            "map $uri $tail { ~^/t/(.*)$ $1; default ''; }"
            " server { location / { add_header X-Tail $tail; return 200; } }",
            "map $host $m { a $uri; default 1; }"
            " server { location / { set $v $m; add_header X-M $v; return 200; } }",
        ],
        [
            "location / { add_header X-Path $request_uri; return 200; }",
            "location / { return 301 https://$host$request_uri; }",
            "location ~ ^/p/(.*) { proxy_pass http://127.0.0.1:1/$1; }",
            "location ~ ^/p/([^\\r\\n]*) { add_header X-P $1; return 200; }",
            "location / { rewrite ^/old/(?<rest>.*)$ https://example.com/new/$rest permanent; }",
            "map $host $h { ~^(.*)\\.example$ $1; default x; }"
            " server { location / { add_header X-H $h; return 200; } }",
            "location / { add_header X-Id $request_id; return 200; }",
            "location / { proxy_pass http://127.0.0.1:1$undefined_here; }",
        ],
    ),
    "NG39": (  # SSRF
        [
            "location /fetch/ { proxy_pass $arg_url; }",
            "location /f/ { proxy_pass http://$http_x_backend; }",
            "location ~ ^/f/(?<target>[^/]+)/(.*)$ { proxy_pass http://$target/$2; }",
            "location ~ ^/f/(.*)$ { set $up $1; proxy_pass https://$up; }",
            "map $uri $be { ~^/b/(.*)$ $1; default 127.0.0.1; }"
            " server { location /b/ { proxy_pass http://$be; } }",
            # $host is the client's Host header wherever the server answers unknown names
            "location /preview/ { proxy_pass http://$host; }",
            "server { listen 80; server_name app.example; location / {"
            " proxy_pass http://$host$request_uri; } }",
            "server { listen 80; server_name _; location / { set $t $host;"
            " proxy_pass http://$t:8080; } }",
            "server { listen 80 default_server; return 444; }"
            " server { listen 80; server_name *.example; location / { proxy_pass http://$host; } }",
        ],
        [
            "location /fetch/ { internal; proxy_pass $arg_url; }",
            "location / { proxy_pass http://127.0.0.1:8080$request_uri; }",
            "location ~ ^/s/(.*)$ { proxy_pass http://static.example/$1; }",
            "map $http_x_tenant $be { a 10.0.0.1; b 10.0.0.2; default 10.0.0.3; }"
            " server { location / { proxy_pass http://$be; } }",
            "location / { set $up http://127.0.0.1:9000; proxy_pass $up$request_uri; }",
            # a named server behind a catch-all default: $host is one of its own names
            "server { listen 80 default_server; return 444; }"
            " server { listen 80; server_name app.example; location / {"
            " proxy_pass http://$host:8080; } }",
        ],
    ),
    "NG40": (  # allow without deny all
        [
            "location /admin/ { allow 10.0.0.0/8; return 200; }",
            "location /admin/ { allow 10.0.0.1; deny 10.0.0.2; return 200; }",
        ],
        [
            "location /admin/ { allow 10.0.0.0/8; deny all; return 200; }",
            "location /admin/ { deny all; }",
        ],
    ),
    "NG41": (  # return before allow/deny
        [
            "location /h { allow 127.0.0.1; deny all; return 200 ok; }",
            "location /h { deny all; if ($arg_x) { return 204; } }",
        ],
        [
            "location /h { allow 127.0.0.1; deny all; proxy_pass http://127.0.0.1:1; }",
            "location /h { return 204; }",
        ],
    ),
    "NG42": (  # valid_referers none
        ["location /img/ { valid_referers none server_names; root /srv; }"],
        ["location /img/ { valid_referers blocked server_names *.example.com; root /srv; }"],
    ),
    "NG43": (  # weak Origin/Referer checks
        [
            'if ($http_origin ~* "example.com") { set $cors 1; }',
            'if ($http_origin !~ "^https://example\\.com") { return 403; }',
            'if ($http_origin ~ "^https://(.*\\.)?example\\.com$") { set $cors 1; }',
            'if ($http_origin ~ "^https://example.com$") { set $cors 1; }',
            'if ($http_referer !~ "^https://example\\.com") { return 403; }',
            'if ($http_referrer !~ "^https://example\\.com/") { return 403; }',
            'if ($http_origin ~ "^https://example\\.com/") { set $cors 1; }',
            "map $http_origin $ok { ~^https://[^/]*example\\.com$ 1; default 0; }",
        ],
        [
            'if ($http_origin ~ "^https://(www\\.)?example\\.com$") { set $cors 1; }',
            'if ($http_referer !~ "^https://example\\.com/") { return 403; }',
            'if ($http_origin ~ "^https://([a-z0-9-]+\\.)?example\\.com(:[0-9]+)?$") '
            "{ set $cors 1; }",
            "map $http_origin $ok { ~^https://app\\.example\\.com$ 1; default 0; }",
        ],
    ),
    "NG44": (  # multi-line header value
        ['location / { add_header X-Policy "a=1;\n    b=2"; return 200; }'],
        ['location / { add_header X-Policy "a=1; b=2"; return 200; }'],
    ),
    "NG45": (  # unanchored location regex
        [
            "location ~ \\.php { fastcgi_pass 127.0.0.1:9000; }",
            "location ~ /\\.git { return 200; }",
        ],
        [
            "location ~ \\.php$ { fastcgi_pass 127.0.0.1:9000; }",
            # a refusal is meant to match anywhere: anchoring it would let dotfiles through
            "location ~ /\\.(?!well-known) { deny all; }",
            "location ~ /\\.ht { deny all; access_log off; }",
        ],
    ),
    "NG46": (  # ReDoS
        [
            "location ~ ^/(a+)+$ { return 200; }",
            "location ~ ^/x/((ab)+)+$ { return 200; }",
            "location ~ ^/(.|y)+/z$ { return 200; }",
            "location ~ ^/.*.*end$ { return 200; }",
            "location / { rewrite ^/(\\w*)+$ /r permanent; }",
            'if ($http_user_agent ~ "^(\\s*\\w+)+$") { return 403; }',
        ],
        [
            "location ~ ^/(\\w+/)+end$ { return 200; }",
            "location ~ ^/([a-z0-9-]+\\.)+js$ { return 200; }",
            "location ~ ^/(foo|bar)/(.*)$ { return 200; }",
            "location ~ ^/\\d{1,10}$ { return 200; }",
            "location ~ ^(.+\\.php)(/.+)$ { return 200; }",
            "location ~* (?:#.*#|\\.(?:bak|conf|log|sql)|~)$ { deny all; }",
        ],
    ),
    "NG25": (  # Host from the client
        [
            "location / { proxy_set_header Host $http_host; proxy_pass http://127.0.0.1:1; }",
            "location / { proxy_set_header HOST $arg_host; proxy_pass http://127.0.0.1:1; }",
        ],
        ["location / { proxy_set_header Host $host; proxy_pass http://127.0.0.1:1; }"],
    ),
}

POSITIVES = [(rule, s) for rule, (bad, _good) in CASES.items() for s in bad]
NEGATIVES = [(rule, s) for rule, (_bad, good) in CASES.items() for s in good]


def _server(snippet: str) -> str:
    """Snippets that are http-level (maps, servers) come with their server; the rest go in
    one."""
    if snippet.startswith(("map ", "server ")):
        return snippet
    return f"server {{ listen 80; server_tokens off; root /srv/www; {snippet} }}"


@pytest.mark.parametrize("rule_id,snippet", POSITIVES)
def test_rule_flags_bad_snippet(rule_id: str, snippet: str):
    assert rule_id in {f.rule for f in lint_text(_server(snippet))}


@pytest.mark.parametrize("rule_id,snippet", NEGATIVES)
def test_rule_spares_good_snippet(rule_id: str, snippet: str):
    assert [f for f in lint_text(_server(snippet)) if f.rule == rule_id] == []
