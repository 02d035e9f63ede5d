"""Security rules of the classes gixy-ng reports as high severity: path traversal through
alias, response splitting, SSRF, access rules that do not restrict, and referer checks."""

from __future__ import annotations

from collections.abc import Iterator

from .. import regex
from ..tree import VARIABLE, Ctx, Finding, Node, finding, location_prefix, own, parent, scope
from ..variables import Part, Where, parts
from . import rule


def _location(node: Node) -> Node | None:
    up = parent(node)
    return up if up is not None and up.name == "location" else None


@rule("NG37", "alias-traversal", gixy=("alias_traversal",))
def alias_traversal(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("alias"):
        loc = _location(node)
        if loc is None or not node.args:
            continue
        target = node.args[0]
        prefix = location_prefix(loc)
        if prefix is not None and loc.args[0] != "=":
            if prefix.endswith("/"):
                continue
            sev, what = ("error", "../ traversal") if target.endswith("/") else ("warning", "")
            yield finding(
                "NG37",
                sev,
                node,
                f"location {prefix} (no trailing slash) with alias {target}: "
                f"{prefix}../x is read as {target}../x" + (f" ({what})" if what else ""),
                "the location also matches names that merely start with the prefix, and "
                "alias pastes the rest of the URI after its path: one level up is readable",
                f"location {prefix}/ {{ alias {target.rstrip('/')}/; }}  (slash on both, or none)",
            )
            continue
        if len(loc.args) < 2 or loc.args[0] not in ("~", "~*"):
            continue
        groups = regex.groups(loc.args[1], loc.args[0] == "~*")
        for m in VARIABLE.finditer(target):
            group = groups.get(m.group(1))
            before = target[m.start() - 1 : m.start()]
            if group is None or "." not in group.chars or group.starts_slash:
                continue
            if group.after_slash and before == "/":
                continue
            yield finding(
                "NG37",
                "error",
                node,
                f"alias {target} pastes capture ${m.group(1)} of {loc.args[1]}, which can "
                "start with '..' not after a '/'",
                "a request such as /images../secret makes nginx read a file outside the "
                "aliased directory",
                "anchor the capture right after a '/' in both the regex and the alias "
                "(location ~ ^/images/(.*)$ { alias /data/images/$1; }), or exclude '.'",
            )


def _sinks(node: Node) -> list[str]:
    """The argument of a directive that ends up in a header or a request line."""
    args, name = node.args, node.name
    if name == "return":
        if len(args) == 1 and args[0].startswith(("http://", "https://", "$scheme")):
            return [args[0]]
        if len(args) == 2 and args[0].lstrip("0") in ("301", "302", "303", "307", "308"):
            return [args[1]]
        return []
    if name == "proxy_pass":
        return args[:1]
    return args[1:2]


@rule("NG38", "http-splitting", gixy=("http_splitting",))
def http_splitting(ctx: Ctx) -> Iterator[Finding]:
    for name in ("add_header", "proxy_set_header", "return", "rewrite", "proxy_pass"):
        for node in ctx.find(name):
            where = Where(ctx, node.chain)
            if name == "rewrite" and node.args:  # nginx escapes its own captures
                where = Where(ctx, node.chain, (node.args[0], False, "$uri"), escaped=True)
            # Towards the upstream only LF ends a line; in a response CR does too.
            bad = ("\n",) if name.startswith("proxy_") else ("\n", "\r")
            for text in _sinks(node):
                risky = [
                    p for p in parts(where.expand(text)) if any(c in p.value.chars for c in bad)
                ]
                if not risky:
                    continue
                var = risky[0].name
                yield finding(
                    "NG38",
                    "error",
                    node,
                    f"${var} can contain a line break and goes into "
                    f"{name} {' '.join(node.args)[:60]}",
                    "$uri, $document_uri and regex captures of them are URL-decoded, so "
                    "%0d%0a in a request becomes a real line break: the client adds headers "
                    "or a body of its choice (response splitting / header injection)",
                    "use $request_uri (raw, never decoded), or capture with [^\\r\\n] instead of "
                    "'.' or negated classes",
                )
                break


def _host_parts(template: list[str | Part]) -> list[Part]:
    """Variables that land in the scheme or host of a URL template."""
    found: list[Part] = []
    in_host = False
    for piece in template:
        if isinstance(piece, str):
            if not in_host and "://" in piece:
                in_host = True
                piece = piece.split("://", 1)[1]
            if in_host and any(c in piece for c in "/?#"):
                return found
            continue
        if piece.value.slash_first:
            return found
        found.append(piece)
    return found


def _answers_any_host(ctx: Ctx, node: Node) -> bool:
    """Whether the server around ``node`` can see a Host header the client made up: it is the
    default server of one of its sockets (nginx's choice when no name matches), or one of its
    names is a wildcard, a regex or the catch-all ``_``. Elsewhere ``$host`` is one of its own
    names."""
    server = next((lvl for lvl in reversed(node.chain) if lvl["directive"] == "server"), None)
    if server is None:
        return True
    names = [a for s in own(server, "server_name") for a in s["args"]]
    if not names or any(n in ("_", "") or "*" in n or n.startswith(("~", ".")) for n in names):
        return True
    return any(ctx.default_server(pairs).stmt is server for pairs in ctx.sockets().values())


@rule("NG39", "ssrf", gixy=("ssrf",))
def ssrf(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("proxy_pass"):
        loc = _location(node)
        if not node.args or "$" not in node.args[0]:
            continue
        if loc is not None and own(loc.stmt, "internal"):
            continue  # only nginx itself can send requests here
        any_host = _answers_any_host(ctx, node)
        for template in Where(ctx, node.chain).expand(node.args[0]):
            risky = [
                p
                for p in _host_parts(template)
                if (p.value.client or (p.name == "host" and any_host)) and "." in p.value.chars
            ]
            if risky:
                yield finding(
                    "NG39",
                    "error",
                    node,
                    f"proxy_pass {node.args[0]}: the client chooses the host through "
                    f"${risky[0].name}",
                    "nginx then connects wherever the request says: internal services, "
                    "cloud metadata endpoints, other sites (server-side request forgery)",
                    "proxy to fixed upstreams; map client input to a list of known backends "
                    "with a map that has a safe default, or mark the location 'internal'",
                )
                break


_ACCESS_BLOCKS = ("http", "server", "location", "limit_except")


def _access_blocks(ctx: Ctx) -> Iterator[Node]:
    yield from (n for n in ctx.nodes if n.name in _ACCESS_BLOCKS and "block" in n.stmt)


@rule("NG40", "allow-without-deny", gixy=("allow_without_deny",))
def allow_without_deny(ctx: Ctx) -> Iterator[Finding]:
    for node in _access_blocks(ctx):
        allows = own(node.stmt, "allow")
        if allows and not any(s["args"][:1] == ["all"] for s in own(node.stmt, "deny")):
            yield finding(
                "NG40",
                "error",
                Node(allows[0], scope(node)),
                f"allow {' '.join(allows[0]['args'])} without 'deny all' in the same block",
                "nginx allows whatever no rule denies, so this restricts nothing; a 'deny all' "
                "in an outer block does not help, since a block with its own rules replaces "
                "the outer ones",
                "add 'deny all;' after the allow lines in this block",
            )


@rule("NG41", "return-bypasses-allow-deny", gixy=("return_bypasses_allow_deny",))
def return_bypasses_allow_deny(ctx: Ctx) -> Iterator[Finding]:
    for node in _access_blocks(ctx):
        rules = [s for s in node.stmt["block"] if s["directive"] in ("allow", "deny")]
        if not rules:
            continue
        returns = own(node.stmt, "return") + [
            r for i in own(node.stmt, "if") for r in own(i, "return")
        ]  # fmt: skip
        if returns:
            yield finding(
                "NG41",
                "warning",
                Node(rules[0], scope(node)),
                f"return (line {returns[0].get('line')}) answers before these access rules run",
                "return belongs to the rewrite phase, which runs before the access phase: "
                "every client gets this answer, denied or not",
                "move the return into a nested location, or use try_files/proxy_pass here",
            )


@rule("NG42", "valid-referers-none", gixy=("valid_referers",))
def valid_referers_none(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("valid_referers"):
        if "none" in node.args:
            yield finding(
                "NG42",
                "warning",
                node,
                "valid_referers lists 'none': requests without a Referer pass",
                "any client can drop the Referer header (and many privacy settings do), so the "
                "check stops no one who wants the resource",
                "remove 'none' where the check protects something; keep it only for hotlink "
                "protection where direct visits are fine",
            )


@rule("NG44", "multiline-header", gixy=("add_header_multiline",))
def multiline_header(ctx: Ctx) -> Iterator[Finding]:
    for name in ("add_header", "more_set_headers", "more_set_input_headers"):
        for node in ctx.find(name):
            if any("\n" in a for a in node.args):
                yield finding(
                    "NG44",
                    "warning",
                    node,
                    f"{name} value spans several lines",
                    "the line breaks go out inside the header (obsolete line folding): "
                    "browsers and proxies reject or misread it",
                    "write the value on one line",
                )
