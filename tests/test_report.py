"""``qwengw report`` on a generated audit log: the function and the CLI."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from qwengw.report import main_report, parse_since, percentile, render_text, summarise
from qwengw.report import parse_lines as parse

ROOT = Path(__file__).resolve().parent.parent


def _line(t: datetime, **fields: Any) -> str:
    rec = {
        "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "request_id": fields.pop("request_id", "r"),
        "client_ip": "203.0.113.7",
        "key_id": "alice",
        "model": "qwen3",
        "method": "POST",
        "path": "/v1/chat/completions",
        "stream": True,
        "status": 200,
        "duration_ms": 100.0,
        "cancelled": False,
        "upstream": "ollama-1",
    }
    rec.update(fields)
    return json.dumps(rec)


def generate(now: datetime) -> list[str]:
    """40 requests in the last 24 h (known figures), 5 older ones, and some junk lines."""
    lines = []
    # 20 successes from alice, ttft 10..200 ms, duration 100..2000 ms
    for i in range(1, 21):
        lines.append(
            _line(
                now - timedelta(minutes=10 * i),
                request_id=f"ok{i}",
                ttft_ms=10.0 * i,
                duration_ms=100.0 * i,
                prompt_tokens=5,
                completion_tokens=7,
            )
        )
    # 8 rate-limited for bob, 4 auth failures (no key), 3 upstream errors, 5 cancelled streams
    for i in range(8):
        lines.append(
            _line(
                now - timedelta(hours=2, seconds=i),
                key_id="bob",
                status=429,
                error_code="rate_limit_exceeded",
                duration_ms=1.0,
            )
        )
    for i in range(4):
        lines.append(
            _line(
                now - timedelta(hours=3, seconds=i),
                key_id=None,
                client_ip="198.51.100.9",
                status=401,
                error_code="invalid_api_key",
                duration_ms=0.5,
            )
        )
    for i in range(3):
        lines.append(
            _line(
                now - timedelta(hours=4, seconds=i),
                key_id="bob",
                status=503,
                error_code="upstream_unavailable",
                duration_ms=3.0,
            )
        )
    for i in range(5):
        lines.append(
            _line(
                now - timedelta(hours=5, seconds=i),
                key_id="carol",
                status=499,
                cancelled=True,
                ttft_ms=50.0,
                duration_ms=900.0,
            )
        )
    # outside a 24 h window
    for i in range(5):
        lines.append(
            _line(
                now - timedelta(days=2, hours=i),
                key_id="old",
                status=500,
                error_code="upstream_error",
            )
        )
    lines += ["", "not json", "[1, 2]", json.dumps({"status": 200})]  # skipped
    return lines


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_parse_since() -> None:
    assert parse_since("30m") == timedelta(minutes=30)
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("7d") == timedelta(days=7)
    for bad in ("", "24", "h", "-1h", "0d", "3y"):
        with pytest.raises(ValueError):
            parse_since(bad)


def test_percentile_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0


def test_summary_figures() -> None:
    s = summarise(parse(generate(NOW)), timedelta(hours=24), NOW)
    assert s["requests"] == 40
    assert s["errors"] == 20  # 8 + 4 + 3 + 5 (499 counts as an error status)
    assert s["cancelled"] == 5
    assert s["by_status"] == {"200": 20, "401": 4, "429": 8, "499": 5, "503": 3}
    assert s["errors_by_code"][0] == {
        "status": 429,
        "error_code": "rate_limit_exceeded",
        "count": 8,
    }
    assert {"status": 401, "error_code": "invalid_api_key", "count": 4} in s["errors_by_code"]
    assert {"status": 499, "error_code": "-", "count": 5} in s["errors_by_code"]
    # ttft: 20 values 10..200 plus 5 × 50 → 25 values
    assert s["ttft_ms"]["count"] == 25
    assert s["ttft_ms"]["p50"] == 80.0  # nearest rank 13 of 25
    assert s["ttft_ms"]["p95"] == 190.0
    assert s["duration_ms"]["count"] == 40
    callers = {c["caller"]: c for c in s["top_callers"]}
    assert callers["alice"] == {"caller": "alice", "requests": 20, "errors": 0}
    assert callers["bob"] == {"caller": "bob", "requests": 11, "errors": 11}
    assert callers["ip:198.51.100.9"]["requests"] == 4  # no key: grouped by client IP
    assert callers["carol"]["errors"] == 0  # cancellations are not caller errors
    assert s["top_callers"][0]["caller"] == "alice"
    assert "old" not in callers
    assert (s["server_errors"], s["server_error_rate"]) == (3, 0.075)  # the 503s only
    assert s["tokens_by_caller"] == [
        {"caller": "alice", "prompt_tokens": 100, "completion_tokens": 140}
    ]


def test_window_widens() -> None:
    s = summarise(parse(generate(NOW)), timedelta(days=7), NOW)
    assert s["requests"] == 45
    assert s["by_status"]["500"] == 5
    short = summarise(parse(generate(NOW)), timedelta(minutes=30), NOW)
    assert short["requests"] == 3  # ok1..ok3 at 10, 20, 30 min


def test_empty_window_text() -> None:
    text = render_text(summarise(parse(generate(NOW)), timedelta(minutes=1), NOW))
    assert "requests    0" in text
    assert "no requests" in text


def test_main_report_text_and_json(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(generate(NOW)) + "\n")
    out = io.StringIO()
    assert main_report(str(log), "24h", False, out=out, now=NOW) == 0
    text = out.getvalue()
    assert "requests    40" in text
    assert "rate_limit_exceeded" in text
    assert "p50 80.0 ms" in text
    out = io.StringIO()
    assert main_report(str(log), "24h", True, out=out, now=NOW) == 0
    assert json.loads(out.getvalue())["requests"] == 40


def test_main_report_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main_report(str(tmp_path / "missing.log"), "24h", False) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main_report(str(tmp_path / "missing.log"), "soon", False) == 2
    assert "--since" in capsys.readouterr().err


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qwengw.cli", "report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_report(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_text("\n".join(generate(datetime.now(UTC))) + "\n")
    res = _cli(str(log), "--since", "24h", "--json")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert data["requests"] == 40
    assert data["errors"] == 20
    assert data["top_callers"][0] == {"caller": "alice", "requests": 20, "errors": 0}
    res = _cli(str(log), "--since", "7d")
    assert res.returncode == 0, res.stderr
    assert "requests    45" in res.stdout
    assert "upstream_error" in res.stdout
    res = _cli(str(log))  # default window: 24h
    assert "requests    40" in res.stdout
    res = _cli(str(log), "--since", "yesterday")
    assert res.returncode == 2


def test_cli_says_how_many_lines_it_skipped(tmp_path: Path) -> None:
    lines = generate(datetime.now(UTC))
    plain, extra = tmp_path / "plain.log", tmp_path / "extra.log"
    plain.write_text("\n".join(lines) + "\n")
    extra.write_text("\n".join([*lines, "not json", '{"no": "time"}']) + "\n")
    base = _cli(str(plain), "--json")
    res = _cli(str(extra), "--json")
    assert res.returncode == 0
    summary, expected = json.loads(res.stdout), json.loads(base.stdout)
    summary.pop("window"), expected.pop("window")  # "end" is the clock: may differ by a second
    assert summary == expected  # the extra lines change nothing but the warning
    count = int(re.search(r"skipped (\d+) line", base.stderr or "skipped 0 line").group(1))
    assert f"skipped {count + 2} line(s)" in res.stderr


def _baseline_log(path: Path, last_day_answers: int) -> None:
    lines = []
    for day in range(1, 10):
        n, ttft = (40, 100.0) if day < 9 else (last_day_answers, 1000.0)
        for i in range(n):
            rec = {
                "time": f"2026-11-{day:02d}T12:{i % 60:02d}:00Z",
                "path": "/v1/chat/completions",
                "status": 200,
                "model": "qwen3",
                "ttft_ms": ttft,
                "duration_ms": 2 * ttft,
            }
            lines.append(json.dumps(rec))
    path.write_text("\n".join(lines) + "\n")


def test_latency_baseline_script_needs_enough_answers(tmp_path: Path) -> None:
    """deploy/latency-baseline.sh (operations.md's weekly check): a day of a handful of
    answers is shown, never flagged; a full day 10× slower is flagged and exits 1."""
    script = Path(__file__).resolve().parents[1] / "deploy" / "latency-baseline.sh"
    log = tmp_path / "audit.log"
    _baseline_log(log, last_day_answers=4)
    few = subprocess.run(["sh", str(script), str(log), "qwen3"], capture_output=True, text=True)
    assert few.returncode == 0, few.stderr
    assert "(too few to judge)" in few.stdout.splitlines()[-1]
    _baseline_log(log, last_day_answers=40)
    slow = subprocess.run(["sh", str(script), str(log), "qwen3"], capture_output=True, text=True)
    assert slow.returncode == 1
    assert "TTFT+900%" in slow.stdout.splitlines()[-1]
