"""Lint rules on proxying to the UI and the gateway: URIs, upstreams, streaming, limits."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

from ..model import MIN_STREAM_TIMEOUT, parse_size
from ..tree import (
    VARIABLE,
    Ctx,
    Finding,
    Node,
    effective,
    finding,
    location_prefix,
    own,
    parent,
    proxy_url,
    scope,
    seconds,
    setting,
)
from . import rule


@rule("NG05", "proxy-pass-uri-rewrite", replaces=("proxy_pass_normalized",))
def proxy_pass_uri(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_pass"):
        target = proxy_url(node.stmt)
        up = parent(node)
        if not target or not target.uri or "$" in node.args[0] or up is None:
            continue
        prefix = location_prefix(up)
        if prefix is None or target.uri == prefix:
            continue
        api = prefix.startswith("/v1")
        yield finding(
            "NG05",
            "error" if api else "info",
            node,
            f"proxy_pass {node.args[0]} under location {prefix} rewrites {prefix}x to "
            f"{target.uri}x for the backend",
            "a URI part replaces the matched prefix and sends a decoded, normalized path"
            + (
                "; the gateway serves /v1/... and answers 404 to the stripped path"
                if api
                else " (%2F arrives as /); fine when the backend expects the stripped path"
            ),
            f"proxy_pass {target.scheme}://{target.host};  (no URI part: the path is kept)",
        )


def _split_port(host: str) -> tuple[str, str | None]:
    if host.startswith("["):
        return host, None
    name, sep, port = host.partition(":")
    return name, port if sep else None


@rule("NG11", "unknown-upstream")
def unknown_upstream(ctx: Ctx) -> Iterator[Finding]:
    ups = ctx.upstreams()
    for node in ctx.find("proxy_pass"):
        target = proxy_url(node.stmt)
        if not target or target.is_unix or "$" in target.host:
            continue
        name, port = _split_port(target.host)
        if name in ups:
            if port is not None:
                yield finding(
                    "NG11",
                    "error",
                    node,
                    f"proxy_pass to upstream {name} with a port ({port})",
                    f"nginx -t stops with 'upstream \"{name}\" may not have port {port}'",
                    f"proxy_pass {target.scheme}://{name};  (the port belongs in the upstream)",
                )
            continue
        if "." in name or ":" in name or name in ("localhost", "") or port is not None:
            continue  # an address, or host:port (a Docker/Compose service name)
        close = difflib.get_close_matches(name, ups, n=1, cutoff=0.75)
        yield finding(
            "NG11",
            "error" if close else "info",
            node,
            f"proxy_pass to '{name}', which is not a defined upstream"
            + (f"; did you mean '{close[0]}'?" if close else ""),
            "nginx resolves an undefined name as a host name when it starts and refuses to "
            "start if that fails (fine for a Docker/Compose service name)",
            f"proxy_pass {target.scheme}://{close[0]};"
            if close
            else f"define 'upstream {name} {{ server HOST:PORT; }}', or keep it if it is a "
            "service name the host resolves",
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


# Where an empty value means "leave it out": nginx adds no header with an empty value, so a
# map without default is a deliberate way to send a header only for some responses (h5bp).
_EMPTY_IS_OMITTED = frozenset({"add_header", "more_set_headers", "expires"})


@rule("NG07", "connection-map", replaces=("hash_without_default",))
def connection_map(ctx: Ctx) -> Iterator[Finding]:
    maps = ctx.maps()
    users: dict[str, set[str]] = {}
    for node in ctx.nodes:
        if node.name != "map":
            for var in VARIABLE.findall(" ".join(node.args)):
                users.setdefault(var, set()).add(node.name)
    for node in ctx.find("map"):
        name = node.args[1].lstrip("$") if len(node.args) > 1 else ""
        used = users.get(name, set())
        if own(node.stmt, "default") or not used or used <= _EMPTY_IS_OMITTED:
            continue
        yield finding(
            "NG07",
            "info",
            node,
            f"map ${name} has no default (used by {', '.join(sorted(used))})",
            "unmatched values become empty; check that empty is the intended outcome",
            "add 'default ...;' to the map to make the fallback explicit",
        )
    for node in ctx.nodes:
        if node.name == "map":
            continue
        if "connection_upgrade" in users and "connection_upgrade" not in maps:
            if any("$connection_upgrade" in a for a in node.args):
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
        levels = scope(node)
        if setting(levels, "proxy_buffering", ctx.root) == "off":
            continue
        # The gateway answers streams with X-Accel-Buffering: no, which turns nginx's buffering
        # off per response; only a config that ignores that header buffers the stream for sure.
        ignored = [
            a.lower()
            for s in effective(levels, "proxy_ignore_headers", ctx.root)
            for a in s["args"]
        ]
        sure = "x-accel-buffering" in ignored
        yield finding(
            "NG08",
            "error" if sure else "warning",
            node,
            f"streaming API location {location_prefix(node)} has proxy_buffering on"
            + (" and ignores X-Accel-Buffering" if sure else ""),
            "nginx buffers the SSE response: tokens arrive in bursts or all at the end"
            if sure
            else "streaming then depends on the upstream sending X-Accel-Buffering: no (qwengw "
            "does) and on nothing else buffering; with other upstreams tokens can arrive late",
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


def _empty_for_no_upgrade(map_node: Node) -> bool:
    entries = {e["directive"]: e["args"] for e in map_node.stmt.get("block", [])}
    value = entries.get("", entries.get("default", [""]))
    return not value or value[0] in ("", "''", '""')


@rule("NG10", "upstream-keepalive-unused")
def keepalive_unused(ctx: Ctx) -> Iterator[Finding]:
    ups = {k for k, v in ctx.upstreams().items() if own(v, "keepalive")}
    # A $connection_upgrade map keeps connections only if a request without Upgrade gets an
    # empty Connection ('' ''); the websocket example's '' close closes each one instead.
    maps = {
        f"${name}"
        for name, node in ctx.maps().items()
        if name != "connection_upgrade" or _empty_for_no_upgrade(node)
    }
    for node in ctx.find("proxy_pass"):
        target = proxy_url(node.stmt)
        if not target or target.host not in ups:
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
            f"upstream {target.host} has keepalive but this proxy does not reuse connections",
            "keepalive needs proxy_http_version 1.1 and a cleared Connection header (a "
            "$connection_upgrade map must give '' for requests without Upgrade, not close)",
            "proxy_http_version 1.1; proxy_set_header Connection ''; (or map $http_upgrade "
            "$connection_upgrade { default upgrade; '' ''; })",
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


# Request parts the client writes freely (unlike $host, which nginx validates).
_CLIENT_VARS = re.compile(r"\$\{?(http_\w+|arg_\w+|cookie_\w+|args|query_string)")


@rule("NG25", "host-spoofing", gixy=("host_spoofing",))
def host_spoofing(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_set_header"):
        if len(node.args) < 2 or node.args[0].lower() != "host":
            continue
        m = _CLIENT_VARS.search(node.args[1])
        if m:
            yield finding(
                "NG25",
                "warning",
                node,
                f"proxy_set_header Host ${m.group(1)} passes a client-chosen Host unchecked",
                "the backend builds links and checks from a client-controlled value",
                "proxy_set_header Host $host;",
            )


@rule("NG30", "missing-rate-limit")
def missing_rate_limit(ctx: Ctx) -> Iterator[Finding]:
    zones = set()  # zones are global: a site sees those of conf.d/ and nginx.conf too
    for n in ctx.defined("limit_req_zone"):
        zones |= {a.split("=", 1)[1].split(":")[0] for a in n.args if a.startswith("zone=")}
    czones = {
        n.args[1].split("=", 1)[1].split(":")[0]
        for n in ctx.defined("limit_conn_zone")
        if len(n.args) > 1 and "=" in n.args[1]
    }
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
        target = proxy_url(effective(scope(loc_node), "proxy_pass")[-1])
        if not target:
            continue
        name = target.host
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
