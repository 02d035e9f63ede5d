"""gixy-ng, the maintained nginx security analyser, as a second opinion in ``nginxgen lint``.

gixy-ng installs its own crossplane fork under the same package name, so it never shares
our environment: it runs as a subprocess from its own venv. It is given the config exactly
as our loader read it, as an ``nginx -T`` style dump (every file under a
``# configuration file PATH:`` line), headed by a small wrapper in the conf prefix that puts
the file in its context. gixy then resolves includes like nginx (relative to the prefix),
and its lines are mapped back to each file. Findings become ``GX:<check>`` with our
severities (HIGH → error, MEDIUM → warning, LOW → info); checks a native rule stands for are
merged rather than repeated (``rules.Rule.gixy`` / ``replaces``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .loader import Loaded
from .rules import Rule
from .tree import Finding

ENV = "QWENGW_GIXY"
VENV = "/opt/gixy-venv/bin/gixy"  # where scripts/test.sh and docs/nginx.md install it
WRAPPER = "nginxgen-lint-wrapper.conf"
SEVERITY = {"HIGH": "error", "MEDIUM": "warning", "LOW": "info"}
# Checks whose gixy severity overstates them for nginxgen's readers: performance advice,
# not a fault (Debian's stock site would otherwise get a warning for try_files).
CALIBRATED = {"try_files_is_evil_too": "info"}
TIMEOUT = 120

_WRAPPERS = {
    "main": "include {entry};\n",
    "http": "events {{}}\nhttp {{\ninclude {entry};\n}}\n",
    "server": "events {{}}\nhttp {{\nserver {{\ninclude {entry};\n}}\n}}\n",
    "location": "events {{}}\nhttp {{\nserver {{\nlocation / {{\ninclude {entry};\n}}\n}}\n}}\n",
}


def runnable(path: str | None) -> bool:
    return bool(path) and os.path.isfile(str(path)) and os.access(str(path), os.X_OK)


def find(option: str | None = None, environ: Mapping[str, str] = os.environ) -> str | None:
    """The gixy executable: --gixy, then $QWENGW_GIXY, then gixy on PATH, then the venv
    our install docs use."""
    for candidate in (option, environ.get(ENV), shutil.which("gixy"), VENV):
        if runnable(candidate):
            return candidate
    return None


def looked_for(option: str | None = None, environ: Mapping[str, str] = os.environ) -> str:
    """Where find() looked, for the message that says gixy-ng was not available."""
    places = [f"--gixy {option}"] if option else []
    places += [f"${ENV}" + (f"={environ[ENV]}" if environ.get(ENV) else " (unset)")]
    return ", ".join([*places, "gixy on PATH", VENV])


def dump(loaded: Loaded) -> tuple[str, dict[str, int]]:
    """The dump text, and for each file the dump line its first line landed on."""
    entry = os.path.abspath(loaded.path)
    head = f"# configuration file {loaded.conf_dir / WRAPPER}:\n"
    parts = [head + _WRAPPERS[loaded.context].format(entry=json.dumps(entry))]
    next_line = 1 + parts[0].count("\n")
    starts: dict[str, int] = {}
    for path in loaded.files:
        name = entry if path == loaded.path else str(path)
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        chunk = f"# configuration file {name}:\n{text}" + ("" if text.endswith("\n") else "\n")
        starts[name] = next_line + 1
        next_line += chunk.count("\n")
        parts.append(chunk)
    return "".join(parts), starts


def findings(
    report: list[dict[str, Any]], starts: dict[str, int], display: dict[str, str]
) -> list[Finding]:
    """gixy's JSON entries → Findings in the original files (the wrapper's are dropped)."""
    out = []
    for entry in report:
        name = entry.get("file") or ""
        if name not in starts or not entry.get("line"):
            continue
        reason = (entry.get("reason") or "").strip()
        summary = (entry.get("summary") or entry["plugin"]).strip().rstrip(".")
        out.append(
            Finding(
                f"GX:{entry['plugin']}",
                CALIBRATED.get(entry["plugin"])
                or SEVERITY.get(str(entry.get("severity")).upper(), "info"),
                display.get(name, name),
                int(entry["line"]) - starts[name] + 1,
                f"{summary}: {reason}" if reason else summary,
                (entry.get("description") or "").strip() or "reported by gixy-ng",
                f"see {entry.get('reference') or 'the gixy-ng documentation'}",
            )
        )
    return out


def run(binary: str, loaded: Loaded) -> tuple[list[Finding], str]:
    """Run gixy-ng on the loaded config → (findings, a sentence on how it went)."""
    text, starts = dump(loaded)
    entry = os.path.abspath(loaded.path)
    display = {entry: str(loaded.path)}
    with tempfile.TemporaryDirectory(prefix="nginxgen-gixy-") as tmp:
        path = Path(tmp) / "dump.conf"
        path.write_text(text, encoding="utf-8")
        try:
            proc = subprocess.run(
                [binary, "-f", "json", str(path)],
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return [], f"gixy-ng ({binary}) did not run: {exc}"
    try:
        report = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [], f"gixy-ng ({binary}) failed (exit {proc.returncode}): {last}"
    found = findings(report, starts, display)
    return found, f"gixy-ng ({binary}) ran: {len(found)} finding(s) in these files"


def merge(native: list[Finding], external: list[Finding], rules: Iterable[Rule]) -> list[Finding]:
    """Native findings plus gixy's, without gixy's where a native rule decides the class
    (``replaces``) or already reported the same place (``gixy``)."""
    rules = list(rules)
    replaced = {p for r in rules for p in r.replaces}
    by_plugin: dict[str, set[str]] = {}
    for r in rules:
        for p in r.gixy:
            by_plugin.setdefault(p, set()).add(r.id)
    at = {(f.rule, f.file, f.line) for f in native}
    kept = []
    for f in external:
        plugin = f.rule.removeprefix("GX:")
        if plugin in replaced:
            continue
        if any((rid, f.file, f.line) in at for rid in by_plugin.get(plugin, ())):
            continue
        kept.append(f)
    return sorted({f: None for f in native + kept}, key=lambda f: (f.file, f.line, f.rule))
