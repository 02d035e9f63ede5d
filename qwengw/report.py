"""``qwengw report``: summarise the JSON audit log over a recent window.

Pure functions (parse a line, pick the window, summarise, render) with the file reading and
printing at the edge, so the daily check in docs/operations.md is one command.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from .audit import is_housekeeping

_SINCE = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>s|m|h|d|w)")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
TOP_CALLERS = 10


def parse_since(value: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``1w``, ``90s`` → a timedelta; ValueError otherwise."""
    m = _SINCE.fullmatch(value.strip().lower())
    if not m or float(m.group("n")) <= 0:
        raise ValueError(f"--since {value!r}: expected a duration such as 30m, 24h or 7d")
    return timedelta(seconds=float(m.group("n")) * _UNIT_SECONDS[m.group("unit")])


def parse_time(value: Any) -> datetime | None:
    """The audit ``time`` field (ISO-8601, ``Z`` for UTC) as an aware datetime."""
    if not isinstance(value, str):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_lines(lines: Iterable[str], skipped: list[int] | None = None) -> Iterator[dict[str, Any]]:
    """Audit records from JSON lines; blank lines are ignored, malformed ones skipped (their
    line numbers are appended to ``skipped`` when given)."""
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if isinstance(rec, dict):
            rec["_time"] = parse_time(rec.get("time"))
            if rec["_time"] is not None:
                yield rec
                continue
        if skipped is not None:
            skipped.append(number)


def within(
    records: Iterable[dict[str, Any]], since: timedelta, now: datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Records whose time is in ``[now - since, now]``."""
    end = now or datetime.now(UTC)
    start = end - since
    for rec in records:
        if start <= rec["_time"] <= end:
            yield rec


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def count_tokens(table: dict[str, list[int]], key: str, rec: dict[str, Any]) -> None:
    """Add a record's token counts (Ollama's) to ``table[key]``: [requests, prompt, completion]."""
    prompt, completion = (
        as_number(rec.get("prompt_tokens")),
        as_number(rec.get("completion_tokens")),
    )
    if prompt is None and completion is None:
        return
    row = table.setdefault(key, [0, 0, 0])
    row[0] += 1
    row[1] += int(prompt or 0)
    row[2] += int(completion or 0)


def summarise(
    records: Iterable[dict[str, Any]], since: timedelta, now: datetime | None = None
) -> dict[str, Any]:
    """Counts, errors by status and code, TTFT/duration percentiles, top callers.

    Served ``/health``, ``/ready`` and ``/metrics`` requests (``audit.housekeeping``) are only
    counted apart: they would swamp the totals and the error rate."""
    end = now or datetime.now(UTC)
    total = cancelled = housekeeping = 0
    statuses: Counter[int] = Counter()
    errors: Counter[tuple[int, str]] = Counter()
    callers: Counter[str] = Counter()
    caller_errors: Counter[str] = Counter()
    ttft: list[float] = []
    duration: list[float] = []
    tokens: dict[str, list[int]] = {}  # caller → [requests, prompt, completion]
    first: datetime | None = None
    last: datetime | None = None
    for rec in within(records, since, end):
        if is_housekeeping(rec.get("path"), rec.get("status")):
            housekeeping += 1
            continue
        total += 1
        t = rec["_time"]
        first = t if first is None or t < first else first
        last = t if last is None or t > last else last
        status = rec.get("status") if isinstance(rec.get("status"), int) else 0
        statuses[status] += 1
        caller = rec.get("key_id") or (f"ip:{rec['client_ip']}" if rec.get("client_ip") else "-")
        callers[caller] += 1
        if status >= 400:
            errors[(status, rec.get("error_code") or "-")] += 1
            if status != 499:
                caller_errors[caller] += 1
        if rec.get("cancelled") is True:
            cancelled += 1
        if (v := as_number(rec.get("ttft_ms"))) is not None:
            ttft.append(v)
        if (v := as_number(rec.get("duration_ms"))) is not None:
            duration.append(v)
        count_tokens(tokens, caller, rec)
    n_errors = sum(c for s, c in statuses.items() if s >= 400)
    n_server = sum(c for s, c in statuses.items() if s >= 500)
    return {
        "window": {
            "since": fmt_duration(since),
            "start": iso_utc(end - since),
            "end": iso_utc(end),
            "first": iso_utc(first) if first else None,
            "last": iso_utc(last) if last else None,
        },
        "requests": total,
        "errors": n_errors,
        "error_rate": round(n_errors / total, 4) if total else 0.0,
        "server_errors": n_server,  # 5xx: the gateway's or Ollama's fault, not the client's
        "server_error_rate": round(n_server / total, 4) if total else 0.0,
        "cancelled": cancelled,
        "housekeeping": housekeeping,
        "by_status": {str(s): c for s, c in sorted(statuses.items())},
        "errors_by_code": [
            {"status": s, "error_code": code, "count": c}
            for (s, code), c in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
        "ttft_ms": {"count": len(ttft), "p50": percentile(ttft, 50), "p95": percentile(ttft, 95)},
        "duration_ms": {
            "count": len(duration),
            "p50": percentile(duration, 50),
            "p95": percentile(duration, 95),
        },
        "top_callers": [
            {"caller": k, "requests": c, "errors": caller_errors.get(k, 0)}
            for k, c in sorted(callers.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CALLERS]
        ],
        "tokens_by_caller": [
            {"caller": k, "prompt_tokens": p, "completion_tokens": c}
            for k, (_, p, c) in sorted(tokens.items(), key=lambda kv: (-sum(kv[1][1:]), kv[0]))[
                :TOP_CALLERS
            ]
        ],
    }


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fmt_duration(td: timedelta) -> str:
    s = int(td.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if s and s % _UNIT_SECONDS[unit] == 0:
            return f"{s // _UNIT_SECONDS[unit]}{unit}"
    return f"{s}s"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f} ms"


def render_text(summary: dict[str, Any]) -> str:
    """The human-readable report."""
    w = summary["window"]
    out = [f"qwengw audit report: last {w['since']} ({w['start']} .. {w['end']})"]
    n = summary["requests"]
    out.append(f"requests    {n}")
    if summary["housekeeping"]:
        out.append(
            f"            (and {summary['housekeeping']} /health, /ready, /metrics, not counted)"
        )
    if not n:
        out.append("(no requests in this window)")
        return "\n".join(out) + "\n"
    out.append(
        f"errors      {summary['errors']} ({summary['error_rate'] * 100:.1f}%), "
        f"cancelled {summary['cancelled']}"
    )
    out.append(
        f"5xx         {summary['server_errors']} ({summary['server_error_rate'] * 100:.1f}%: "
        "the gateway's or Ollama's; the daily check acts above 2 %)"
    )
    out.append("by status   " + ", ".join(f"{s}: {c}" for s, c in summary["by_status"].items()))
    t, d = summary["ttft_ms"], summary["duration_ms"]
    out.append(
        f"ttft        p50 {_ms(t['p50'])}, p95 {_ms(t['p95'])} ({t['count']} with a first token)"
    )
    out.append(f"duration    p50 {_ms(d['p50'])}, p95 {_ms(d['p95'])}")
    if summary["errors_by_code"]:
        out.append("")
        out.append(f"{'status':>6}  {'error_code':<32} {'count':>7}")
        for e in summary["errors_by_code"]:
            out.append(f"{e['status']:>6}  {e['error_code']:<32} {e['count']:>7}")
    out.append("")
    out.append(f"{'top callers':<32} {'requests':>8} {'errors':>7}")
    for c in summary["top_callers"]:
        out.append(f"{c['caller']:<32} {c['requests']:>8} {c['errors']:>7}")
    if summary["tokens_by_caller"]:
        out.append("")
        out.append(f"{'tokens by caller':<32} {'prompt':>10} {'completion':>10}")
        for c in summary["tokens_by_caller"]:
            out.append(f"{c['caller']:<32} {c['prompt_tokens']:>10} {c['completion_tokens']:>10}")
    return "\n".join(out) + "\n"


def main_report(
    audit_log_path: str,
    since: str,
    as_json: bool,
    out: TextIO | None = None,
    now: datetime | None = None,
    html_path: str | None = None,
) -> int:
    """CLI edge: read the file (``-`` = stdin), print the report, or write it as one HTML page
    to ``html_path``; 0 ok, 2 usage/IO error."""
    out = out or sys.stdout
    try:
        window = parse_since(since)
    except ValueError as exc:
        print(f"qwengw report: {exc}", file=sys.stderr)
        return 2
    skipped: list[int] = []
    summarise_with = summarise
    if html_path is not None:
        from .report_html import collect, render_html

        summarise_with = collect
    try:
        if audit_log_path == "-":
            summary = summarise_with(parse_lines(sys.stdin, skipped), window, now)
        else:
            with open(audit_log_path, encoding="utf-8", errors="replace") as fh:
                summary = summarise_with(parse_lines(fh, skipped), window, now)
    except OSError as exc:
        print(f"qwengw report: cannot read {audit_log_path}: {exc.strerror}", file=sys.stderr)
        return 2
    if skipped:
        print(
            f"qwengw report: skipped {len(skipped)} line(s) that are not audit records "
            f"(first at line {skipped[0]})",
            file=sys.stderr,
        )
    if html_path is not None:
        try:
            # errors="replace": a lone surrogate from an old log line must not lose the page
            with open(html_path, "w", encoding="utf-8", errors="replace") as page:
                page.write(render_html(summary))
        except OSError as exc:
            print(f"qwengw report: cannot write {html_path}: {exc.strerror}", file=sys.stderr)
            return 2
        out.write(f"wrote {html_path}: {summary['requests']} requests, last {since}\n")
    elif as_json:
        out.write(json.dumps(summary, indent=2) + "\n")
    else:
        out.write(render_text(summary))
    return 0
