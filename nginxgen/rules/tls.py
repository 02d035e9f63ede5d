"""Lint rules on TLS policy, OCSP stapling, HTTP/2 syntax and version gates."""

from __future__ import annotations

from collections.abc import Iterator

from ..model import version_text
from ..tree import (
    Ctx,
    Finding,
    Node,
    effective,
    finding,
    is_tls_server,
    own,
    scope,
    setting,
)
from . import rule

# Chosen from the socket's default server before the SNI name is known, so a non-default
# server's own value never applies (checked on nginx 1.22.1 / OpenSSL 3.0: a TLSv1.3-only
# non-default server still completed a TLSv1.2 handshake). ssl_ciphers is not here: the same
# check showed a non-default server's cipher list is honoured.
DEFAULT_SERVER_ONLY = ("ssl_protocols", "ssl_ecdh_curve")
WEAK_CIPHERS = ("RC4", "3DES", "DES-", "MD5", "NULL", "EXPORT", "aNULL", "eNULL", "PSK")


@rule("NG16", "tls-policy")
def tls_policy(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.tls_servers():
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


@rule("NG17", "tls-policy-in-non-default-server")
def tls_policy_in_non_default_server(ctx: Ctx) -> Iterator[Finding]:
    reported: set[int] = set()
    for socket, pairs in ctx.sockets().items():
        servers = list({id(s.stmt): s for s, _listen in pairs}.values())
        if len(servers) < 2:
            continue
        default = ctx.default_server(pairs)
        for server in servers:
            if server is default or not is_tls_server(server.stmt):
                continue
            for name in DEFAULT_SERVER_ONLY:
                mine = own(server.stmt, name)
                if not mine or id(mine[-1]) in reported:
                    continue
                theirs = effective(scope(default), name, ctx.root)
                if theirs and theirs[-1]["args"] == mine[-1]["args"]:
                    continue
                reported.add(id(mine[-1]))
                yield finding(
                    "NG17",
                    "warning",
                    Node(mine[-1], scope(server)),
                    f"{name} in a server that is not the default for {socket} is ignored",
                    "nginx takes it from the socket's default server before it knows the "
                    "requested name, so this server silently gets the default's setting",
                    f"set {name} once at http level (or the same in every server on {socket})",
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
                f"'http2 on;' needs nginx 1.25.1 (target is {version_text(ctx.nginx_version)})",
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
                f"{node.name} is not available in nginx {version_text(v)}",
                "nginx -t fails with an unknown or obsolete directive on the target",
                "remove it, or target a version that has it (--nginx-version)",
            )


@rule("NG26", "ocsp-stapling")
def stapling(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.tls_servers():
        sc = scope(node)
        on = setting(sc, "ssl_stapling", ctx.root) == "on"
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
