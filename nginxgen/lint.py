"""Lint any nginx config (a site snippet or a whole nginx.conf) parsed with crossplane.

This module is the engine: parsing, the ``Finding`` type, the tree and inheritance helpers,
the ``RULES`` registry and ``lint_file``/``lint_text``. The rules are small functions in
``rules_headers``, ``rules_proxy``, ``rules_server`` and ``rules_tls``; each gets a ``Ctx``
with the parsed tree and yields ``Finding``s; nothing raises on the first problem.
A file may silence a rule with a comment ``# nginxgen-lint: disable=NG30,NG29``.
Rule ids, reasons and fixes are documented in docs/nginx.md.
"""

from __future__ import annotations

import ipaddress
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import crossplane

from . import build as _build  # noqa: F401  (extends crossplane's directive table)
from .model import GatewaySettings

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

    def tls_servers(self) -> Iterator[Node]:
        return (n for n in self.servers() if is_tls_server(n.stmt))

    def plain_servers(self) -> Iterator[Node]:
        """Servers that listen without ssl/quic (a server with no listen is left out)."""
        return (n for n in self.servers() if own(n.stmt, "listen") and not is_tls_server(n.stmt))

    def api_locations(self) -> Iterator[Node]:
        """Locations under /v1 that proxy (the streaming API)."""
        return (
            n
            for n in self.find("location")
            if is_api_location(n) and effective(scope(n), "proxy_pass")
        )

    def upstreams(self) -> dict[str, Stmt]:
        return {n.args[0]: n.stmt for n in self.find("upstream") if n.args}

    def sockets(self) -> dict[str, list[tuple[Node, Stmt]]]:
        """Listen socket → (server, listen) pairs in config order, as nginx groups them."""
        found: dict[str, list[tuple[Node, Stmt]]] = {}
        for server in self.servers():
            for listen in own(server.stmt, "listen"):
                if listen["args"]:
                    found.setdefault(listen_socket(listen["args"][0]), []).append((server, listen))
        return found

    def default_server(self, pairs: list[tuple[Node, Stmt]]) -> Node:
        """The server nginx uses on a socket before it knows the name: the marked one, or the
        first."""
        marked = [server for server, listen in pairs if is_default_listen(listen)]
        return (marked or [pairs[0][0]])[0]


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


def setting(levels: list[Stmt], name: str, root: list[Stmt] | None = None) -> str | None:
    """First argument of the effective scalar directive `name`, or None when it is unset."""
    found = effective(levels, name, root)
    return found[-1]["args"][0] if found else None


def dropped(node: Node, name: str, root: list[Stmt]) -> set[str]:
    """Keys of an array directive (add_header, proxy_set_header) that this block's own copies
    fail to repeat from the level it would otherwise inherit from: nginx drops them."""
    mine = own(node.stmt, name)
    if not mine:
        return set()
    parent = effective(node.chain, name, root)
    return {s["args"][0].lower() for s in parent if s["args"]} - {
        s["args"][0].lower() for s in mine if s["args"]
    }


def scope(node: Node) -> list[Stmt]:
    return [*node.chain, node.stmt]


def loc(node: Node) -> tuple[str, int]:
    return node.stmt.get("file", "?"), int(node.stmt.get("line") or 0)


def is_default_listen(listen: Stmt) -> bool:
    return any(a in ("default_server", "default") for a in listen["args"][1:])


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


def listen_socket(address: str) -> str:
    """A listen address as nginx keys its sockets: '80', '*:80' → '0.0.0.0:80'."""
    if address.startswith("unix:"):
        return address
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            pass
        return f"[{host}]:{port.lstrip(':') or '80'}"
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = ("", address) if address.isdigit() else (address, "80")
    return f"{'0.0.0.0' if host in ('', '*') else host}:{port}"


_PROXY_URL = re.compile(r"^(https?)://([^/]+)(/.*)?$")


def proxy_url(proxy_pass: Stmt) -> re.Match[str] | None:
    """A proxy_pass target split into (scheme, host[:port], URI part); None for unix: etc."""
    return _PROXY_URL.match(proxy_pass["args"][0]) if proxy_pass["args"] else None


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
    return replace(f, file=name)


# The rule modules register themselves in RULES on import; they import this module's helpers,
# so they are loaded last.
from . import rules_headers, rules_proxy, rules_server, rules_tls  # noqa: E402, F401
