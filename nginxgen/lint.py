"""Lint any nginx config (a site snippet or a whole nginx.conf) parsed with crossplane.

Rules are small functions in ``RULES`` (crossplane/limits registry style); each gets a
``Ctx`` with the parsed tree and yields ``Finding``s; nothing raises on the first problem.
A file may silence a rule with a comment ``# nginxgen-lint: disable=NG30,NG29``.
Rule ids, reasons and fixes are documented in docs/nginx.md.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import crossplane

from . import build as _build  # noqa: F401  (extends crossplane's directive table)
from .model import MIN_STREAM_TIMEOUT, GatewaySettings, parse_size

Stmt = dict[str, Any]
SEVERITIES = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    message: str
    why: str
    fix: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.rule} [{self.severity}] {self.message}\n"
            f"    why: {self.why}\n    fix: {self.fix}"
        )


@dataclass
class Node:
    """A statement with its ancestors (outermost first) so inheritance can be modelled."""

    stmt: Stmt
    chain: list[Stmt]

    @property
    def name(self) -> str:
        return self.stmt["directive"]

    @property
    def args(self) -> list[str]:
        return self.stmt["args"]


@dataclass
class Ctx:
    root: list[Stmt]  # statements at http level (a site snippet's top level)
    nginx_version: tuple[int, int, int] = (1, 22, 1)
    gateway: GatewaySettings | None = None
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._walk(self.root, [])

    def _walk(self, block: list[Stmt], chain: list[Stmt]) -> None:
        for stmt in block:
            if stmt["directive"] == "#":
                continue
            self.nodes.append(Node(stmt, chain))
            if "block" in stmt:
                self._walk(stmt["block"], [*chain, stmt])

    def find(self, name: str) -> Iterator[Node]:
        return (n for n in self.nodes if n.name == name)

    def servers(self) -> Iterator[Node]:
        """http server blocks (an upstream's ``server`` member has no block)."""
        return (n for n in self.find("server") if "block" in n.stmt)

    def upstreams(self) -> dict[str, Stmt]:
        return {n.args[0]: n.stmt for n in self.find("upstream") if n.args}


# ---------------------------------------------------------------- tree helpers


def own(block: Stmt | list[Stmt], name: str) -> list[Stmt]:
    stmts = block.get("block", []) if isinstance(block, dict) else block
    return [s for s in stmts if s["directive"] == name]


def effective(levels: list[Stmt], name: str, root: list[Stmt] | None = None) -> list[Stmt]:
    """Nearest level (innermost first) that sets `name`: nginx inherit-by-replacement."""
    for level in reversed(levels):
        found = own(level, name)
        if found:
            return found
    return own(root, name) if root is not None else []


def scope(node: Node) -> list[Stmt]:
    return [*node.chain, node.stmt]


def loc(node: Node) -> tuple[str, int]:
    return node.stmt.get("file", "?"), int(node.stmt.get("line") or 0)


def is_tls_server(server: Stmt) -> bool:
    return any("ssl" in s["args"][1:] or "quic" in s["args"][1:] for s in own(server, "listen"))


def location_prefix(node: Node) -> str | None:
    """The literal prefix of a prefix/^~/= location, else None (regex or named)."""
    if node.name != "location" or not node.args:
        return None
    a = node.args
    if a[0] in ("^~", "=") and len(a) > 1:
        return a[1]
    if a[0] in ("~", "~*") or a[0].startswith("@"):
        return None
    return a[0]


def is_api_location(node: Node) -> bool:
    prefix = location_prefix(node)
    return prefix is not None and prefix.startswith("/v1")


def seconds(value: str) -> float:
    """nginx time ('90', '300s', '1h', '1m30s', '500ms') → seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000}
    total = 0.0
    for num, unit in re.findall(r"(\d+)(ms|[smhdwMy]?)", value):
        total += int(num) * units.get(unit or "s", 31536000)
    return total


SECURITY_HEADERS = {
    "strict-transport-security",
    "content-security-policy",
    "content-security-policy-report-only",
    "x-content-type-options",
    "x-frame-options",
    "referrer-policy",
    "permissions-policy",
    "cross-origin-opener-policy",
}
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
WEAK_CIPHERS = ("RC4", "3DES", "DES-", "MD5", "NULL", "EXPORT", "aNULL", "eNULL", "PSK")

Rule = Callable[[Ctx], Iterator[Finding]]
RULES: dict[str, tuple[str, Rule]] = {}


def rule(rule_id: str, name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES[rule_id] = (name, fn)
        return fn

    return register


def finding(rule_id: str, sev: str, node: Node, msg: str, why: str, fix: str) -> Finding:
    file, line = loc(node)
    return Finding(rule_id, sev, file, line, msg, why, fix)


# ---------------------------------------------------------------- rules: headers


@rule("NG01", "add-header-inheritance")
def add_header_inheritance(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.nodes:
        if node.name not in ("server", "location", "if") or "block" not in node.stmt:
            continue
        mine = own(node.stmt, "add_header")
        if not mine:
            continue
        parent = effective(node.chain, "add_header", ctx.root)
        lost = {s["args"][0].lower() for s in parent if s["args"]} - {
            s["args"][0].lower() for s in mine if s["args"]
        }
        if not lost:
            continue
        security = sorted(lost & SECURITY_HEADERS)
        yield finding(
            "NG01",
            "error" if security else "warning",
            node,
            f"add_header here drops inherited header(s): {', '.join(sorted(lost))}",
            "nginx inherits add_header from the outer level only if this level has none; "
            "one add_header silently removes every header set above",
            "repeat the full security header set in this block (or drop its add_header; "
            "'expires' sets caching without add_header)",
        )


@rule("NG12", "obsolete-header")
def obsolete_header(ctx: Ctx) -> Iterator[Finding]:
    dead = {"expect-ct", "public-key-pins", "feature-policy", "p3p"}
    for node in ctx.find("add_header"):
        if len(node.args) < 2:
            continue
        name, value = node.args[0].lower(), node.args[1]
        if name == "x-xss-protection" and value.strip() != "0":
            msg = f"X-XSS-Protection '{value}' is obsolete"
        elif name in dead:
            msg = f"{node.args[0]} is obsolete"
        elif name == "permissions-policy" and "interest-cohort" in value:
            msg = "Permissions-Policy interest-cohort (FLoC) is dead"
        else:
            continue
        yield finding(
            "NG12",
            "warning",
            node,
            msg,
            "browsers removed the XSS auditor; '1; mode=block' has been used for XS-Leaks, "
            "and the other headers are unsupported",
            "remove the header (or send X-XSS-Protection: 0); rely on Content-Security-Policy",
        )


@rule("NG13", "security-header-without-always")
def header_without_always(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("add_header"):
        if node.args and node.args[0].lower() in SECURITY_HEADERS and node.args[-1] != "always":
            yield finding(
                "NG13",
                "warning",
                node,
                f"{node.args[0]} is added without 'always'",
                "without 'always' nginx adds the header only to 2xx/3xx answers, so error "
                "pages go out unprotected",
                f"add_header {node.args[0]} ... always;",
            )


def _tls_servers(ctx: Ctx) -> Iterator[Node]:
    return (n for n in ctx.servers() if is_tls_server(n.stmt))


@rule("NG14", "missing-security-headers")
def missing_security_headers(ctx: Ctx) -> Iterator[Finding]:
    required = {
        "strict-transport-security": "Strict-Transport-Security (HSTS)",
        "x-content-type-options": "X-Content-Type-Options",
        "referrer-policy": "Referrer-Policy",
    }
    for node in _tls_servers(ctx):
        headers = effective(scope(node), "add_header", ctx.root)
        names = {s["args"][0].lower(): s for s in headers if s["args"]}
        missing = [label for key, label in required.items() if key not in names]
        if not {"content-security-policy", "content-security-policy-report-only"} & set(names):
            missing.append("Content-Security-Policy")
        if "x-frame-options" not in names:
            missing.append("X-Frame-Options")
        hsts = names.get("strict-transport-security")
        if hsts and len(hsts["args"]) > 1:
            m = re.search(r"max-age=(\d+)", hsts["args"][1])
            if not m or int(m.group(1)) < 31536000:
                missing.append("HSTS max-age of at least 31536000")
        for what in missing:
            sev = "error" if what.startswith("Strict") else "warning"
            yield finding(
                "NG14",
                sev,
                node,
                f"TLS server is missing {what}",
                "without HSTS the first request can be downgraded to HTTP; the other headers "
                "are the baseline against sniffing, framing and referrer leaks",
                "add_header Strict-Transport-Security 'max-age=63072000; includeSubDomains' "
                "always; (and the rest of the set, each with 'always')",
            )


@rule("NG15", "weak-csp-or-referrer")
def weak_csp(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("add_header"):
        if len(node.args) < 2:
            continue
        name, value = node.args[0].lower(), node.args[1]
        if name == "referrer-policy" and value.strip().lower() in (
            "no-referrer-when-downgrade",
            "unsafe-url",
        ):
            yield finding(
                "NG15",
                "info",
                node,
                f"Referrer-Policy '{value}' sends full URLs (conversation ids) to other sites",
                "full URLs leak to every HTTPS third party the page links to",
                "add_header Referrer-Policy strict-origin-when-cross-origin always;",
            )
        if not name.startswith("content-security-policy"):
            continue
        policy = {}
        for part in value.split(";"):
            words = part.split()
            if words:
                policy[words[0].lower()] = words[1:]
        scripts = policy.get("script-src", policy.get("default-src", []))
        problems = [w for w in scripts if w in ("'unsafe-inline'", "'unsafe-eval'", "*")]
        problems += [w for w in scripts if w in ("http:", "https:", "data:")]
        problems += [
            f"no {k}" for k in ("frame-ancestors", "object-src", "base-uri") if k not in policy
        ]
        if problems:
            yield finding(
                "NG15",
                "info",
                node,
                f"weak Content-Security-Policy: {', '.join(problems)}",
                "a chat UI renders model output, which is untrusted input: inline or remote "
                "scripts turn a prompt injection into XSS",
                "script-src 'self' (no unsafe-inline/eval, no schemes), object-src 'none', "
                "base-uri 'self', frame-ancestors 'none' (nginxgen's default CSP)",
            )


# ---------------------------------------------------------------- rules: routing


@rule("NG03", "location-without-handler")
def location_without_handler(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        names = {s["directive"] for s in node.stmt.get("block", [])}
        if names & HANDLERS or effective(node.chain, "root", ctx.root):
            continue
        if "location" in names and not names - {"location", "#"}:
            continue  # a pure container of nested locations
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
        regexes = [n for n in locs if n.args and n.args[0] in ("~", "~*")]
        if not regexes:
            continue
        for n in locs:
            if not n.args or n.args[0] in ("=", "^~", "~", "~*") or n.args[0].startswith("@"):
                continue
            if n.args[0] == "/":
                continue
            yield finding(
                "NG04",
                "error",
                n,
                f"prefix location {n.args[0]} is shadowed by regex location(s) "
                f"{', '.join(' '.join(r.args) for r in regexes)}",
                "regex locations win over plain prefix locations, e.g. /v1/files/x.png "
                "goes to the static-asset regex instead of the API",
                f"location ^~ {n.args[0]} {{ ... }} (or nest the regex inside 'location /')",
            )


_PROXY_URL = re.compile(r"^(https?)://([^/]+)(/.*)?$")


@rule("NG05", "proxy-pass-uri-rewrite")
def proxy_pass_uri(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_pass"):
        m = _PROXY_URL.match(node.args[0]) if node.args else None
        parent = Node(node.chain[-1], node.chain[:-1]) if node.chain else None
        if not m or not m.group(3) or "$" in node.args[0] or parent is None:
            continue
        prefix = location_prefix(parent)
        if prefix is None or m.group(3) == prefix:
            continue
        yield finding(
            "NG05",
            "error" if prefix.startswith("/v1") else "warning",
            node,
            f"proxy_pass {node.args[0]} under location {prefix} rewrites {prefix}x to "
            f"{m.group(3)}x for the backend",
            "a URI part replaces the matched prefix and sends a decoded, normalized path; "
            "the gateway serves /v1/... and answers 404 to the stripped path",
            f"proxy_pass {m.group(1)}://{m.group(2)};  (no URI part: the path is kept)",
        )


@rule("NG11", "unknown-upstream")
def unknown_upstream(ctx: Ctx) -> Iterator[Finding]:
    ups = ctx.upstreams()
    for node in ctx.find("proxy_pass"):
        m = _PROXY_URL.match(node.args[0]) if node.args else None
        if not m or "$" in m.group(2):
            continue
        host = m.group(2).rsplit(":", 1)[0] if not m.group(2).startswith("[") else ""
        if not host or host in ups or "." in host or host == "localhost":
            continue
        yield finding(
            "NG11",
            "error",
            node,
            f"proxy_pass to '{host}', which is not a defined upstream",
            "nginx resolves it as a hostname at startup and refuses to start if it can't",
            f"define 'upstream {host} {{ server HOST:PORT; }}' or fix the name",
        )


@rule("NG02", "proxy-set-header-inheritance")
def proxy_set_header_inheritance(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        mine = own(node.stmt, "proxy_set_header")
        parent = effective(node.chain, "proxy_set_header", ctx.root)
        if not mine or not parent:
            continue
        lost = {s["args"][0].lower() for s in parent} - {s["args"][0].lower() for s in mine}
        if lost:
            yield finding(
                "NG02",
                "warning",
                node,
                f"proxy_set_header here drops inherited: {', '.join(sorted(lost))}",
                "like add_header, one proxy_set_header at a level discards all inherited ones",
                "repeat the full proxy_set_header set in this location, or set them at one level",
            )


# ---------------------------------------------------------------- rules: proxying


@rule("NG06", "hardcoded-connection-upgrade")
def hardcoded_upgrade(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_set_header"):
        if len(node.args) > 1 and node.args[0].lower() == "connection":
            if node.args[1].lower() == "upgrade":
                yield finding(
                    "NG06",
                    "warning",
                    node,
                    'Connection "upgrade" is sent on every proxied request',
                    "it claims an upgrade on plain requests and defeats upstream keepalive",
                    "map $http_upgrade $connection_upgrade { default upgrade; '' ''; } and "
                    "proxy_set_header Connection $connection_upgrade;",
                )


@rule("NG07", "connection-map")
def connection_map(ctx: Ctx) -> Iterator[Finding]:
    maps = {n.args[1].lstrip("$"): n for n in ctx.find("map") if len(n.args) > 1}
    for name, node in maps.items():
        if not own(node.stmt, "default"):
            yield finding(
                "NG07",
                "warning",
                node,
                f"map ${name} has no default",
                "unmatched values become empty, which can bypass the intent of the map",
                "add 'default ...;' to the map",
            )
    for node in ctx.nodes:
        if node.name == "map":
            continue
        if any("$connection_upgrade" in a for a in node.args) and "connection_upgrade" not in maps:
            yield finding(
                "NG07",
                "error",
                node,
                "$connection_upgrade is used but no map defines it",
                "nginx refuses to start with an unknown variable",
                "map $http_upgrade $connection_upgrade { default upgrade; '' ''; }",
            )


def _api_locations(ctx: Ctx) -> Iterator[Node]:
    for node in ctx.find("location"):
        if is_api_location(node) and effective(scope(node), "proxy_pass"):
            yield node


@rule("NG08", "sse-buffering")
def sse_buffering(ctx: Ctx) -> Iterator[Finding]:
    for node in _api_locations(ctx):
        buf = effective(scope(node), "proxy_buffering", ctx.root)
        if not buf or buf[-1]["args"][0] != "off":
            yield finding(
                "NG08",
                "error",
                node,
                f"streaming API location {location_prefix(node)} has proxy_buffering on",
                "nginx buffers the whole SSE response: tokens arrive in one burst at the end",
                "proxy_buffering off; proxy_cache off; gzip off; in the /v1/ location",
            )


@rule("NG09", "stream-timeouts")
def stream_timeouts(ctx: Ctx) -> Iterator[Finding]:
    need = ctx.gateway.read_timeout if ctx.gateway else MIN_STREAM_TIMEOUT
    floor = (
        max(ctx.gateway.first_token_timeout, ctx.gateway.idle_timeout)
        if ctx.gateway
        else MIN_STREAM_TIMEOUT - 1
    )
    for node in _api_locations(ctx):
        for name in ("proxy_read_timeout", "proxy_send_timeout"):
            found = effective(scope(node), name, ctx.root)
            value = seconds(found[-1]["args"][0]) if found else 60.0
            if value > floor:
                continue
            yield finding(
                "NG09",
                "error",
                node,
                f"{name} is {value:g}s on streaming location {location_prefix(node)}",
                "a slow first token or a long pause ends in a 504 or a cut stream; it must be "
                "longer than the gateway's own first-token and idle timeouts",
                f"{name} {need}s;",
            )


@rule("NG10", "upstream-keepalive-unused")
def keepalive_unused(ctx: Ctx) -> Iterator[Finding]:
    ups = {k for k, v in ctx.upstreams().items() if own(v, "keepalive")}
    maps = {n.args[1] for n in ctx.find("map") if len(n.args) > 1}
    for node in ctx.find("proxy_pass"):
        m = _PROXY_URL.match(node.args[0]) if node.args else None
        if not m or m.group(2) not in ups:
            continue
        levels = node.chain
        ver = effective(levels, "proxy_http_version", ctx.root)
        conn = [
            s
            for s in effective(levels, "proxy_set_header", ctx.root)
            if s["args"][0].lower() == "connection"
        ]
        ok_conn = bool(conn) and (conn[-1]["args"][1] in ("", "$connection_upgrade"))
        ok_conn = ok_conn and (conn[-1]["args"][1] == "" or "$connection_upgrade" in maps)
        if ver and ver[-1]["args"][0] == "1.1" and ok_conn:
            continue
        yield finding(
            "NG10",
            "warning",
            node,
            f"upstream {m.group(2)} has keepalive but this proxy does not reuse connections",
            "keepalive needs proxy_http_version 1.1 and a cleared Connection header",
            "proxy_http_version 1.1; proxy_set_header Connection '';",
        )


@rule("NG21", "body-size")
def body_size(ctx: Ctx) -> Iterator[Finding]:
    for node in _api_locations(ctx):
        found = effective(scope(node), "client_max_body_size", ctx.root)
        value = parse_size(found[-1]["args"][0]) if found else 1048576
        if ctx.gateway is not None:
            if value == ctx.gateway.max_body_bytes:
                continue
            msg = (
                f"client_max_body_size is {value} bytes, the gateway's request.max_body_bytes "
                f"is {ctx.gateway.max_body_bytes}"
            )
        elif found:
            continue
        else:
            msg = "client_max_body_size is not set (nginx default 1m)"
        yield finding(
            "NG21",
            "warning",
            node,
            msg,
            "the edge and the gateway must agree: a smaller edge limit gives HTML 413s for "
            "prompts the gateway accepts; a larger one spools bodies the gateway will reject",
            "client_max_body_size equal to the gateway's request.max_body_bytes "
            "(nginxgen --gateway-config does this)",
        )


@rule("NG24", "xff-trust")
def xff_trust(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_set_header"):
        if len(node.args) < 2 or node.args[0].lower() != "x-forwarded-for":
            continue
        if "$proxy_add_x_forwarded_for" not in node.args[1]:
            continue
        if effective(node.chain, "set_real_ip_from", ctx.root):
            continue
        yield finding(
            "NG24",
            "warning",
            node,
            "X-Forwarded-For appends to whatever the client sent",
            "the gateway trusts nginx, so a client-sent 'X-Forwarded-For: 6.6.6.6' becomes "
            "its idea of the client IP (rate limits, allowlist, audit)",
            "at the edge: proxy_set_header X-Forwarded-For $remote_addr; behind a known LB: "
            "set_real_ip_from <LB>; real_ip_header X-Forwarded-For;",
        )
    for node in ctx.find("set_real_ip_from"):
        if node.args and node.args[0] in ("0.0.0.0/0", "::/0", "all"):
            yield finding(
                "NG24",
                "error",
                node,
                f"set_real_ip_from {node.args[0]} trusts every client",
                "any client can then choose its own address",
                "list only your load balancers' addresses",
            )


@rule("NG25", "host-spoofing")
def host_spoofing(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_set_header"):
        if len(node.args) > 1 and node.args[0].lower() == "host" and "$http_host" in node.args[1]:
            yield finding(
                "NG25",
                "warning",
                node,
                "proxy_set_header Host $http_host passes the client's Host unchecked",
                "the backend builds links and checks from a client-controlled value",
                "proxy_set_header Host $host;",
            )


@rule("NG30", "missing-rate-limit")
def missing_rate_limit(ctx: Ctx) -> Iterator[Finding]:
    zones = set()
    for n in ctx.find("limit_req_zone"):
        zones |= {a.split("=", 1)[1].split(":")[0] for a in n.args if a.startswith("zone=")}
    czones = {n.args[1].split("=", 1)[1].split(":")[0] for n in ctx.find("limit_conn_zone")}
    for node in ctx.find("limit_req"):
        for a in node.args:
            if a.startswith("zone=") and a[5:] not in zones:
                yield finding(
                    "NG30",
                    "error",
                    node,
                    f"limit_req zone {a[5:]} is not defined",
                    "nginx refuses to start",
                    "limit_req_zone $binary_remote_addr zone=NAME:10m rate=10r/s; at http level",
                )
    for node in ctx.find("limit_conn"):
        if node.args and node.args[0] not in czones:
            yield finding(
                "NG30",
                "error",
                node,
                f"limit_conn zone {node.args[0]} is not defined",
                "nginx refuses to start",
                "limit_conn_zone $binary_remote_addr zone=NAME:10m; at http level",
            )
    for node in _api_locations(ctx):
        if not effective(scope(node), "limit_req", ctx.root):
            yield finding(
                "NG30",
                "info",
                node,
                f"API location {location_prefix(node)} has no limit_req/limit_conn",
                "every request costs GPU time; the edge is the cheapest place to shed floods",
                "limit_req zone=api burst=20 nodelay; limit_conn conn 20; limit_req_status 429;",
            )


# ---------------------------------------------------------------- rules: TLS and servers


@rule("NG16", "tls-policy")
def tls_policy(ctx: Ctx) -> Iterator[Finding]:
    for node in _tls_servers(ctx):
        protos = effective(scope(node), "ssl_protocols", ctx.root)
        ciphers = effective(scope(node), "ssl_ciphers", ctx.root)
        problems = []
        if not protos:
            problems.append("ssl_protocols is not set (nginx 1.22's default has no TLSv1.3)")
        else:
            weak = [p for p in protos[-1]["args"] if p in ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")]
            if weak:
                problems.append(f"ssl_protocols allows {' '.join(weak)}")
        if not ciphers:
            problems.append("ssl_ciphers is not set")
        else:
            bad = [
                w
                for c in ciphers[-1]["args"][0].split(":")
                for w in WEAK_CIPHERS
                if w in c and not c.startswith("!")
            ]
            if bad:
                problems.append(f"ssl_ciphers allows weak suites ({', '.join(sorted(set(bad)))})")
        for p in problems:
            yield finding(
                "NG16",
                "warning",
                node,
                p,
                "weak or default TLS settings either refuse modern clients or allow broken ones",
                "Mozilla intermediate: ssl_protocols TLSv1.2 TLSv1.3; ssl_ciphers "
                "ECDHE-...-GCM/CHACHA20 list; ssl_prefer_server_ciphers off;",
            )


@rule("NG18", "http2-syntax-vs-version")
def http2_syntax(ctx: Ctx) -> Iterator[Finding]:
    new = ctx.nginx_version >= (1, 25, 1)
    for node in ctx.find("http2"):
        if not new:
            yield finding(
                "NG18",
                "error",
                node,
                "'http2 on;' needs nginx 1.25.1 (target is "
                f"{'.'.join(map(str, ctx.nginx_version))})",
                "older nginx stops with 'unknown directive \"http2\"'",
                "listen 443 ssl http2; on nginx < 1.25.1",
            )
    for node in ctx.find("listen"):
        if new and "http2" in node.args[1:]:
            yield finding(
                "NG18",
                "warning",
                node,
                "'listen ... http2' is deprecated from nginx 1.25.1",
                "nginx warns on every start and the parameter will go away",
                "listen 443 ssl; http2 on;",
            )


# name → (first version that has it, version that removed it)
VERSION_TABLE: dict[str, tuple[tuple[int, int, int], tuple[int, int, int] | None]] = {
    "http3": ((1, 25, 0), None),
    "quic_retry": ((1, 25, 0), None),
    "add_header_inherit": ((1, 29, 3), None),
    "early_hints": ((1, 29, 0), None),
    "ssl_certificate_cache": ((1, 27, 4), None),
    "keepalive_min_timeout": ((1, 27, 4), None),
    "ssl_reject_handshake": ((1, 19, 4), None),
    "keepalive_time": ((1, 19, 10), None),
    "http2_push": ((1, 13, 9), (1, 25, 1)),
    "http2_push_preload": ((1, 13, 9), (1, 25, 1)),
}


@rule("NG19", "version-gate")
def version_gate(ctx: Ctx) -> Iterator[Finding]:
    v = ctx.nginx_version
    for node in ctx.nodes:
        gate = VERSION_TABLE.get(node.name)
        if gate is None:
            continue
        first, removed = gate
        if v < first or (removed is not None and v >= removed):
            yield finding(
                "NG19",
                "error",
                node,
                f"{node.name} is not available in nginx {'.'.join(map(str, v))}",
                "nginx -t fails with an unknown or obsolete directive on the target",
                "remove it, or target a version that has it (--nginx-version)",
            )


@rule("NG20", "server-tokens")
def server_tokens(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.servers():
        found = effective(scope(node), "server_tokens", ctx.root)
        if not found or found[-1]["args"][0] != "off":
            yield finding(
                "NG20",
                "warning",
                node,
                "server_tokens is on (the default)",
                "every response and error page discloses the exact nginx version",
                "server_tokens off;",
            )


def _redirects_to_https(stmt: Stmt) -> bool:
    for r in own(stmt, "return"):
        if any(a.startswith("https://") for a in r["args"]):
            return True
    return False


@rule("NG22", "acme-unreachable")
def acme(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.servers():
        if is_tls_server(node.stmt) or not own(node.stmt, "listen"):
            continue
        locs = own(node.stmt, "location")
        has_acme = any("/.well-known/acme-challenge" in " ".join(s["args"]) for s in locs)
        if _redirects_to_https(node.stmt):
            yield finding(
                "NG22",
                "error",
                node,
                "server-level 'return' redirects everything, the ACME path included",
                "a server-level return runs before location matching: certbot --webroot "
                "renewals can never reach /.well-known/acme-challenge/",
                "location ^~ /.well-known/acme-challenge/ { root /var/www/_letsencrypt; } and "
                "move the redirect into 'location / { return 301 https://$host$request_uri; }'",
            )
        elif not has_acme:
            yield finding(
                "NG22",
                "error",
                node,
                "no location ^~ /.well-known/acme-challenge/ on the plain-HTTP server",
                "certbot --webroot renewals need the http-01 challenge served from disk",
                "location ^~ /.well-known/acme-challenge/ { root /var/www/_letsencrypt; }",
            )


@rule("NG32", "http-not-redirected")
def http_not_redirected(ctx: Ctx) -> Iterator[Finding]:
    if not any(True for _ in _tls_servers(ctx)):
        return
    for node in ctx.servers():
        if is_tls_server(node.stmt) or not own(node.stmt, "listen"):
            continue
        if _redirects_to_https(node.stmt):
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


@rule("NG26", "ocsp-stapling")
def stapling(ctx: Ctx) -> Iterator[Finding]:
    for node in _tls_servers(ctx):
        sc = scope(node)
        on = effective(sc, "ssl_stapling", ctx.root)
        on = bool(on) and on[-1]["args"][0] == "on"
        trusted = effective(sc, "ssl_trusted_certificate", ctx.root)
        verify = effective(sc, "ssl_stapling_verify", ctx.root) or effective(
            sc, "ssl_verify_client", ctx.root
        )
        if trusted and not (on and verify):
            n = Node(trusted[-1], sc)
            yield finding(
                "NG26",
                "info",
                n,
                "ssl_trusted_certificate without OCSP stapling verification or client certs",
                "dead config; Let's Encrypt closed its OCSP responders in 2025",
                "remove it, or enable ssl_stapling on; ssl_stapling_verify on; with a resolver",
            )
        if on and not effective(sc, "resolver", ctx.root):
            yield finding(
                "NG26",
                "warning",
                node,
                "ssl_stapling on without a resolver",
                "nginx cannot fetch OCSP responses and logs warnings",
                "resolver 127.0.0.1; (a local resolver)",
            )


@rule("NG29", "immutable-cache-scope")
def immutable_cache(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        if not node.args or node.args[0] not in ("~", "~*"):
            continue
        exp = own(node.stmt, "expires")
        long_exp = bool(exp) and seconds(exp[-1]["args"][-1]) >= 30 * 86400
        if exp and exp[-1]["args"][-1] == "max":
            long_exp = True
        immutable = any(
            "immutable" in " ".join(s["args"]).lower() for s in own(node.stmt, "add_header")
        )
        if long_exp or immutable:
            yield finding(
                "NG29",
                "info",
                node,
                "long-lived/immutable caching on every file matching an extension regex",
                "unhashed files (config.js, service workers) stay stale in browsers after a deploy",
                "expires 7d; here, and 1y/immutable only under a fingerprinted path",
            )


@rule("NG33", "gateway-agreement")
def gateway_agreement(ctx: Ctx) -> Iterator[Finding]:
    """Only with --gateway-config: the API upstream must be the gateway nginx can trust."""
    if ctx.gateway is None:
        return
    ups = ctx.upstreams()
    want = ctx.gateway.upstream
    for loc_node in _api_locations(ctx):
        target = effective(scope(loc_node), "proxy_pass")[-1]["args"][0]
        m = _PROXY_URL.match(target)
        if not m:
            continue
        name = m.group(2)
        members = [s["args"][0] for s in own(ups[name], "server")] if name in ups else [name]
        node = Node(ups[name], []) if name in ups else loc_node
        if want not in members and not any(
            x.rpartition(":")[2] == want.rpartition(":")[2] for x in members
        ):
            yield finding(
                "NG33",
                "error",
                node,
                f"API upstream {', '.join(members)} is not the gateway's listen address {want}",
                "nginx would proxy /v1/ to a port the gateway does not listen on (502)",
                f"server {want}; in the upstream (nginxgen --gateway-config does this)",
            )
        for member in members:
            host = member.rpartition(":")[0].strip("[]")
            source = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1"}.get(host)
            if source and not ctx.gateway.trusts(source):
                yield finding(
                    "NG33",
                    "warning",
                    node,
                    f"the gateway does not list {source} in whitelist.trusted_proxies",
                    "the gateway then ignores X-Forwarded-For/X-Request-Id from nginx and sees "
                    "every client as nginx itself",
                    f"add '{source}' to whitelist.trusted_proxies in the gateway's YAML",
                )
                break


# ---------------------------------------------------------------- entry points


def _comments(stmts: list[Stmt]) -> Iterator[str]:
    for s in stmts:
        if s["directive"] == "#":
            yield s.get("comment", "")
        if "block" in s:
            yield from _comments(s["block"])


def parse_config(path: str | Path) -> tuple[list[Stmt], list[Finding], set[str]]:
    """Parse a site snippet or a whole nginx.conf → (http-level statements, parse findings,
    suppressed rule ids). Snippets are parsed through a wrapper so their context is checked as
    inside ``http {}``, exactly where Debian includes them."""
    path = Path(path)
    absolute = str(path.resolve())
    first = crossplane.parse(absolute, single=True, check_ctx=False, comments=True)
    top = first["config"][0]["parsed"] if first["config"] else []
    with tempfile.TemporaryDirectory(prefix="nginxgen-lint-") as tmp:
        if any(s["directive"] == "http" for s in top):
            entry = absolute
        else:
            entry = os.path.join(tmp, "nginx.conf")
            Path(entry).write_text(f"events {{}}\nhttp {{\ninclude {absolute!r};\n}}\n")
        payload = crossplane.parse(entry, combine=True, comments=True)
    display = {absolute: str(path)}

    def fix_files(stmts: list[Stmt]) -> None:
        for s in stmts:
            s["file"] = display.get(s.get("file", ""), s.get("file", ""))
            fix_files(s.get("block", []))

    parsed = payload["config"][0]["parsed"] if payload["config"] else []
    fix_files(parsed)
    findings = [
        Finding(
            "NG00",
            "error",
            display.get(e.get("file") or "", e.get("file") or str(path)),
            int(e.get("line") or 0),
            str(e.get("error", "parse error")).split(" in /")[0] or "unexpected end of file",
            "crossplane could not parse this; nginx -t would fail too",
            "fix the syntax or the directive's context/arguments",
        )
        for e in payload["errors"]
    ]
    http = [s for s in parsed if s["directive"] == "http"]
    root = http[0]["block"] if http else parsed
    suppressed: set[str] = set()
    for text in _comments(parsed):
        if _build.LINT_SUPPRESS in text:
            ids = text.split(_build.LINT_SUPPRESS, 1)[1].split()[0]
            suppressed |= {i.strip() for i in ids.split(",") if i.strip()}
    return root, findings, suppressed


def lint_file(
    path: str | Path,
    *,
    nginx_version: tuple[int, int, int] = (1, 22, 1),
    gateway: GatewaySettings | None = None,
) -> list[Finding]:
    """All findings for one config file, sorted by file and line."""
    root, findings, suppressed = parse_config(path)
    ctx = Ctx(root, nginx_version=nginx_version, gateway=gateway)
    for rule_id, (_name, fn) in RULES.items():
        if rule_id not in suppressed:
            findings.extend(fn(ctx))
    return sorted(findings, key=lambda f: (f.file, f.line, f.rule))


def lint_text(text: str, **kwargs: Any) -> list[Finding]:
    """Lint config text (e.g. nginxgen's own output) through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="nginxgen-lint-") as tmp:
        path = Path(tmp) / "site.conf"
        path.write_text(text, encoding="utf-8")
        findings = lint_file(path, **kwargs)
    return [replace_file(f, "<site>") if f.file == str(path) else f for f in findings]


def replace_file(f: Finding, name: str) -> Finding:
    return Finding(f.rule, f.severity, name, f.line, f.message, f.why, f.fix)
