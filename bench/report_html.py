"""How long ``qwengw report --html`` takes on a large audit log, and how much memory.

Writes a fake audit log (tests/fakes/audit_log.py: the gateway's own line format, 8 days of
traffic) once, then runs the real CLI in a child process, the text report and the HTML page,
and prints wall time, CPU time and peak RSS of each.

Run from the repo root: ``python -m bench.report_html [--lines 1000000] [--log PATH]``.
The target on a 2-core box: 1,000,000 lines (~350 MB) in under 20 s and under 300 MB.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

from tests.fakes.audit_log import write


def run(args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of one child process."""
    t0 = time.perf_counter()
    quiet = [(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]  # the report itself
    argv = [sys.executable, "-m", "qwengw.cli", *args]
    pid = os.posix_spawn(sys.executable, argv, os.environ, file_actions=quiet)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"qwengw {' '.join(args)} failed")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--log", help="audit log to use (made if missing)")
    args = ap.parse_args()
    log = args.log or os.path.join(tempfile.gettempdir(), f"qwengw-bench-{args.lines}.log")
    if not os.path.exists(log):
        t0 = time.perf_counter()
        write(log, args.lines, datetime.now(UTC) - timedelta(minutes=1))
        print(f"wrote {log} in {time.perf_counter() - t0:.1f} s")
    size = os.path.getsize(log) / 2**20
    print(f"audit log: {args.lines:,} lines, {size:,.0f} MiB, {os.cpu_count()} cores")
    out = os.path.join(tempfile.gettempdir(), "qwengw-bench-report.html")
    print(f"{'run':<34} {'wall s':>7} {'cpu s':>7} {'peak MiB':>9}")
    for name, cli in [
        ("report --since 8d (text)", ["report", log, "--since", "8d"]),
        ("report --since 8d --html", ["report", log, "--since", "8d", "--html", out]),
        ("report --since 24h --html", ["report", log, "--since", "24h", "--html", out]),
    ]:
        wall, cpu, rss = run(cli)
        print(f"{name:<34} {wall:>7.1f} {cpu:>7.1f} {rss:>9.0f}")
    print(f"page: {out} ({os.path.getsize(out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
