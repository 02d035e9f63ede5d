"""``qwengw report --html``: the figures, a valid self-contained page, and what a browser shows.

The browser is Debian's headless Chromium (scripts/test.sh installs it); its screenshot of the
page is checked for size and content, and is the picture in docs/operations.md
(``QWENGW_WRITE_SCREENSHOT=1`` writes it there).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import html5lib
import pytest
from PIL import Image

from qwengw.report import main_report
from qwengw.report import parse_lines as parse
from qwengw.report_html import collect, render_html
from tests.fakes.audit_log import audit_lines
from tests.fakes.audit_log import write as write_log

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SCREENSHOT = ROOT / "docs/img/report-html.png"
WINDOW = (1100, 2600)


def line(t: datetime, **fields: Any) -> str:
    rec = {
        "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": "r",
        "client_ip": "10.0.0.5",
        "method": "POST",
        "path": "/v1/chat/completions",
        "key_id": "webui",
        "model": "qwen3",
        "status": 200,
        "duration_ms": 100.0,
        "cancelled": False,
    }
    rec.update(fields)
    return json.dumps(rec)


def known_log() -> list[str]:
    """Hours 11:00 and 10:00 today, the same hours a week earlier, and some noise."""
    week = timedelta(days=7)
    hour11, hour10 = NOW - timedelta(minutes=30), NOW - timedelta(minutes=90)
    lines = []
    for i in range(10):  # 11:00: TTFT 100..1000 ms (p95 1000); a week earlier 500 ms flat
        lines.append(line(hour11, request_id=f"a{i}", ttft_ms=100.0 * (i + 1), duration_ms=i))
        lines.append(line(hour11 - week, request_id=f"old{i}", ttft_ms=500.0))
    for i in range(6):  # 10:00: TTFT 400 ms; a week earlier 420 ms: inside the band
        lines.append(line(hour10, request_id=f"b{i}", ttft_ms=400.0, prompt_tokens=10))
        lines.append(line(hour10 - week, request_id=f"older{i}", ttft_ms=420.0))
    lines.append(line(hour10, request_id="slow", duration_ms=99_000.0, completion_tokens=7))
    for _ in range(3):
        lines.append(line(hour11, key_id=None, client_ip="203.0.113.9", status=401))
    for _ in range(2):
        lines.append(line(hour11, key_id="ci-bot", status=429))
    lines.append(line(hour11, status=503, key_id="ops", client_ip="10.0.0.7"))
    lines.append(line(hour11, status=499, cancelled=True, completion_tokens=3))
    lines.append(line(hour11, path="/metrics", method="GET", status=200, key_id=None))
    lines.append(line(NOW - timedelta(days=3), status=500))  # neither window nor baseline
    return lines


def test_collect_figures() -> None:
    s = collect(parse(known_log()), timedelta(hours=2), NOW)
    assert s["requests"] == 10 + 6 + 1 + 3 + 2 + 1 + 1
    assert s["housekeeping"] == 1 and s["cancelled"] == 1
    assert s["errors"] == 3 + 2 + 1  # 499 is the client leaving, not an error
    h10, h11 = s["hourly"][-2], s["hourly"][-1]
    assert h11["start"] == "2026-11-24T11:00:00Z" and len(s["hourly"]) == 2
    assert h11["requests"] == [10, 5, 1, 1]  # 2xx, 4xx, 499, 5xx
    assert (h11["ttft_p95"], h11["baseline_p95"], h11["outside"]) == (1000.0, 500.0, "above")
    assert (h10["ttft_p95"], h10["baseline_p95"], h10["outside"]) == (400.0, 420.0, None)
    assert s["refused"]["401"] == {"by_key": [("-", 3)], "by_ip": [("203.0.113.9", 3)]}
    assert s["refused"]["429"]["by_key"] == [("ci-bot", 2)]
    assert s["refused"]["5xx"] == {"by_key": [("ops", 1)], "by_ip": [("10.0.0.7", 1)]}
    assert s["tokens"][0] == {"key": "webui", "requests": 8, "prompt": 60, "completion": 10}
    assert s["slowest"][0]["request_id"] == "slow" and s["slowest"][0]["duration_ms"] == 99_000


def test_few_answers_give_no_percentile_and_no_flag() -> None:
    lines = [line(NOW - timedelta(minutes=5), ttft_ms=9000.0) for _ in range(4)]
    lines += [line(NOW - timedelta(days=7, minutes=5), ttft_ms=100.0) for _ in range(10)]
    h = collect(parse(lines), timedelta(hours=1), NOW)["hourly"][-1]
    assert h["ttft_p95"] is None and h["baseline_p95"] == 100.0 and h["outside"] is None


def page_of(lines: list[str], since: timedelta = timedelta(hours=24)) -> str:
    return render_html(collect(parse(lines), since, NOW))


def test_page_is_valid_html_and_self_contained() -> None:
    lines = [x.decode() for x in audit_lines(3000, NOW)]
    lines.append(line(NOW, key_id="<script>alert(1)</script>", status=429))  # hostile text
    page = page_of(lines)
    html5lib.HTMLParser(strict=True).parse(page)  # raises on any HTML parse error
    ET.fromstring(page.split("\n", 1)[1])  # and well-formed XML (the inline SVGs included)
    assert "<script" not in page and "&lt;script&gt;" in page
    assert not re.search(r"""(src|href)=|<link|@import|url\(""", page)  # nothing to fetch
    assert re.findall(r"https?://[^\"']+", page) == ["http://www.w3.org/2000/svg"] * 3
    for section in ("requests", "refused", "ttft", "tokens", "slowest"):
        assert f'id="{section}"' in page


def test_empty_window_still_renders() -> None:
    page = page_of([], timedelta(hours=3))
    html5lib.HTMLParser(strict=True).parse(page)
    assert "none in this window" in page


@pytest.mark.integration
def test_chromium_renders_the_page(tmp_path: Path) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium not found: install Debian's chromium (scripts/test.sh does)")
    log, page, png = tmp_path / "audit.log", tmp_path / "report.html", tmp_path / "report.png"
    write_log(str(log), 30_000, NOW)
    assert main_report(str(log), "24h", False, out=io.StringIO(), now=NOW, html_path=str(page)) == 0
    res = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--window-size={WINDOW[0]},{WINDOW[1]}",
            f"--screenshot={png}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert png.exists(), res.stderr[-2000:]
    with Image.open(png) as img:
        assert img.size == WINDOW
        rgb = img.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50  # text, charts and tables, not a blank or an error page
        white = sum(n for n, c in colours if min(c) > 245)
        assert white < 0.93 * WINDOW[0] * WINDOW[1]
        # the charts are drawn: blue 2xx bars, the orange 4xx, the red ring of a flagged hour
        seen = {c for _, c in colours}
        for rgb_hex in ("1f77b4", "ff7f0e", "d62728"):
            assert tuple(int(rgb_hex[i : i + 2], 16) for i in (0, 2, 4)) in seen, rgb_hex
    if os.environ.get("QWENGW_WRITE_SCREENSHOT"):
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(png, SCREENSHOT)


def test_cli_writes_the_page(tmp_path: Path) -> None:
    log, page = tmp_path / "audit.log", tmp_path / "out.html"
    write_log(str(log), 2000, datetime.now(UTC), days=2)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "qwengw.cli", "report", str(log), *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    res = cli("--since", "24h", "--html", str(page))
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"wrote {page}: ") and "last 24h" in res.stdout
    text = page.read_text(encoding="utf-8")
    assert "qwengw audit report: last 1d" in text and "Slowest requests" in text
    assert cli("--since", "soon", "--html", str(page)).returncode == 2
    bad = cli("--html", str(tmp_path / "missing-dir" / "x.html"))
    assert bad.returncode == 2 and "cannot write" in bad.stderr
