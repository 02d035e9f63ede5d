"""Lint any nginx config: a whole nginx.conf, a site, a server or location snippet.

The engine only wires the stages: ``loader.load`` reads the file as nginx would (includes,
context, unknown directives), every rule in the ``rules`` registry runs on one ``tree.Ctx``,
and gixy-ng's findings are merged in when it is given (``gixy.py``). Nothing raises on the
first problem. A file may silence rules with ``# nginxgen-lint: disable=NG30,NG29``. Rule
ids, reasons and fixes are documented in docs/nginx.md.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from . import gixy as _gixy
from .loader import Loaded, load
from .model import GatewaySettings
from .rules import registry
from .tree import Ctx, Finding

RULES = registry()


@dataclass(frozen=True)
class Report:
    findings: list[Finding]
    context: str  # main, http, server or location: where the file was read
    gixy: str | None = None  # how gixy-ng ran (or why not); None when it was not asked for


def check(
    loaded: Loaded,
    *,
    nginx_version: tuple[int, int, int] = (1, 22, 1),
    gateway: GatewaySettings | None = None,
) -> list[Finding]:
    """The loader's findings and every rule's, sorted by file and line, each reported once
    (a snippet included in three servers is one finding, not three)."""
    ctx = Ctx(loaded.top, nginx_version=nginx_version, gateway=gateway, env=loaded.env)
    findings = list(loaded.findings)
    for rule_id, rule in RULES.items():
        if rule_id not in loaded.suppressed:
            findings.extend(rule.fn(ctx))
    unique = {f: None for f in findings if f.rule not in loaded.suppressed}
    return sorted(unique, key=lambda f: (f.file, f.line, f.rule))


def lint(
    path: str | Path,
    *,
    nginx_version: tuple[int, int, int] = (1, 22, 1),
    gateway: GatewaySettings | None = None,
    conf_dir: str | Path | None = None,
    context: str | None = None,
    gixy: str | None = None,
) -> Report:
    """Lint one file; with `gixy` (the gixy-ng executable) its findings are merged in."""
    loaded = load(path, conf_dir=conf_dir, context=context)
    findings = check(loaded, nginx_version=nginx_version, gateway=gateway)
    if gixy is None:
        return Report(findings, loaded.context)
    external, note = _gixy.run(gixy, loaded)
    merged = _gixy.merge(findings, external, RULES.values())
    if external:
        added = len(merged) - len(findings)
        note += f", {added} added (the others repeat or are decided by nginxgen's rules)"
    return Report(merged, loaded.context, note)


def lint_file(path: str | Path, **kwargs: Any) -> list[Finding]:
    """All findings for one config file, sorted by file and line."""
    return lint(path, **kwargs).findings


def lint_text(text: str, **kwargs: Any) -> list[Finding]:
    """Lint config text (e.g. nginxgen's own output) through a temporary file."""
    with tempfile.TemporaryDirectory(prefix="nginxgen-lint-") as tmp:
        path = Path(tmp) / "site.conf"
        path.write_text(text, encoding="utf-8")
        findings = lint_file(path, **kwargs)
    return [replace(f, file="<site>") if f.file == str(path) else f for f in findings]
