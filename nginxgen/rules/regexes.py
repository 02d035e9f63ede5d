"""Rules on the regexes in a config: Origin/Referer checks a stranger can pass, regexes that
backtrack without end (ReDoS), and location regexes with no anchor."""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from .. import regex
from ..tree import Ctx, Finding, Node, finding, location_regex, scope
from . import rule

CHECKED_HEADERS = {
    "$http_origin": "Origin",
    "$http_referer": "Referer",
    "$http_referrer": "Referer",
}
# What an attacker can put where the regex has a wildcard, or around it.
ATTACK_FILLS = (
    "evil.test",
    ".evil.test",
    "evil.test/",
    ".evil.test/",
    "evil.test?",
    "evil.test#",
    "https://evil.test/",
    "https://evil.test/?",
    "evil-",
    "x",
)
ATTACK_PREFIXES = ("https://evil.test/?", "https://evil.test/", "https://evil.test.")
ATTACK_SUFFIXES = (".evil.test", ".evil.test/", "@evil.test/")
_HOSTNAME = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")


def _registrable(host: str) -> str:
    labels = host.lower().strip(".").split(".")
    return ".".join(labels[-2:])


def _host(url: str) -> str | None:
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https"):
        return None
    return parts.hostname


def origin_weakness(pattern: str, icase: bool, header: str) -> str | None:
    """How a stranger passes this Origin/Referer check, or None."""
    rx = regex.compiled(pattern, icase)
    if rx is None:
        return None
    plain = [c for c in regex.examples(pattern, icase) if rx.search(c)]
    if not plain:
        return None
    if not any("://" in c for c in plain):
        return f"it accepts values with no scheme://host, such as '{plain[0]}'"
    urls = [c for c in plain if "://" in c]
    if header == "Origin":
        with_path = [c for c in urls if urlsplit(c).path]
        if with_path:
            return f"an Origin never has a path, so '{with_path[0]}' never comes"
    hosts = [_host(c) for c in urls]
    bad = [c for c, h in zip(urls, hosts, strict=True) if not h or not _HOSTNAME.fullmatch(h)]
    if bad:
        return f"it accepts a malformed value such as '{bad[0]}'"
    trusted = {_registrable(h) for h in hosts if h}
    attacks = list(regex.examples(pattern, icase, ATTACK_FILLS))
    attacks += [p + c for p in ATTACK_PREFIXES for c in plain]
    attacks += [c + s for c in plain for s in ATTACK_SUFFIXES]
    for attack in sorted(set(attacks), key=lambda a: ("evil" not in a, len(a))):
        if not rx.search(attack):
            continue
        host = _host(attack)
        if host is None or _registrable(host) not in trusted:
            return f"it also accepts '{attack}'"
    return None


def _origin_checks(ctx: Ctx) -> Iterator[tuple[Node, str, str, bool]]:
    """(node, variable, regex, case-insensitive) for each regex test of Origin/Referer."""
    for node in ctx.find("if"):
        a = node.args
        if len(a) == 3 and a[0] in CHECKED_HEADERS and a[1] in ("~", "~*", "!~", "!~*"):
            yield node, a[0], a[2], a[1].endswith("*")
    for node in ctx.find("map"):
        if node.args and node.args[0] in CHECKED_HEADERS:
            for entry in node.stmt.get("block", []):
                key = entry["directive"]
                if key.startswith("~"):
                    icase = key.startswith("~*")
                    yield Node(entry, scope(node)), node.args[0], key[2 if icase else 1 :], icase


@rule("NG43", "weak-origin-check", gixy=("origins",))
def weak_origin_check(ctx: Ctx) -> Iterator[Finding]:
    for node, var, pattern, icase in _origin_checks(ctx):
        header = CHECKED_HEADERS[var]
        if var == "$http_referrer":
            problem = "the header is spelt Referer: $http_referrer is always empty"
        else:
            problem = origin_weakness(pattern, icase, header)
        if problem:
            yield finding(
                "NG43",
                "warning",
                node,
                f"{header} check {pattern!r}: {problem}",
                f"a site that trusts this {header} check (CORS, CSRF, hotlinking) can be "
                "passed by a host the attacker owns",
                "anchor both ends and escape the dots: ^https://(www\\.)?example\\.com$ "
                "(Referer: ^https://example\\.com/)",
            )


def _regexes(ctx: Ctx) -> Iterator[tuple[Node, str, bool]]:
    for node in ctx.find("location"):
        found = location_regex(node)
        if found:
            yield node, *found
    for node in ctx.find("if"):
        if len(node.args) == 3 and node.args[1] in ("~", "~*", "!~", "!~*"):
            yield node, node.args[2], node.args[1].endswith("*")
    for node in ctx.find("rewrite"):
        if node.args:
            yield node, node.args[0], False
    for node in ctx.find("server_name"):
        for name in node.args:
            if name.startswith("~"):
                yield node, name[1:], False
    for node in ctx.find("map"):
        for entry in node.stmt.get("block", []):
            key = entry["directive"]
            if key.startswith("~"):
                icase = key.startswith("~*")
                yield Node(entry, scope(node)), key[2 if icase else 1 :], icase


@rule("NG46", "regex-redos", gixy=("regex_redos",))
def regex_redos(ctx: Ctx) -> Iterator[Finding]:
    for node, pattern, icase in _regexes(ctx):
        problem = regex.redos(pattern, icase)
        if problem:
            yield finding(
                "NG46",
                "warning",
                node,
                f"regex {pattern!r} can backtrack for a very long time: {problem}",
                "PCRE tries every way to split a long non-matching input between the "
                "quantifiers, so one crafted URL or header can burn seconds of CPU",
                "make the parts exclusive (a separator the quantifier cannot match, e.g. "
                "([^/]+/)+), or drop the outer quantifier",
            )


@rule("NG45", "unanchored-regex", gixy=("unanchored_regex",))
def unanchored_regex(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        found = location_regex(node)
        if not found:
            continue
        pattern = found[0]
        if pattern.startswith("^") or pattern.endswith("$") or _refuses(node):
            continue  # a location that only refuses is meant to match anywhere (/\. dotfiles)
        yield finding(
            "NG45",
            "info",
            node,
            f"location regex '{pattern}' has neither ^ nor $",
            "it matches anywhere in the URI: ~ \\.php also takes /x.php.png and /a.php/b",
            "anchor it where the match must be (^ for a prefix, $ for a suffix: \\.php$), "
            "unless matching anywhere is the point",
        )


def _refuses(location: Node) -> bool:
    """The location only denies or answers an error: matching more is safe."""
    body = [s for s in location.stmt.get("block", []) if s["directive"] != "#"]
    if not body:
        return False
    for s in body:
        if s["directive"] == "deny" and s["args"] == ["all"]:
            continue
        if s["directive"] in ("access_log", "log_not_found"):
            continue
        if s["directive"] == "return" and s["args"] and s["args"][0] in ("403", "404", "444"):
            continue
        return False
    return True
