"""Lint rules on proxying to the UI and the gateway: URIs, upstreams, streaming, limits."""

from __future__ import annotations

from collections.abc import Iterator

from .lint import (
    Ctx,
    Finding,
    Node,
    effective,
    finding,
    location_prefix,
    own,
    proxy_url,
    rule,
    scope,
    seconds,
    setting,
)
from .model import MIN_STREAM_TIMEOUT, parse_size


@rule("NG05", "proxy-pass-uri-rewrite")
def proxy_pass_uri(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_pass"):
        m = proxy_url(node.stmt)
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
        m = proxy_url(node.stmt)
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


@rule("NG08", "sse-buffering")
def sse_buffering(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.api_locations():
        if setting(scope(node), "proxy_buffering", ctx.root) != "off":
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
    for node in ctx.api_locations():
        for name in ("proxy_read_timeout", "proxy_send_timeout"):
            value = seconds(setting(scope(node), name, ctx.root) or "60s")
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
        m = proxy_url(node.stmt)
        if not m or m.group(2) not in ups:
            continue
        levels = node.chain
        conn = [
            s
            for s in effective(levels, "proxy_set_header", ctx.root)
            if s["args"][0].lower() == "connection"
        ]
        ok_conn = bool(conn) and (conn[-1]["args"][1] in ("", "$connection_upgrade"))
        ok_conn = ok_conn and (conn[-1]["args"][1] == "" or "$connection_upgrade" in maps)
        if setting(levels, "proxy_http_version", ctx.root) == "1.1" and ok_conn:
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
    for node in ctx.api_locations():
        found = setting(scope(node), "client_max_body_size", ctx.root)
        value = parse_size(found) if found else 1048576
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
    for node in ctx.api_locations():
        if not effective(scope(node), "limit_req", ctx.root):
            yield finding(
                "NG30",
                "info",
                node,
                f"API location {location_prefix(node)} has no limit_req/limit_conn",
                "every request costs GPU time; the edge is the cheapest place to shed floods",
                "limit_req zone=api burst=20 nodelay; limit_conn conn 20; limit_req_status 429;",
            )


@rule("NG33", "gateway-agreement")
def gateway_agreement(ctx: Ctx) -> Iterator[Finding]:
    """Only with --gateway-config: the API upstream must be the gateway nginx can trust."""
    if ctx.gateway is None:
        return
    ups = ctx.upstreams()
    want = ctx.gateway.upstream
    for loc_node in ctx.api_locations():
        m = proxy_url(effective(scope(loc_node), "proxy_pass")[-1])
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
