"""What an nginx variable can hold at one place in a config.

Two questions need it: can the value carry CR or LF into a header or a request line
(response splitting), and does the client choose it (a proxy target the client picks is
SSRF). A value is followed through ``set``, ``map`` (including the captures of a map's regex
keys) and regex captures of the enclosing ``location`` or ``if``, down to nginx's own
variables, whose contents are known (``$uri`` is decoded, so ``%0A`` becomes a newline;
``$request_uri`` is raw and cannot hold one).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import islice

from . import regex
from .tree import VARIABLE, Ctx, Stmt, own

ALL = regex.PROBE
NO_CRLF = ALL - {"\r", "\n"}
RAW = NO_CRLF - {" ", "\t"}
HOST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_:[]")
MAX_DEPTH = 6
MAX_ALTERNATIVES = 16


@dataclass(frozen=True)
class Value:
    chars: frozenset[str]  # characters it can contain
    client: bool  # the client chooses (part of) it
    slash_first: bool = False  # always starts with '/': a path, never a host


SAFE = Value(frozenset(), False)  # nginx-made values: addresses, numbers, ids, and unknowns

BUILTIN = {
    "uri": Value(ALL, True, True),
    "document_uri": Value(ALL, True, True),
    "request_uri": Value(RAW, True, True),
    "args": Value(RAW, True),
    "query_string": Value(RAW, True),
    "request": Value(NO_CRLF, True),
    "request_body": Value(ALL, True),
    "remote_user": Value(ALL, True),  # decoded from Basic auth
    "request_filename": Value(ALL, True),
    "fastcgi_path_info": Value(ALL, True),
    "fastcgi_script_name": Value(ALL, True, True),
    "host": Value(HOST, False),  # nginx validates it; in a named server it is a known name
}
BUILTIN_PREFIXES = {
    "arg_": Value(RAW, True),
    "http_": Value(NO_CRLF, True),
    "cookie_": Value(RAW, True),
}


def builtin(name: str) -> Value:
    if name in BUILTIN:
        return BUILTIN[name]
    for prefix, value in BUILTIN_PREFIXES.items():
        if name.startswith(prefix):
            return value
    return SAFE


@dataclass(frozen=True)
class Part:
    """A variable nginx fills in, with what it can hold here."""

    name: str
    value: Value


Template = list[str | Part]


@dataclass
class Where:
    """A place in the config: the blocks around it, and the regex whose captures $1… name
    (a map key or a rewrite; else the enclosing if/location)."""

    ctx: Ctx
    chain: list[Stmt]
    regex: tuple[str, bool, str] | None = None  # (pattern, case-insensitive, subject)
    escaped: bool = False  # nginx escapes these captures (a rewrite's redirect target)
    _seen: frozenset[str] = field(default_factory=frozenset)

    def expand(self, text: str, depth: int = 0) -> list[Template]:
        """`text` with every user variable replaced by what it can be (a few alternatives)."""
        out: list[Template] = [[]]
        pos = 0
        for m in VARIABLE.finditer(text):
            literal = text[pos : m.start()]
            pos = m.end()
            if m.group(0).startswith("${") and text.startswith("}", pos):
                pos += 1
            options = self.resolve(m.group(1), depth)
            out = [t + [literal] + o for t in out for o in options][:MAX_ALTERNATIVES]
        return [t + [text[pos:]] for t in out]

    def resolve(self, name: str, depth: int) -> list[Template]:
        captured = self.capture(name)
        if captured is not None:
            return [[Part(name, captured)]]
        if depth >= MAX_DEPTH or name in self._seen:
            return [[Part(name, SAFE)]]
        inner = Where(self.ctx, self.chain, self.regex, self.escaped, self._seen | {name})
        found: list[Template] = []
        for level in [self.ctx.root, *self.chain]:
            for s in own(level, "set"):
                if len(s["args"]) > 1 and s["args"][0] in (f"${name}", f"${{{name}}}"):
                    found += inner.expand(s["args"][1], depth + 1)
        block = self.ctx.maps().get(name)
        if block is not None:
            found += self._map_values(block.stmt, depth + 1)
        if not found:
            return [[Part(name, builtin(name))]]
        return list(islice(found, MAX_ALTERNATIVES))

    def _map_values(self, block: Stmt, depth: int) -> list[Template]:
        subject = block["args"][0] if block["args"] else ""
        found: list[Template] = []
        for entry in block.get("block", []):
            key, args = entry["directive"], entry["args"]
            if key in ("#", "hostnames", "volatile", "include") or not args:
                continue
            pattern = None
            if key.startswith("~"):
                icase = key.startswith("~*")
                pattern = (key[2:] if icase else key[1:], icase, subject)
            where = Where(self.ctx, [], pattern, False, self._seen)
            found += where.expand(args[0], depth)
        return found

    def capture(self, name: str) -> Value | None:
        """$1…$9 or a named capture, from the regex that set it here; None if not one."""
        if name in self._seen:
            return None
        sources: list[tuple[str, bool, str]] = []
        if self.regex is not None:
            sources.append(self.regex)
        for level in reversed(self.chain):
            args = level.get("args", [])
            if level["directive"] == "if" and len(args) == 3 and args[1] in ("~", "~*"):
                sources.append((args[2], args[1] == "~*", args[0]))
            elif level["directive"] == "location" and len(args) == 2 and args[0] in ("~", "~*"):
                sources.append((args[1], args[0] == "~*", "$uri"))
        for i, (pattern, icase, subject) in enumerate(sources):
            group = regex.groups(pattern, icase).get(name)
            if group is None:
                if name.isdigit():
                    return SAFE  # the innermost regex sets $1…$9; one it lacks is empty
                continue
            if i == 0 and self.regex is not None and self.escaped:
                return SAFE
            subject_where = Where(self.ctx, self.chain, None, False, self._seen | {name})
            parts = [
                p for t in subject_where.expand(subject, MAX_DEPTH - 1) for p in t
                if isinstance(p, Part)
            ]  # fmt: skip
            chars = frozenset().union(*(p.value.chars for p in parts)) if parts else frozenset()
            client = any(p.value.client for p in parts)
            return Value(group.chars & chars, client, group.starts_slash)
        return None


def parts(templates: list[Template]) -> list[Part]:
    return [p for t in templates for p in t if isinstance(p, Part)]
