"""Lint rules on server blocks: locations, redirects, ACME, tokens, duplicate directives."""

from __future__ import annotations

from collections.abc import Iterator

from ..regex import shares_prefix
from ..tree import (
    Ctx,
    Finding,
    Node,
    Stmt,
    effective,
    finding,
    is_default_listen,
    location_regex,
    own,
    scope,
    setting,
)
from . import rule

# Directives nginx 1.22 rejects with '"X" directive is duplicate' when set twice in one block
# (each checked with nginx -t). Not here: array directives (add_header, proxy_set_header,
# error_page, allow/deny) and bitmask ones that merge (ssl_protocols, proxy_next_upstream).
NON_REPEATABLE = frozenset(
    {
        "absolute_redirect",
        "alias",
        "auth_basic",
        "charset",
        "chunked_transfer_encoding",
        "client_body_buffer_size",
        "client_body_timeout",
        "client_header_timeout",
        "client_max_body_size",
        "default_type",
        "etag",
        "expires",
        "gzip",
        "keepalive",
        "keepalive_timeout",
        "large_client_header_buffers",
        "limit_conn_status",
        "limit_rate",
        "limit_req_status",
        "log_not_found",
        "port_in_redirect",
        "proxy_buffer_size",
        "proxy_buffering",
        "proxy_cache",
        "proxy_connect_timeout",
        "proxy_http_version",
        "proxy_intercept_errors",
        "proxy_max_temp_file_size",
        "proxy_pass",
        "proxy_read_timeout",
        "proxy_request_buffering",
        "proxy_send_timeout",
        "proxy_ssl_server_name",
        "real_ip_header",
        "resolver",
        "root",
        "send_timeout",
        "sendfile",
        "server_name_in_redirect",
        "server_tokens",
        "ssl_ciphers",
        "ssl_dhparam",
        "ssl_ecdh_curve",
        "ssl_prefer_server_ciphers",
        "ssl_session_tickets",
        "ssl_session_timeout",
        "ssl_stapling",
        "ssl_stapling_verify",
        "ssl_trusted_certificate",
        "tcp_nopush",
        "try_files",
    }
)
BLOCKS = ("server", "location", "if", "upstream", "limit_except")
HANDLERS = {
    "proxy_pass",
    "fastcgi_pass",
    "uwsgi_pass",
    "scgi_pass",
    "grpc_pass",
    "memcached_pass",
    "return",
    "root",
    "alias",
    "try_files",
    "rewrite",
    "stub_status",
    "empty_gif",
    "mirror",
}


def _denies_all(names: set[str], block: list[Stmt]) -> bool:
    return any(x["directive"] == "deny" and x["args"] == ["all"] for x in block) and not (
        names & {"allow"}
    )


@rule("NG03", "location-without-handler")
def location_without_handler(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        if any(level.get("synthetic") for level in node.chain):
            continue  # a snippet: the server that includes it may well set root
        block = node.stmt.get("block", [])
        names = {s["directive"] for s in block}
        if names & HANDLERS or effective(node.chain, "root", ctx.root):
            continue
        if "location" in names and not names - {"location", "#"}:
            continue  # a pure container of nested locations
        if _denies_all(names, block):
            continue  # answers 403 to everything, no handler needed
        yield finding(
            "NG03",
            "error",
            node,
            f"location {' '.join(node.args)} has no handler (proxy_pass/root/return/...)",
            "nginx then serves files from its compiled-in html/ directory, so these "
            "requests get 404 instead of reaching the app",
            "proxy_pass to the app inside this location (or nest it inside 'location /', "
            "which proxies), or give it a root",
        )


@rule("NG04", "regex-shadows-prefix")
def regex_shadows_prefix(ctx: Ctx) -> Iterator[Finding]:
    for server in ctx.servers():
        locs = [Node(s, scope(server)) for s in own(server.stmt, "location")]
        regexes = [(n, found) for n in locs if (found := location_regex(n))]
        for n in locs:
            if not n.args or n.args[0] in ("=", "^~", "~", "~*") or n.args[0].startswith("@"):
                continue
            prefix = n.args[0]
            if prefix == "/":
                continue
            takers = [r for r, (pattern, icase) in regexes if shares_prefix(pattern, icase, prefix)]
            if not takers:
                continue
            api = prefix.startswith("/v1")
            yield finding(
                "NG04",
                "error" if api else "warning",
                n,
                f"prefix location {prefix} is shadowed by regex location(s) "
                f"{', '.join(' '.join(r.args) for r in takers)}",
                "regex locations win over plain prefix locations: URIs under "
                f"{prefix} that the regex matches go there"
                + (" (e.g. /v1/files/x.png to a static-asset regex)" if api else ""),
                f"location ^~ {prefix} {{ ... }} (or nest the regex inside 'location /')",
            )


@rule("NG20", "server-tokens", replaces=("version_disclosure",))
def server_tokens(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.servers():
        if setting(scope(node), "server_tokens", ctx.root) != "off":
            yield finding(
                "NG20",
                "warning",
                node,
                "server_tokens is on (the default)",
                "every response and error page discloses the exact nginx version",
                "server_tokens off;",
            )


def _redirects_to_https(stmt: Stmt) -> bool:
    """A return to https:// in this block, or in an ``if`` right inside it (certbot writes
    ``if ($host = example.org) { return 301 https://$host$request_uri; }``)."""
    for r in own(stmt, "return") + [r for i in own(stmt, "if") for r in own(i, "return")]:
        if any(a.startswith(("https://", "$scheme://")) or a == "https" for a in r["args"]):
            return True
    return False


def _refuses(stmt: Stmt) -> bool:
    """A server that only answers with an error or closes (``return 444`` catch-alls)."""
    codes = [r["args"][0] for r in own(stmt, "return") if r["args"]]
    return bool(codes) and all(c.isdigit() and int(c) >= 400 for c in codes)


def _certbot_managed(stmt: Stmt) -> bool:
    return any("managed by Certbot" in s.get("comment", "") for s in stmt.get("block", []))


@rule("NG22", "acme-unreachable")
def acme(ctx: Ctx) -> Iterator[Finding]:
    tls_acme = any(
        "/.well-known/acme-challenge" in " ".join(loc["args"])
        for server in ctx.tls_servers()
        for loc in own(server.stmt, "location")
    )
    for node in ctx.plain_servers():
        locs = own(node.stmt, "location")
        has_acme = any("/.well-known/acme-challenge" in " ".join(s["args"]) for s in locs)
        if has_acme or tls_acme or _certbot_managed(node.stmt):
            continue
        if not (own(node.stmt, "return") and _redirects_to_https(node.stmt)):
            continue
        yield finding(
            "NG22",
            "info",
            node,
            "a server-level 'return' redirects everything to HTTPS, the ACME path included",
            "a server-level return runs before location matching; Let's Encrypt follows the "
            "redirect, so certbot --webroot renewals work only if the HTTPS server serves "
            "/.well-known/acme-challenge/ from the same webroot (--nginx, --standalone and "
            "DNS challenges are not affected)",
            "location ^~ /.well-known/acme-challenge/ { root /var/www/_letsencrypt; } and "
            "move the redirect into 'location / { return 301 https://$host$request_uri; }'",
        )


@rule("NG32", "http-not-redirected")
def http_not_redirected(ctx: Ctx) -> Iterator[Finding]:
    if not any(True for _ in ctx.tls_servers()):
        return
    for node in ctx.plain_servers():
        if _redirects_to_https(node.stmt) or _refuses(node.stmt):
            continue
        root = [n for n in own(node.stmt, "location") if n["args"] == ["/"]]
        if root and _redirects_to_https(root[0]):
            continue
        yield finding(
            "NG32",
            "error",
            node,
            "plain-HTTP server does not redirect to HTTPS",
            "API keys and chats would travel in clear text, and HSTS is never learned",
            "location / { return 301 https://$host$request_uri; }",
        )


@rule("NG23", "redirect-host")
def redirect_host(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("return"):
        target = " ".join(node.args)
        if "$server_name" in target:
            yield finding(
                "NG23",
                "warning",
                node,
                "redirect built from $server_name",
                "$server_name is always the first server_name, so other names are sent to "
                "the wrong host; it also hides a non-standard HTTPS port",
                "return 301 https://$host$request_uri; (or a literal canonical host)",
            )
        elif "$http_host" in target:
            yield finding(
                "NG23",
                "warning",
                node,
                "redirect built from $http_host",
                "the client's raw Host header (with any port or junk) becomes the target",
                "return 301 https://$host$request_uri;",
            )


def _blocks(ctx: Ctx) -> Iterator[tuple[list[Stmt], list[Stmt]]]:
    """Every block whose directives nginx checks for duplicates, with its ancestor chain."""
    yield ctx.root, []
    for node in ctx.nodes:
        if node.name in BLOCKS and "block" in node.stmt:
            yield node.stmt["block"], scope(node)


@rule("NG28", "duplicate-directive")
def duplicate_directive(ctx: Ctx) -> Iterator[Finding]:
    for stmts, chain in _blocks(ctx):
        first: dict[str, Stmt] = {}
        for stmt in stmts:
            name = stmt["directive"]
            if name not in NON_REPEATABLE:
                continue
            if name not in first:
                first[name] = stmt
                continue
            yield finding(
                "NG28",
                "error",
                Node(stmt, chain),
                f"{name} is set twice in this block (first on line {first[name].get('line')})",
                f"nginx -t stops with '\"{name}\" directive is duplicate'; crossplane accepts it",
                f"keep one {name} in this block",
            )
    for socket, pairs in ctx.sockets().items():
        defaults = [(server, listen) for server, listen in pairs if is_default_listen(listen)]
        for server, listen in defaults[1:]:
            yield finding(
                "NG28",
                "error",
                Node(listen, scope(server)),
                f"a second default_server for {socket}",
                f"nginx -t stops with 'a duplicate default server for {socket}'",
                "mark one server per address:port as default_server (or none)",
            )
        seen: set[int] = set()
        for server, listen in pairs:
            if id(server.stmt) in seen:
                yield finding(
                    "NG28",
                    "error",
                    Node(listen, scope(server)),
                    f"this server listens on {socket} twice",
                    f"nginx -t stops with 'a duplicate listen {socket}'",
                    "keep one listen per address:port in a server",
                )
            seen.add(id(server.stmt))
