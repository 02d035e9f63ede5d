"""Summarise py-spy ``--format raw`` (collapsed stacks) files: where the busy time goes.

Run alone on files from ``py-spy record -f raw``: ``python -m bench.profile_summary FILE...``.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

# (label, patterns matched against any frame of a sample): inclusive shares, so they overlap.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    (
        "upstream hop: request + response reads (qwengw/upstream.py, http1.py, llhttp)",
        ("qwengw/upstream.py", "qwengw/http1.py", "geventhttpclient/"),
    ),
    ("gunicorn: HTTP parsing and response writing", ("gunicorn/http/",)),
    ("Flask/Werkzeug: request context, routing, Response", ("flask/", "werkzeug/")),
    ("rate + concurrency limits (qwengw/ratelimit.py, limits)", ("qwengw/ratelimit.py", "limits/")),
    ("Prometheus metrics (multiprocess mmap files)", ("prometheus_client/", "qwengw/metrics.py")),
    ("audit line (qwengw/audit.py)", ("qwengw/audit.py",)),
    ("auth + allowlist (qwengw/auth.py, allowlist.py)", ("qwengw/auth.py", "qwengw/allowlist.py")),
    (
        "client-disconnect watcher (qwengw/disconnect.py)",
        ("qwengw/disconnect.py",),
    ),
    ("OpenAI⇄Ollama translation (qwengw/translate/)", ("qwengw/translate/",)),
    ("json encode/decode (any caller)", ("json/",)),
    ("ids (request and completion ids)", ("uuid.py",)),
    ("gevent socket calls (send/recv wrappers)", ("gevent/_socket3.py", "gevent/_socketcommon.py")),
]

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def read_raw(paths: list[Path]) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if stack and count.isdigit():
                stacks[tuple(stack.split(";"))] += int(count)
    return stacks


def short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/main/", "/scratch/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({file})"


def summarise(paths: list[Path], rate: int = 250, seconds: float = 9.0) -> dict[str, Any]:
    """Busy share, inclusive categories, and top functions by own (leaf) time."""
    stacks = read_raw(paths)
    total = sum(stacks.values())
    cats: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    for stack, n in stacks.items():
        joined = ";".join(stack)
        for label, patterns in CATEGORIES:
            if any(p in joined for p in patterns):
                cats[label] += n
        leaf[short(stack[-1])] += n
    possible = rate * seconds * max(1, len(paths))
    return {
        "samples": total,
        "busy_share": min(1.0, total / possible) if possible else 0.0,
        "categories": [(label, cats[label] / total) for label, _ in CATEGORIES if total],
        "top_self": [(name, n / total) for name, n in leaf.most_common(15)] if total else [],
    }


def main(argv: list[str]) -> int:
    s = summarise([Path(a) for a in argv])
    print(f"{s['samples']} samples")
    for label, share in s["categories"]:
        print(f"{share * 100:5.1f}%  {label}")
    print()
    for name, share in s["top_self"]:
        print(f"{share * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
