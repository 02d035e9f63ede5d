"""``qwengw report --html OUT.html``: one self-contained page an operator reads in a browser.

Requests per hour by status class, the top 401 / 429 / 5xx by key id and client IP, TTFT p50/p95
per hour against the same hour a week earlier (the ±30 % rule marked), tokens per key, and the
slowest requests with their ids. One streaming pass over the audit log (``collect``, pure) into
a plain summary, then ``render_html`` (pure); no network, no JavaScript, inline SVG.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from . import __version__, svgchart
from .audit import is_housekeeping
from .report import as_number, count_tokens, fmt_duration, iso_utc, percentile

BASELINE = timedelta(days=7)  # compare each hour with the same hour this long before
RULE = 0.30  # the seed's rule: alert when latency moves more than 30 % from its baseline
MIN_SAMPLES = 5  # fewer answers in an hour: no percentile worth comparing
TOP = 10
SLOWEST = 20
MAX_SLOTS = 336  # two weeks of hours; longer windows get wider slots
CLASSES = (  # status class, colour (colour-blind safe: blue, orange, grey, red)
    ("2xx/3xx", "#1f77b4"),
    ("4xx", "#ff7f0e"),
    ("499 client left", "#9e9e9e"),
    ("5xx", "#d62728"),
)
REFUSALS = ("401", "429", "5xx")


def _class(status: int) -> int:
    if status == 499:
        return 2
    if status >= 500:
        return 3
    return 1 if status >= 400 else 0


def collect(
    records: Iterable[dict[str, Any]], since: timedelta, now: datetime | None = None
) -> dict[str, Any]:
    """Everything the page shows, from records with a ``_time`` (see ``report.parse_lines``).

    Records from the window and from the same window a week earlier are used; the rest are
    passed over. Memory: 8 bytes per answer with a TTFT, plus the counters.
    """
    end = now or datetime.now(UTC)
    start = end - since
    origin = start.replace(minute=0, second=0, microsecond=0)  # slots on whole hours
    hours = math.ceil((end - origin).total_seconds() / 3600)
    slot_hours = max(1, math.ceil(hours / MAX_SLOTS))
    slot = 3600 * slot_hours
    n = math.ceil((end - origin).total_seconds() / slot)
    base_origin, base_start, base_end = origin - BASELINE, start - BASELINE, end - BASELINE

    by_class = [[0] * n for _ in CLASSES]
    ttft = [array("d") for _ in range(n)]
    base_ttft = [array("d") for _ in range(n)]
    refused_keys: dict[str, Counter[str]] = {r: Counter() for r in REFUSALS}
    refused_ips: dict[str, Counter[str]] = {r: Counter() for r in REFUSALS}
    tokens: dict[str, list[int]] = {}  # key → [requests, prompt, completion]
    slowest: list[tuple[float, int, dict[str, Any]]] = []  # min-heap of the SLOWEST longest
    total = errors = cancelled = housekeeping = 0
    all_ttft = array("d")
    for seq, rec in enumerate(records):
        t = rec["_time"]
        if base_start <= t <= base_end:  # a week earlier: only its TTFT, for the baseline
            v = as_number(rec.get("ttft_ms"))
            if v is not None and not is_housekeeping(rec.get("path"), rec.get("status")):
                i = int((t - base_origin).total_seconds() // slot)
                base_ttft[min(i, n - 1)].append(v)
            continue
        if not start <= t <= end:
            continue
        status = rec.get("status") if isinstance(rec.get("status"), int) else 0
        if is_housekeeping(rec.get("path"), status):
            housekeeping += 1
            continue
        total += 1
        i = min(int((t - origin).total_seconds() // slot), n - 1)
        cls = _class(status)
        by_class[cls][i] += 1
        key = _text(rec.get("key_id"))
        if status >= 400 and status != 499:
            errors += 1
        refusal = "401" if status == 401 else "429" if status == 429 else "5xx" if cls == 3 else ""
        if refusal:
            refused_keys[refusal][key] += 1
            refused_ips[refusal][_text(rec.get("client_ip"))] += 1
        if rec.get("cancelled") is True:
            cancelled += 1
        if (v := as_number(rec.get("ttft_ms"))) is not None:
            ttft[i].append(v)
            all_ttft.append(v)
        count_tokens(tokens, key, rec)
        if (d := as_number(rec.get("duration_ms"))) is not None:
            item = (d, seq, rec)
            if len(slowest) < SLOWEST:
                heapq.heappush(slowest, item)
            elif d > slowest[0][0]:
                heapq.heapreplace(slowest, item)

    hourly = []
    for i in range(n):
        p50, p95 = _pct(ttft[i], 50), _pct(ttft[i], 95)
        base = _pct(base_ttft[i], 95)
        outside = None
        if p95 is not None and base is not None:
            outside = (
                "above" if p95 > base * (1 + RULE) else "below" if p95 < base * (1 - RULE) else None
            )
        hourly.append(
            {
                "start": iso_utc(origin + timedelta(seconds=i * slot)),
                "requests": [by_class[c][i] for c in range(len(CLASSES))],
                "ttft_n": len(ttft[i]),
                "ttft_p50": p50,
                "ttft_p95": p95,
                "baseline_n": len(base_ttft[i]),
                "baseline_p95": base,
                "outside": outside,
            }
        )
    return {
        "window": {"since": fmt_duration(since), "start": iso_utc(start), "end": iso_utc(end)},
        "slot_hours": slot_hours,
        "requests": total,
        "errors": errors,
        "error_rate": round(errors / total, 4) if total else 0.0,
        "cancelled": cancelled,
        "housekeeping": housekeeping,
        "ttft_ms": {"p50": percentile(list(all_ttft), 50), "p95": percentile(list(all_ttft), 95)},
        "hourly": hourly,
        "refused": {
            r: {
                "by_key": refused_keys[r].most_common(TOP),
                "by_ip": refused_ips[r].most_common(TOP),
            }
            for r in REFUSALS
        },
        "tokens": sorted(
            (
                {"key": k, "requests": v[0], "prompt": v[1], "completion": v[2]}
                for k, v in tokens.items()
            ),
            key=lambda row: (-(row["prompt"] + row["completion"]), row["key"]),
        ),
        "slowest": [_slow(rec) for _, _, rec in sorted(slowest, key=lambda x: (-x[0], x[1]))],
    }


def _pct(values: array[float], p: float) -> float | None:
    """Nearest-rank percentile of an hour's values; None below ``MIN_SAMPLES``."""
    return percentile(list(values), p) if len(values) >= MIN_SAMPLES else None


def _text(value: Any) -> str:
    """A field as text for a table ("-" when absent), whatever a hand-edited log holds."""
    return "-" if value is None or value == "" else value if isinstance(value, str) else str(value)


def _slow(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: _text(rec.get(k)) for k in ("request_id", "time", "key_id", "model")}
    out["status"] = _text(rec.get("status"))
    for k in ("ttft_ms", "duration_ms", "completion_tokens"):
        out[k] = as_number(rec.get(k))
    return out


# ----------------------------------------------------------------------------- the page

CSS = """
body{font:14px/1.45 "DejaVu Sans",Verdana,sans-serif;color:#222;margin:24px auto;
max-width:1000px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;border-bottom:1px solid #ddd}
p.note{color:#555;margin:4px 0 8px}.kpi{display:flex;gap:12px;flex-wrap:wrap;margin:12px 0}
.kpi div{border:1px solid #ddd;border-radius:6px;padding:8px 12px;min-width:120px}
.kpi b{display:block;font-size:20px}.kpi .bad{color:#d62728}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 10px 3px 0;text-align:left;vertical-align:top}
td.n,th.n{text-align:right}code{font-size:12px}.grid{display:flex;gap:24px;flex-wrap:wrap}
.legend span{margin-right:16px;white-space:nowrap}.legend i{display:inline-block;width:12px;
height:12px;margin-right:5px;vertical-align:-1px}
"""


def _ms(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f} ms"


def _num(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int]) -> str:
    if not rows:
        return '<p class="note">none in this window</p>'
    head = "".join(
        f'<th class="n">{escape(h)}</th>' if i in numeric else f"<th>{escape(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{_num(c)}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _slot_labels(hourly: list[dict[str, Any]], slot_hours: int) -> list[str]:
    labels = []
    for h in hourly:
        t = datetime.fromisoformat(h["start"].replace("Z", "+00:00"))
        labels.append(t.strftime("%d %b %H:00" if t.hour == 0 or slot_hours > 1 else "%H:00"))
    return labels


def render_html(s: dict[str, Any]) -> str:
    """The page: valid HTML5 (and well-formed XML), styles inline, charts as inline SVG."""
    w = s["window"]
    hourly = s["hourly"]
    labels = _slot_labels(hourly, s["slot_hours"])
    per = "hour" if s["slot_hours"] == 1 else f"{s['slot_hours']} hours"
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>qwengw report, last {escape(w['since'])}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>qwengw audit report: last {escape(w['since'])}</h1>",
        f'<p class="note">{escape(w["start"])} to {escape(w["end"])} (UTC) · generated by '
        f"qwengw {escape(__version__)} from the audit log</p>",
    ]
    n = max(s["requests"], 1)
    fails = sum(h["requests"][3] for h in hourly)
    refused = sum(h["requests"][1] for h in hourly)
    bad = ' class="bad"' if fails / n > 0.02 else ""  # the alert's 2 %
    kpis = [
        ("requests", f"{s['requests']:,}", ""),
        ("5xx", f"{fails:,} ({fails / n * 100:.1f} %)", bad),
        ("4xx", f"{refused:,} ({refused / n * 100:.1f} %)", ""),
        ("client left (499)", f"{s['cancelled']:,}", ""),
        ("TTFT p50", _ms(s["ttft_ms"]["p50"]), ""),
        ("TTFT p95", _ms(s["ttft_ms"]["p95"]), ""),
    ]
    out.append(
        '<div class="kpi">'
        + "".join(f"<div>{escape(k)}<b{c}>{escape(v)}</b></div>" for k, v, c in kpis)
        + "</div>"
    )
    if s["housekeeping"]:
        out.append(
            f'<p class="note">{s["housekeeping"]:,} /health, /ready and /metrics requests are '
            "not counted.</p>"
        )

    series = [
        svgchart.Series(name, color, [h["requests"][c] for h in hourly])
        for c, (name, color) in enumerate(CLASSES)
    ]
    out.append(f'<h2 id="requests">Requests per {per} by status class</h2>')
    out.append(svgchart.stacked_bars(series, labels, f"Requests per {per} by status class"))
    out.append(svgchart.legend(series))

    out.append('<h2 id="refused">Top 401, 429 and 5xx by key id and client IP</h2>')
    out.append(
        '<p class="note">401: missing or wrong key (no key id: "-"); 429: a limit (rate, '
        "concurrency, failed keys); 5xx: the gateway or Ollama failed.</p>"
    )
    out.append('<div class="grid">')
    for r in REFUSALS:
        ref = s["refused"][r]
        out.append("<div>")
        out.append(f"<h3>{r} by key id</h3>")
        out.append(_table(["key id", "count"], [[escape(k), c] for k, c in ref["by_key"]], {1}))
        out.append(f"<h3>{r} by client IP</h3>")
        out.append(_table(["client IP", "count"], [[escape(k), c] for k, c in ref["by_ip"]], {1}))
        out.append("</div>")
    out.append("</div>")

    out.append(f'<h2 id="ttft">Time to first token per {per}, against a week earlier</h2>')
    p50 = [h["ttft_p50"] / 1000 if h["ttft_p50"] is not None else None for h in hourly]
    p95 = [h["ttft_p95"] / 1000 if h["ttft_p95"] is not None else None for h in hourly]
    base = [h["baseline_p95"] / 1000 if h["baseline_p95"] is not None else None for h in hourly]
    low = [b * (1 - RULE) if b is not None else None for b in base]
    high = [b * (1 + RULE) if b is not None else None for b in base]
    marks = [(i, v) for i, (h, v) in enumerate(zip(hourly, p95, strict=True)) if h["outside"] and v]
    lines = [
        svgchart.Series("p50", "#1f77b4", p50),
        svgchart.Series("p95", "#222222", p95),
        svgchart.Series("p95 a week earlier", "#2ca02c", base, dashed=True),
    ]
    out.append(
        svgchart.lines(
            lines, labels, "TTFT per hour", unit="s", band=(low, high, "#98df8a"), marks=marks
        )
    )
    out.append(
        svgchart.legend(
            lines, [("±30 % of a week earlier", "#98df8a"), ("p95 outside the band", "#d62728")]
        )
    )
    out.append(
        f'<p class="note">The band is the p95 of the same {per} 7 days earlier, ±30 % (the '
        "seed's baseline rule; the alert QwengwTTFTAboveBaseline pages on the upper side). "
        f"Slots with fewer than {MIN_SAMPLES} answers have no percentile.</p>"
    )
    flagged = [
        [escape(lab), h["ttft_n"], _ms(h["ttft_p95"]), _ms(h["baseline_p95"]), h["outside"]]
        for lab, h in zip(labels, hourly, strict=True)
        if h["outside"]
    ]
    out.append(_table(["slot", "answers", "p95", "a week earlier", "outside"], flagged, {1}))

    out.append('<h2 id="tokens">Tokens per key</h2>')
    tok = s["tokens"][:TOP]
    out.append(
        svgchart.hbars(
            [(t["key"], [t["prompt"], t["completion"]]) for t in tok],
            ["#1f77b4", "#ff7f0e"],
            "Tokens per key",
        )
    )
    out.append(
        svgchart.legend([], [("prompt tokens", "#1f77b4"), ("completion tokens", "#ff7f0e")])
    )
    out.append(
        _table(
            ["key id", "requests", "prompt tokens", "completion tokens"],
            [[escape(t["key"]), t["requests"], t["prompt"], t["completion"]] for t in s["tokens"]],
            {1, 2, 3},
        )
    )

    out.append('<h2 id="slowest">Slowest requests</h2>')
    out.append(
        '<p class="note">Follow one with its request id: docs/operations.md, "The chat is '
        'stuck: follow one request".</p>'
    )
    out.append(
        _table(
            ["request id", "time", "key id", "model", "status", "TTFT", "duration", "tokens"],
            [
                [
                    f"<code>{escape(r['request_id'])}</code>",
                    escape(r["time"]),
                    escape(r["key_id"]),
                    escape(r["model"]),
                    escape(r["status"]),
                    _ms(r["ttft_ms"]),
                    _ms(r["duration_ms"]),
                    _num(r["completion_tokens"]),
                ]
                for r in s["slowest"]
            ],
            set(),
        )
    )
    out.append("</body></html>")
    return "\n".join(out) + "\n"
