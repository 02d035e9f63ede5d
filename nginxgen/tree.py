"""A parsed nginx config as the lint rules see it, and the ``Finding`` they report.

The loader (``loader.py``) produces the statements, the engine (``lint.py``) builds one ``Ctx``
and hands it to every registered rule (``rules/``). Statements are crossplane's plain dicts
(``{"directive", "args", "block"?, "line", "file"}``); nothing here reads files.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from .model import GatewaySettings

Stmt = dict[str, Any]
SEVERITIES = ("error", "warning", "info")
# A comment with this text silences rules for a file: "# nginxgen-lint: disable=NG30,NG29".
LINT_SUPPRESS = "nginxgen-lint: disable="


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


def synthetic(directive: str, block: list[Stmt], file: str) -> Stmt:
    """A block the file is linted inside (a snippet's server or location): it takes part in
    inheritance but is never reported on."""
    return {
        "directive": directive,
        "args": [],
        "block": block,
        "line": 0,
        "file": file,
        "synthetic": True,
    }


def walk(block: list[Stmt], chain: list[Stmt]) -> Iterator[Node]:
    for stmt in block:
        if stmt["directive"] == "#":
            continue
        if not stmt.get("synthetic"):
            yield Node(stmt, chain)
        if "block" in stmt:
            yield from walk(stmt["block"], [*chain, stmt])


@dataclass
class Ctx:
    """What every rule gets. ``top`` holds the linted statements at http level (a snippet's
    are wrapped in synthetic blocks); ``env`` the http-level statements the file inherits
    from its nginx.conf (never reported on, but they count for inheritance and for the maps,
    upstreams and zones they define)."""

    top: list[Stmt]
    nginx_version: tuple[int, int, int] = (1, 22, 1)
    gateway: GatewaySettings | None = None
    env: list[Stmt] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = list(walk(self.top, []))
        self.root = Level([*self.env, *self.top])  # the http level as nginx merges it
        self._env_nodes: list[Node] | None = None
        self._by_name: dict[str, list[Node]] = {}
        for n in self.nodes:
            self._by_name.setdefault(n.name, []).append(n)

    def find(self, name: str) -> Iterator[Node]:
        return iter(self._by_name.get(name, ()))

    def defined(self, name: str) -> Iterator[Node]:
        """Statements named `name` in the linted file and in what it inherits (maps, upstreams,
        zones are global in nginx)."""
        if self._env_nodes is None:
            self._env_nodes = list(walk(self.env, []))
        yield from (n for n in self._env_nodes if n.name == name)
        yield from self.find(name)

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
        return {n.args[0]: n.stmt for n in self.defined("upstream") if n.args}

    def maps(self) -> dict[str, Node]:
        """Variable name (without $) → the map block that defines it."""
        return {n.args[1].lstrip("$"): n for n in self.defined("map") if len(n.args) > 1}

    def sockets(self) -> dict[str, list[tuple[Node, Stmt]]]:
        """Listen socket → (server, listen) pairs in config order, as nginx groups them."""
        found: dict[str, list[tuple[Node, Stmt]]] = {}
        for server in self.servers():
            for listen in own(server.stmt, "listen"):
                if listen["args"]:
                    found.setdefault(listen_socket(listen["args"]), []).append((server, listen))
        return found

    def default_server(self, pairs: list[tuple[Node, Stmt]]) -> Node:
        """The server nginx uses on a socket before it knows the name: the marked one, or the
        first."""
        marked = [server for server, listen in pairs if is_default_listen(listen)]
        return (marked or [pairs[0][0]])[0]


# ---------------------------------------------------------------- tree helpers


class Level(list[Stmt]):
    """The http level, indexed by directive name: rules look names up in it for every server
    and location, and a file with thousands of servers makes a linear scan the bottleneck."""

    def __init__(self, stmts: list[Stmt]) -> None:
        super().__init__(stmts)
        self.by_name: dict[str, list[Stmt]] = {}
        for s in stmts:
            self.by_name.setdefault(s["directive"], []).append(s)


def own(block: Stmt | list[Stmt], name: str) -> list[Stmt]:
    if isinstance(block, Level):
        return block.by_name.get(name, [])
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
    return found[-1]["args"][0] if found and found[-1]["args"] else None


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


def parent(node: Node) -> Node | None:
    return Node(node.chain[-1], node.chain[:-1]) if node.chain else None


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


def location_regex(node: Node) -> tuple[str, bool] | None:
    """(pattern, case-insensitive) of a regex location, else None."""
    if node.name == "location" and len(node.args) > 1 and node.args[0] in ("~", "~*"):
        return node.args[1], node.args[0] == "~*"
    return None


def listen_socket(args: list[str]) -> str:
    """A listen directive as nginx keys its sockets: '80', '*:80' → '0.0.0.0:80'; QUIC is
    UDP, so 'listen 443 quic' is a different socket from 'listen 443 ssl'."""
    address = args[0]
    udp = "/udp" if "quic" in args[1:] else ""
    if address.startswith("unix:"):
        return address + udp
    if address.startswith("["):
        host, _, port = address[1:].partition("]")
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            pass
        return f"[{host}]:{port.lstrip(':') or '80'}{udp}"
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = ("", address) if address.isdigit() else (address, "80")
    return f"{'0.0.0.0' if host in ('', '*') else host}:{port}{udp}"


class ProxyTarget(NamedTuple):
    scheme: str
    host: str  # host[:port], an upstream name, or "unix:/path.sock"
    uri: str | None  # the URI part, None when proxy_pass has none

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("unix:")


# A variable reference in an argument: $name or ${name} (the name without $).
VARIABLE = re.compile(r"\$\{?([A-Za-z0-9_]+)")

_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://(.*)$", re.I)


def proxy_url(stmt: Stmt) -> ProxyTarget | None:
    """A proxy_pass-like target split as nginx does; ``http://unix:/run/a.sock:/uri`` keeps
    the socket path out of the URI part."""
    m = _SCHEME.match(stmt["args"][0]) if stmt["args"] else None
    if not m:
        return None
    scheme, rest = m.group(1).lower(), m.group(2)
    if rest.startswith("unix:"):
        path, sep, uri = rest[5:].partition(":")
        return ProxyTarget(scheme, "unix:" + path, uri if sep else None)
    host, slash, uri = rest.partition("/")
    return ProxyTarget(scheme, host, "/" + uri if slash else None)


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


def finding(rule_id: str, sev: str, node: Node, msg: str, why: str, fix: str) -> Finding:
    file, line = loc(node)
    return Finding(rule_id, sev, file, line, msg, why, fix)
