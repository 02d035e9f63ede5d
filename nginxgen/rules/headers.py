"""Lint rules on response and proxy headers: inheritance, the security set, CSP, caching."""

from __future__ import annotations

import re
from collections.abc import Iterator

from ..tree import Ctx, Finding, dropped, effective, finding, own, scope, seconds
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


@rule("NG01", "add-header-inheritance")
def add_header_inheritance(ctx: Ctx) -> Iterator[Finding]:
    for node in ctx.nodes:
        if node.name not in ("server", "location", "if") or "block" not in node.stmt:
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


@rule("NG14", "missing-security-headers")
def missing_security_headers(ctx: Ctx) -> Iterator[Finding]:
    required = {
        "strict-transport-security": "Strict-Transport-Security (HSTS)",
        "x-content-type-options": "X-Content-Type-Options",
        "referrer-policy": "Referrer-Policy",
    }
    for node in ctx.tls_servers():
        headers = effective(scope(node), "add_header", ctx.root)
        names = {s["args"][0].lower(): s for s in headers if s["args"]}
        missing = [label for key, label in required.items() if key not in names]
        if not {"content-security-policy", "content-security-policy-report-only"} & set(names):
            missing.append("Content-Security-Policy")
        if "x-frame-options" not in names:
            missing.append("X-Frame-Options")
        hsts = names.get("strict-transport-security")
        if hsts and len(hsts["args"]) > 1:
            m = re.search(r"max-age=(\d+)", hsts["args"][1])
            if not m or int(m.group(1)) < 31536000:
                missing.append("HSTS max-age of at least 31536000")
        for what in missing:
            sev = "error" if what.startswith("Strict") else "warning"
            yield finding(
                "NG14",
                sev,
                node,
                f"TLS server is missing {what}",
                "without HSTS the first request can be downgraded to HTTP; the other headers "
                "are the baseline against sniffing, framing and referrer leaks",
                "add_header Strict-Transport-Security 'max-age=63072000; includeSubDomains' "
                "always; (and the rest of the set, each with 'always')",
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
