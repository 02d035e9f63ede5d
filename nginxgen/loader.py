"""Read an nginx config the way nginx does, for the linter.

* ``include`` paths are relative to the conf prefix (the directory of nginx.conf), not to the
  including file: ``/etc/nginx/sites-available/x`` with ``include snippets/a.conf`` reads
  ``/etc/nginx/snippets/a.conf``. The prefix is the nearest directory at or above the file
  that holds an ``nginx.conf``, or ``--conf-dir``. Globs are expanded and sorted as nginx
  does; a glob that matches nothing is fine, a missing plain file is one finding (NG34).
* Every statement keeps the file and line it was written on (crossplane's ``combine`` mode
  misattributes them after an include), and an include cycle is a finding (NG35), not a
  ``RecursionError``.
* The file's context (main, http, server or location) is detected from its top-level
  directives, so a whole nginx.conf, a site, a server snippet and a bare location are each
  checked where nginx would read them. Each directive is then checked against nginx's table
  for that context: unknown ones (NG36, with the closest known name), and crossplane's
  context and argument checks (NG00).
* A site inherits the http-level settings of its nginx.conf (Debian's ``ssl_protocols``,
  maps and upstreams from ``conf.d/``): they are loaded as ``env``, never reported on.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

import crossplane
from crossplane.analyzer import analyze, enter_block_ctx
from crossplane.errors import NgxParserDirectiveError

from . import directives
from .tree import LINT_SUPPRESS, Finding, Stmt, synthetic

CONTEXTS: dict[str, tuple[str, ...]] = {
    "main": (),
    "http": ("http",),
    "server": ("http", "server"),
    "location": ("http", "location"),
}
# On a tie (a file of add_header lines fits http, server and location), the context nginx
# users include such files in most often wins.
PREFERENCE = ("http", "server", "location", "main")
MAX_DEPTH = 64  # include nesting nginx configs never reach; stops runaway recursion


@dataclass
class Loaded:
    path: Path
    conf_dir: Path
    context: str
    stmts: list[Stmt]  # the file's statements at its own context, includes spliced in
    top: list[Stmt]  # the http level to lint (a snippet wrapped in synthetic blocks)
    env: list[Stmt] = field(default_factory=list)  # http level inherited from nginx.conf
    findings: list[Finding] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file read, the entry first
    suppressed: set[str] = field(default_factory=set)


def find_conf_dir(path: Path) -> Path:
    """nginx's conf prefix for a file: the nearest directory at or above it with an
    nginx.conf (``/etc/nginx/sites-available/x`` → ``/etc/nginx``), else its own directory."""
    path = Path(os.path.abspath(path))
    for d in path.parents:
        if (d / "nginx.conf").is_file():
            return d
    return path.parent


def _tag(stmts: list[Stmt], file: str) -> None:
    for s in stmts:
        s["file"] = file
        if "block" in s:
            _tag(s["block"], file)


def _message(error: str) -> str:
    """crossplane's message without its ' in /path:line' tail (we report file and line)."""
    return error.split(" in /")[0].split(" in <")[0] or "unexpected end of file"


class _Reader:
    """Parses files once each and splices includes, collecting findings on the way."""

    def __init__(self, conf_dir: Path, exclude: frozenset[str] = frozenset()) -> None:
        self.conf_dir = conf_dir
        self.exclude = exclude  # real paths not to splice in (the site, when reading its env)
        self.findings: list[Finding] = []
        self.files: list[Path] = []
        self._parsed: dict[str, list[Stmt]] = {}

    def parse(self, path: Path, display: str) -> list[Stmt]:
        key = os.path.realpath(path)
        if key not in self._parsed:
            payload = crossplane.parse(
                str(path), single=True, comments=True, check_ctx=False, check_args=False
            )
            parsed = payload["config"][0]["parsed"] if payload["config"] else []
            _tag(parsed, display)
            self._parsed[key] = parsed
            self.files.append(path)
            for e in payload["errors"]:
                self._report(
                    "NG00",
                    {"file": display, "line": e.get("line")},
                    _message(str(e.get("error", ""))),
                    "crossplane could not parse this; nginx -t would fail too",
                    "fix the syntax (braces, quotes, the ';' at the end)",
                )
        return self._parsed[key]

    def expand(self, stmts: list[Stmt], stack: tuple[str, ...]) -> list[Stmt]:
        out: list[Stmt] = []
        for s in stmts:
            if s["directive"] == "include" and "block" not in s and s["args"]:
                out.extend(self._include(s, stack))
            elif "block" in s:
                out.append({**s, "block": self.expand(s["block"], stack)})
            else:
                out.append(s)
        return out

    def _include(self, stmt: Stmt, stack: tuple[str, ...]) -> list[Stmt]:
        pattern = stmt["args"][0]
        full = os.path.normpath(os.path.join(self.conf_dir, pattern))
        if glob.has_magic(full):
            paths = sorted(p for p in glob.glob(full) if os.path.isfile(p))
        elif os.path.isfile(full):
            paths = [full]
        else:
            self._report(
                "NG34",
                stmt,
                f"include {pattern}: {full} does not exist",
                "nginx -t stops with 'open() failed (2: No such file or directory)'",
                f"create the file or fix the path (relative paths start at the conf prefix "
                f"{self.conf_dir}; --conf-dir sets it)",
            )
            return []
        out: list[Stmt] = []
        for p in paths:
            real = os.path.realpath(p)
            if real in self.exclude:
                continue
            if real in stack or len(stack) >= MAX_DEPTH:
                self._report(
                    "NG35",
                    stmt,
                    f"include {pattern} includes {p} again (an include cycle)",
                    "nginx would read the file again and again until it runs out of file "
                    "descriptors or memory",
                    "remove the include that points back at a file being included",
                )
                continue
            out.extend(self.expand(self.parse(Path(p), p), (*stack, real)))
        return out

    def _report(
        self, rule_id: str, stmt: Stmt, msg: str, why: str, fix: str, severity: str = "error"
    ) -> None:
        file, line = stmt.get("file", "?"), int(stmt.get("line") or 0)
        self.findings.append(Finding(rule_id, severity, file, line, msg, why, fix))

    def check(self, stmts: list[Stmt], ctx: tuple[str, ...]) -> None:
        """nginx's own checks per directive: known at all, allowed here, right arguments."""
        for s in stmts:
            name = s["directive"]
            if name == "#":
                continue
            if not directives.known(name):
                self._unknown(s)
                continue
            try:
                analyze(s.get("file", ""), s, "{" if "block" in s else ";", ctx)
            except NgxParserDirectiveError as exc:
                self._report(
                    "NG00",
                    s,
                    _message(exc.strerror),
                    "nginx -t fails on this directive in this context",
                    "move the directive to a block that allows it, or fix its arguments",
                )
            if "block" in s and name not in directives.DATA_BLOCKS:
                self.check(s["block"], enter_block_ctx(s, ctx))

    def _unknown(self, stmt: Stmt) -> None:
        name = stmt["directive"]
        module = directives.third_party(name)
        if module:
            self._report(
                "NG36",
                stmt,
                f"{name} comes from the third-party module {module}",
                "nginx -t fails with 'unknown directive' unless that module is loaded",
                "load the module (load_module ...;) on every host that uses this file",
                severity="info",
            )
            return
        close = directives.suggest(name)
        self._report(
            "NG36",
            stmt,
            f'unknown directive "{name}"' + (f', did you mean "{close}"?' if close else ""),
            "nginx -t stops with 'unknown directive'; crossplane accepts any name",
            f"{close} ..." if close else "remove it, or load the module that provides it",
        )


def _misfits(stmts: list[Stmt], ctx: tuple[str, ...]) -> int:
    """How many directives in the tree nginx would refuse if it were read in `ctx`."""
    count = 0
    for s in stmts:
        name = s["directive"]
        if name == "#" or not directives.known(name):
            continue
        count += directives.allowed(name, ctx) is False
        if "block" in s and name not in directives.DATA_BLOCKS:
            count += _misfits(s["block"], enter_block_ctx(s, ctx))
    return count


def detect_context(stmts: list[Stmt]) -> str:
    """The context whose table allows the most top-level directives of the file; on a tie,
    the one that fits the nested blocks best (a bare ``if`` with ``add_header`` inside is a
    location snippet), then the most common place for such files."""
    names = [s["directive"] for s in stmts if s["directive"] != "#"]
    # Most directives a location body uses are also allowed in server; a file that holds
    # location blocks is a server snippet, one without them is more often a location body.
    order = PREFERENCE if "location" in names else ("http", "location", "server", "main")
    fits = {c: sum(directives.allowed(n, CONTEXTS[c]) is True for n in names) for c in order}
    best = [c for c in order if fits[c] == max(fits.values())]
    if len(best) == 1:
        return best[0]
    return min(best, key=lambda c: (_misfits(stmts, CONTEXTS[c]), order.index(c)))


def _comments(stmts: list[Stmt]) -> list[str]:
    found = []
    for s in stmts:
        if s["directive"] == "#":
            found.append(s.get("comment", ""))
        if "block" in s:
            found.extend(_comments(s["block"]))
    return found


def _suppressed(stmts: list[Stmt]) -> set[str]:
    ids: set[str] = set()
    for text in _comments(stmts):
        if LINT_SUPPRESS in text:
            listed = text.split(LINT_SUPPRESS, 1)[1].split()
            ids |= {i.strip() for i in (listed[0] if listed else "").split(",") if i.strip()}
    return ids


def _env(conf_dir: Path, entry: Path) -> list[Stmt]:
    """The http-level statements (not the servers) of the nginx.conf a site lives under."""
    main = conf_dir / "nginx.conf"
    if not main.is_file() or os.path.realpath(main) == os.path.realpath(entry):
        return []
    reader = _Reader(conf_dir, exclude=frozenset({os.path.realpath(entry)}))
    stmts = reader.expand(reader.parse(main, str(main)), (os.path.realpath(main),))
    http = [s for s in stmts if s["directive"] == "http" and "block" in s]
    return [s for s in http[0]["block"] if s["directive"] != "server"] if http else []


def load(
    path: str | Path, conf_dir: str | Path | None = None, context: str | None = None
) -> Loaded:
    """Parse `path` with its includes, in its (detected or given) context."""
    path = Path(path)
    prefix = Path(os.path.abspath(conf_dir)) if conf_dir else find_conf_dir(path)
    reader = _Reader(prefix)
    stmts = reader.expand(reader.parse(path, str(path)), (os.path.realpath(path),))
    ctx = context or detect_context(stmts)
    reader.check(stmts, CONTEXTS[ctx])
    display = str(path)
    if ctx == "main":
        http = [s for s in stmts if s["directive"] == "http" and "block" in s]
        top = http[0]["block"] if http else []
    elif ctx == "http":
        top = stmts
    elif ctx == "server":
        top = [synthetic("server", stmts, display)]
    else:
        top = [synthetic("server", [synthetic("location", stmts, display)], display)]
    env = _env(prefix, path) if ctx != "main" else []
    return Loaded(
        path=path,
        conf_dir=prefix,
        context=ctx,
        stmts=stmts,
        top=top,
        env=env,
        findings=reader.findings,
        files=reader.files,
        suppressed=_suppressed(stmts),
    )
