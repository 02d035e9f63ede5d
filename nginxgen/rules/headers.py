"""Lint rules on response and proxy headers: inheritance, the security set, CSP, caching."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..tree import Ctx, Finding, Stmt, dropped, effective, finding, own, scope, seconds, setting
from . import rule

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


@rule("NG01", "add-header-inheritance", replaces=("add_header_redefinition",))
def add_header_inheritance(ctx: Ctx) -> Iterator[Finding]:
    merge = ctx.nginx_version >= (1, 29, 3)  # add_header_inherit merge keeps the outer ones
    for node in ctx.nodes:
        if node.name not in ("server", "location", "if") or "block" not in node.stmt:
            continue
        if merge and setting(scope(node), "add_header_inherit", ctx.root) == "merge":
            continue
        lost = dropped(node, "add_header", ctx.root)
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


@rule("NG02", "proxy-set-header-inheritance")
def proxy_set_header_inheritance(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.find("location"):
        lost = dropped(node, "proxy_set_header", ctx.root)
        if lost:
            yield finding(
                "NG02",
                "warning",
                node,
                f"proxy_set_header here drops inherited: {', '.join(sorted(lost))}",
                "like add_header, one proxy_set_header at a level discards all inherited ones",
                "repeat the full proxy_set_header set in this location, or set them at one level",
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


# Header → (what is missing, what its absence costs, the fix).
REQUIRED_HEADERS = {
    "strict-transport-security": (
        "Strict-Transport-Security (HSTS)",
        "without HSTS a browser's first plain-HTTP request can be downgraded and read",
        "add_header Strict-Transport-Security 'max-age=63072000; includeSubDomains' always;",
    ),
    "content-security-policy": (
        "Content-Security-Policy",
        "without a CSP any injected script (model output rendered as HTML, a bad "
        "dependency) runs with the page's rights",
        "add_header Content-Security-Policy \"default-src 'self'; object-src 'none'; "
        "base-uri 'self'; frame-ancestors 'none'\" always; (start with -Report-Only)",
    ),
    "x-content-type-options": (
        "X-Content-Type-Options",
        "without nosniff a browser may run an upload or an API answer as HTML or script",
        "add_header X-Content-Type-Options nosniff always;",
    ),
    "x-frame-options": (
        "X-Frame-Options (or CSP frame-ancestors)",
        "other sites can frame the page and trick users into clicks (clickjacking)",
        "add_header X-Frame-Options DENY always; (or frame-ancestors in the CSP)",
    ),
    "referrer-policy": (
        "Referrer-Policy",
        "full URLs, with the ids in them, go to every site the page links to",
        "add_header Referrer-Policy strict-origin-when-cross-origin always;",
    ),
}


def _answers_only(server: Stmt) -> str | None:
    """'closed' for servers that refuse every request, 'redirect' for redirect-only ones."""
    if setting([server], "ssl_reject_handshake") == "on":
        return "closed"
    returns = own(server, "return")
    codes = [r["args"][0] for r in returns if r["args"]]
    if not codes:
        locations = own(server, "location")
        codes = [r["args"][0] for loc in locations for r in own(loc, "return") if r["args"]]
        if not locations or len(codes) < len(locations):
            return None
    if all(c.isdigit() and int(c) >= 400 for c in codes):
        return "closed"
    if all(c in ("301", "302", "303", "307", "308") for c in codes):
        return "redirect"
    return None


@rule("NG14", "missing-security-headers", replaces=("hsts_header",))
def missing_security_headers(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.tls_servers():
        kind = _answers_only(node.stmt)
        if kind == "closed":
            continue  # 444 catch-alls and rejected handshakes send no page
        headers = effective(scope(node), "add_header", ctx.root)
        names = {s["args"][0].lower(): s for s in headers if s["args"]}
        wanted = ["strict-transport-security"] if kind == "redirect" else list(REQUIRED_HEADERS)
        csp = names.get("content-security-policy") or names.get(
            "content-security-policy-report-only"
        )
        missing = []
        for key in wanted:
            if key in names:
                continue
            if key == "content-security-policy" and csp:
                continue
            if key == "x-frame-options" and csp and "frame-ancestors" in " ".join(csp["args"]):
                continue
            missing.append(REQUIRED_HEADERS[key])
        hsts = names.get("strict-transport-security")
        if hsts and len(hsts["args"]) > 1:
            m = re.search(r"max-age=(\d+)", hsts["args"][1])
            if not m or int(m.group(1)) < 31536000:
                missing.append(
                    (
                        "an HSTS max-age of at least 31536000 (one year)",
                        "a short max-age lapses between visits, so the downgrade window reopens",
                        REQUIRED_HEADERS["strict-transport-security"][2],
                    )
                )
        for what, why, fix in missing:
            yield finding(
                "NG14",
                "warning",
                node,
                f"TLS server is missing {what}" + (" (redirect-only server)" if kind else ""),
                why,
                fix,
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
        # object-src falls back to default-src; frame-ancestors and base-uri do not.
        if "object-src" not in policy and policy.get("default-src") == ["'none'"]:
            policy["object-src"] = ["'none'"]
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
