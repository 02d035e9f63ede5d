"""Lint rules on TLS policy, OCSP stapling, HTTP/2 syntax and version gates."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from functools import lru_cache

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
# Cipher-string words and suite-name parts that ask for broken or unauthenticated suites.
WEAK_WORDS = ("RC4", "DES", "3DES", "MD5", "NULL", "eNULL", "aNULL", "EXPORT", "EXP", "LOW",
              "ADH", "AECDH")  # fmt: skip
WEAK_PARTS = ("RC4", "DES-", "-DES", "MD5", "NULL", "EXP-", "ADH-", "AECDH-")
DEFAULT_PROTOCOLS_TLS13 = (1, 23, 4)  # from this nginx on, the default includes TLSv1.3


@lru_cache(maxsize=256)
def expand_ciphers(spec: str) -> tuple[str, ...] | None:
    """The TLS ≤ 1.2 suites an OpenSSL cipher string selects, expanded by the OpenSSL this
    machine has (nginx's, on a distribution), or None when it selects nothing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.set_ciphers(spec)
    except ssl.SSLError:
        return None
    return tuple(c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3")


def weak_ciphers(spec: str) -> list[str]:
    """Weak suites the string asks for by name, or that its aliases (ALL, HIGH, …) select."""
    asked = [
        t
        for t in spec.split(":")
        if t and t[0] not in "!-+@" and (t in WEAK_WORDS or any(w in t for w in WEAK_PARTS))
    ]
    selected = [n for n in expand_ciphers(spec) or () if any(w in n for w in WEAK_PARTS)]
    return list(dict.fromkeys(asked + selected))


def _protocols(node: Node, ctx: Ctx) -> tuple[list[str] | None, list[str]]:
    """(ssl_protocols as written or None, the protocols nginx will use)."""
    found = effective(scope(node), "ssl_protocols", ctx.root)
    if found:
        return found[-1]["args"], found[-1]["args"]
    if ctx.nginx_version >= DEFAULT_PROTOCOLS_TLS13:
        return None, ["TLSv1.2", "TLSv1.3"]
    return None, ["TLSv1", "TLSv1.1", "TLSv1.2"]


@rule("NG16", "tls-policy", replaces=("weak_ssl_tls",))
def tls_policy(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.tls_servers():
        if setting(scope(node), "ssl_reject_handshake", ctx.root) == "on":
            continue  # no handshake ever completes
        written, protocols = _protocols(node, ctx)
        problems = []
        if written is None and ctx.nginx_version < DEFAULT_PROTOCOLS_TLS13:
            problems.append(
                "ssl_protocols is not set: before nginx 1.23.4 the default is TLSv1 TLSv1.1 "
                "TLSv1.2, with no TLSv1.3"
            )
        elif written is not None:
            weak = [p for p in written if p in ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")]
            if weak:
                problems.append(f"ssl_protocols allows {' '.join(weak)}")
        if set(protocols) == {"TLSv1.3"}:
            ciphers = None  # ssl_ciphers only applies up to TLS 1.2
        else:
            ciphers = effective(scope(node), "ssl_ciphers", ctx.root)
            if not ciphers:
                problems.append(
                    "ssl_ciphers is not set: nginx's default HIGH:!aNULL:!MD5 keeps CBC "
                    "suites without forward secrecy"
                )
        if ciphers and ciphers[-1]["args"]:
            spec = ciphers[-1]["args"][0]
            weak = weak_ciphers(spec)
            if weak:
                shown = ", ".join(weak[:4]) + (", …" if len(weak) > 4 else "")
                problems.append(f"ssl_ciphers {spec} allows weak suites ({shown})")
            elif expand_ciphers(spec) is None:
                problems.append(f"ssl_ciphers {spec} selects no cipher this OpenSSL knows")
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
    "http3_hq": ((1, 25, 0), None),
    "http3_max_concurrent_streams": ((1, 25, 0), None),
    "http3_stream_buffer_size": ((1, 25, 0), None),
    "quic_active_connection_id_limit": ((1, 25, 0), None),
    "quic_bpf": ((1, 25, 0), None),
    "quic_gso": ((1, 25, 0), None),
    "quic_host_key": ((1, 25, 0), None),
    "quic_retry": ((1, 25, 0), None),
    "ssl_object_cache_inheritable": ((1, 27, 4), None),
    "proxy_ssl_certificate_cache": ((1, 27, 4), None),
    "add_trailer_inherit": ((1, 29, 3), None),
    "auth_delay": ((1, 17, 10), None),
    "ssl_ocsp": ((1, 19, 0), None),
    "proxy_cookie_flags": ((1, 19, 3), None),
    "ssl_conf_command": ((1, 19, 4), None),
    "add_header_inherit": ((1, 29, 3), None),
    "early_hints": ((1, 29, 0), None),
    "ssl_certificate_cache": ((1, 27, 4), None),
    "keepalive_min_timeout": ((1, 27, 4), None),
    "ssl_reject_handshake": ((1, 19, 4), None),
    "keepalive_time": ((1, 19, 10), None),
    "http2_push": ((1, 13, 9), (1, 25, 1)),
    "http2_push_preload": ((1, 13, 9), (1, 25, 1)),
}


# listen parameters the same way ('listen 443 quic' needs nginx 1.25 and its http_v3 module).
LISTEN_PARAMS = {"quic": ((1, 25, 0), None)}


@rule("NG19", "version-gate")
def version_gate(ctx: Ctx) -> Iterator[Finding]:
    v = ctx.nginx_version
    for node in ctx.nodes:
        gates = [(node.name, VERSION_TABLE.get(node.name))]
        if node.name == "listen":
            gates = [(f"listen ... {a}", LISTEN_PARAMS.get(a)) for a in node.args[1:]]
        for what, gate in gates:
            if gate is None:
                continue
            first, removed = gate
            if v >= first and (removed is None or v < removed):
                continue
            yield finding(
                "NG19",
                "error",
                node,
                f"{what} is not available in nginx {version_text(v)}",
                "nginx -t fails with an unknown or obsolete directive on the target",
                "remove it, or target a version that has it (--nginx-version)",
            )


@rule("NG26", "ocsp-stapling", gixy=("ssl_stapling_without_resolver",))
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
