"""SiteSpec → crossplane payload → nginx text. Pure: no files, no subprocesses.

The payload is the plain data crossplane uses (``{"directive", "args", "block"}``); the text
comes only from ``crossplane.build`` (never string templates), after we guard the two cases it
gets wrong: an argument starting with ``#`` (emitted unquoted, so nginx reads a comment) and an
argument ending in a backslash (breaks the quoting); comment lines get distinct line numbers so
the builder does not glue them onto the previous statement.
"""

from __future__ import annotations

import json
from typing import Any

import crossplane

from qwengw.errors import EDGE_ERRORS

from .model import SiteSpec, SpecError, version_text
from .tree import LINT_SUPPRESS

Stmt = dict[str, Any]

# Mozilla server-side TLS guideline 6.0, "intermediate", for nginx 1.22 + OpenSSL 3.0.
TLS_PROTOCOLS = ("TLSv1.2", "TLSv1.3")
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
TLS_CURVES = "X25519:prime256v1:secp384r1"

ACME_PATH = "/.well-known/acme-challenge/"
API_PREFIX = "/v1/"
ASSET_REGEX = r"\.(?:css|js|mjs|map|png|jpe?g|gif|ico|svg|webp|avif|woff2?|ttf)$"
LOG_FORMAT = "qwengw_edge"

# Nginx's own errors on /v1/: the gateway's table, so that both doors answer a refusal alike.
API_ERRORS = EDGE_ERRORS


GATEWAY_KEEPALIVE_TIMEOUT = 4  # seconds; qwengw closes idle connections after 5


def d(directive: str, *args: object, block: list[Stmt] | None = None) -> Stmt:
    """One payload statement; arguments are stringified here so callers can pass ints."""
    stmt: Stmt = {"directive": directive, "args": [str(a) for a in args]}
    if block is not None:
        stmt["block"] = block
    return stmt


def size(nbytes: int) -> str:
    """Exactly the same number of bytes, in the shortest nginx unit."""
    for unit, mult in (("m", 1024**2), ("k", 1024)):
        if nbytes % mult == 0:
            return f"{nbytes // mult}{unit}"
    return str(nbytes)


def error_body(status: int) -> str:
    return json.dumps(API_ERRORS[status].body(), separators=(",", ":"))


def security_headers(spec: SiteSpec) -> list[Stmt]:
    """The full set, every one ``always`` so 4xx/5xx answers carry them too."""
    h = spec.headers
    hsts = f"max-age={h.hsts_max_age}"
    if h.hsts_include_subdomains:
        hsts += "; includeSubDomains"
    if h.hsts_preload:
        hsts += "; preload"
    csp_name = "Content-Security-Policy" + ("-Report-Only" if h.csp_report_only else "")
    return [
        d("add_header", "Strict-Transport-Security", hsts, "always"),
        d("add_header", "X-Content-Type-Options", "nosniff", "always"),
        d("add_header", "X-Frame-Options", h.frame_options.upper(), "always"),
        d("add_header", "Referrer-Policy", h.referrer_policy, "always"),
        d("add_header", csp_name, h.csp, "always"),
        d("add_header", "Permissions-Policy", h.permissions_policy, "always"),
        d("add_header", "Cross-Origin-Opener-Policy", "same-origin", "always"),
    ]


def _listen(spec: SiteSpec, port: int, *params: str) -> list[Stmt]:
    addrs = spec.listen_addresses or ("", "[::]")
    return [d("listen", f"{a}:{port}" if a else str(port), *params) for a in addrs]


def _proxy_headers(websocket: bool) -> list[Stmt]:
    """Edge semantics: replace client-sent forwarding headers, never append to them."""
    out = [
        d("proxy_http_version", "1.1"),
        d("proxy_set_header", "Host", "$host"),
        d("proxy_set_header", "X-Real-IP", "$remote_addr"),
        d("proxy_set_header", "X-Forwarded-For", "$remote_addr"),
        d("proxy_set_header", "X-Forwarded-Proto", "$scheme"),
        d("proxy_set_header", "X-Forwarded-Host", "$host"),
        d("proxy_set_header", "X-Request-Id", "$request_id"),
    ]
    if websocket:
        out += [
            d("proxy_set_header", "Upgrade", "$http_upgrade"),
            d("proxy_set_header", "Connection", "$connection_upgrade"),
        ]
    else:
        out.append(d("proxy_set_header", "Connection", ""))  # keeps upstream keepalive
    return out


def _acme(spec: SiteSpec) -> Stmt:
    return d(
        "location",
        "^~",
        ACME_PATH,
        block=[d("root", spec.acme_root), d("default_type", "text/plain")],
    )


def http_server(spec: SiteSpec) -> Stmt:
    """Port 80: ACME webroot for certbot renewals, everything else to HTTPS.

    The redirect lives in ``location /`` because a server-level ``return`` runs before
    location matching and would swallow the ACME path too.
    """
    port = "" if spec.https_port == 443 else f":{spec.https_port}"
    return d(
        "server",
        block=[
            *_listen(spec, spec.http_port),
            d("server_name", *spec.server_names),
            d("server_tokens", "off"),
            _acme(spec),
            d("location", "/", block=[d("return", 301, f"https://$host{port}$request_uri")]),
        ],
    )


def _tls(spec: SiteSpec) -> list[Stmt]:
    tls = spec.tls
    assert tls is not None
    out = [
        d("ssl_certificate", tls.cert),
        d("ssl_certificate_key", tls.key),
        d("ssl_protocols", *TLS_PROTOCOLS),
        d("ssl_ecdh_curve", TLS_CURVES),
        d("ssl_ciphers", TLS_CIPHERS),
        d("ssl_prefer_server_ciphers", "off"),
        d("ssl_session_timeout", "1d"),
        d("ssl_session_cache", "shared:MozSSL:10m"),
    ]
    if spec.nginx_version < (1, 23, 2):  # ticket keys rotate automatically from 1.23.2
        out.append(d("ssl_session_tickets", "off"))
    if tls.stapling:
        out += [
            d("ssl_stapling", "on"),
            d("ssl_stapling_verify", "on"),
            d("ssl_trusted_certificate", tls.chain),
            d("resolver", tls.resolver, "valid=300s"),
            d("resolver_timeout", "5s"),
        ]
    return out


def api_location(spec: SiteSpec) -> list[Stmt]:
    """``/v1/``: path kept, streaming-safe, body size and timeouts agreeing with the gateway."""
    block: list[Stmt] = []
    if spec.allow:
        block += [d("allow", cidr) for cidr in spec.allow] + [d("deny", "all")]
    block += [
        d("proxy_pass", f"http://{spec.gateway_upstream_name}"),  # no URI part: /v1/ kept
        *_proxy_headers(websocket=False),
        d("proxy_buffering", "off"),
        d("proxy_cache", "off"),
        d("gzip", "off"),
        d("proxy_connect_timeout", f"{spec.connect_timeout}s"),
        d("proxy_read_timeout", f"{spec.read_timeout}s"),
        d("proxy_send_timeout", f"{spec.read_timeout}s"),
        d("client_max_body_size", size(spec.client_max_body_size)),
    ]
    if spec.rate_limit is not None:
        rl = spec.rate_limit
        block += [
            # nginx rejects burst=0; no burst means no queue at all
            d(
                "limit_req",
                "zone=qwengw_api",
                *([f"burst={rl.burst}"] if rl.burst else []),
                "nodelay",
            ),
            d("limit_req_status", 429),
            d("limit_conn", "qwengw_conn", rl.connections),
            d("limit_conn_status", 429),
        ]
    block += [d("error_page", code, f"@qwengw_v1_{code}") for code in API_ERRORS]
    named = [
        d(
            "location",
            f"@qwengw_v1_{code}",
            block=[d("default_type", "application/json"), d("return", code, error_body(code))],
        )
        for code in API_ERRORS
    ]
    return [d("location", "^~", API_PREFIX, block=block), *named]


def ui_locations(spec: SiteSpec) -> list[Stmt]:
    """``/``: the chat UI with websockets; assets cached and still served, headers intact."""
    ui = f"http://{spec.ui_upstream_name}"
    proxy = [d("proxy_pass", ui), *_proxy_headers(websocket=True)]
    if spec.static_root:
        # Serve from disk when the file is there, otherwise let the UI answer.
        assets = [
            d("root", spec.static_root),
            d("log_not_found", "off"),
            d("error_page", 404, "=", "@qwengw_ui"),
        ]
    else:
        assets = [d("proxy_pass", ui)]  # proxy_set_header are inherited from location /
    assets.append(d("expires", "7d"))  # not 1y/immutable: unhashed files would go stale
    root = d(
        "location",
        "/",
        block=[
            *proxy,
            d("proxy_read_timeout", "1h"),  # long-lived websockets
            d("proxy_send_timeout", "1h"),
            d("location", "~*", ASSET_REGEX, block=assets),
        ],
    )
    out = [root]
    if spec.static_root:
        out.append(d("location", "@qwengw_ui", block=proxy))
    return out


def https_server(spec: SiteSpec) -> Stmt:
    params = ["ssl"] if spec.http2_directive else ["ssl", "http2"]
    block = [*_listen(spec, spec.https_port, *params)]
    if spec.http2_directive:
        block.append(d("http2", "on"))
    block += [
        d("server_name", *spec.server_names),
        d("server_tokens", "off"),
        *_tls(spec),
        d("access_log", spec.access_log, LOG_FORMAT),
        *security_headers(spec),
        _acme(spec),
        *api_location(spec),
        *ui_locations(spec),
    ]
    return d("server", block=block)


def http_level(spec: SiteSpec) -> list[Stmt]:
    """Map, log format, zones and upstreams: the site file is included inside ``http {}``."""
    out = [
        # '' → '' (not 'close') so non-websocket requests keep upstream keepalive.
        d(
            "map",
            "$http_upgrade",
            "$connection_upgrade",
            block=[d("default", "upgrade"), d("", "")],
        ),
        d(
            "log_format",
            LOG_FORMAT,
            "$remote_addr - $remote_user [$time_local] "
            '"$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" '
            "request_id=$request_id upstream=$upstream_addr rt=$request_time "
            "urt=$upstream_response_time",
        ),
    ]
    if spec.rate_limit is not None:
        out += [
            d(
                "limit_req_zone",
                "$binary_remote_addr",
                "zone=qwengw_api:10m",
                f"rate={spec.rate_limit.rate}",
            ),
            d("limit_conn_zone", "$binary_remote_addr", "zone=qwengw_conn:10m"),
        ]
    for name, servers in (
        (spec.ui_upstream_name, spec.ui),
        (spec.gateway_upstream_name, spec.gateway),
    ):
        block = [d("server", s) for s in servers] + [d("keepalive", spec.keepalive)]
        if name == spec.gateway_upstream_name:
            # Below the gateway's own idle keep-alive (5 s): Nginx always closes first, so it
            # never reuses a connection the gateway is closing (no sporadic 502s).
            block.append(d("keepalive_timeout", f"{GATEWAY_KEEPALIVE_TIMEOUT}s"))
        out.append(d("upstream", name, block=block))
    return out


def site_payload(spec: SiteSpec) -> list[Stmt]:
    """The whole site as a crossplane payload (list of statements)."""
    comments = [
        "Generated by nginxgen from a site description; edit the description, not this file.",
        f"Target nginx {version_text(spec.nginx_version)}; "
        "include inside http {} (Debian: sites-available/, linked from sites-enabled/).",
        "X-Request-Id sent to the gateway is nginx's $request_id (client values are replaced);",
        "it is logged as request_id= in the access log, and the gateway echoes it back.",
    ]
    if spec.rate_limit is None:
        comments.append(f"{LINT_SUPPRESS}NG30 (rate limiting deliberately left to the gateway)")
    head = [
        {"directive": "#", "args": [], "comment": " " + c, "line": i + 1}
        for i, c in enumerate(comments)
    ]
    return [*head, *http_level(spec), http_server(spec), https_server(spec)]


def _check(payload: list[Stmt]) -> None:
    for stmt in payload:
        for arg in stmt["args"]:
            if arg.startswith("#") or arg.endswith("\\") or any(ord(c) < 32 for c in arg):
                raise SpecError(
                    f"{stmt['directive']}: argument {arg!r} cannot be rendered safely "
                    "(leading '#', trailing backslash or control character)"
                )
        if "block" in stmt:
            _check(stmt["block"])


def render_payload(payload: list[Stmt]) -> str:
    """Text from crossplane.build, checked for its quoting bugs, with a final newline."""
    _check(payload)
    return crossplane.build(payload, indent=4) + "\n"


def render(spec: SiteSpec) -> str:
    return render_payload(site_payload(spec))
