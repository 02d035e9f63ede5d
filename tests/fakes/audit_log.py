"""A fake audit log with the gateway's own line format: days of plausible traffic, seeded.

Keys, anonymous key guessers from public addresses, rate-limited and cancelled requests, Ollama
failures, TTFT with a daily rhythm, and in the last day a few slow hours (and one fast one) for
the ±30 % rule to flag. Used by the HTML report test and by ``bench/report_html.py``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from qwengw.audit import json_line

KEYS = ["webui", "webui", "webui", "ops", "ci-bot", "notebook"]
GUESSERS = ["198.51.100.23", "203.0.113.77", "203.0.113.78"]
MODELS = [("qwen3:32b", 420.0), ("qwen3:32b", 420.0), ("qwen3", 160.0)]
SLOW_HOURS = range(9, 6, -1)  # hours before the end whose TTFT is 70 % higher
FAST_HOUR = 3  # and one that is 60 % lower


def audit_lines(n: int, end: datetime, days: float = 8.0, seed: int = 15) -> Iterator[bytes]:
    """``n`` audit lines evenly spread over ``days`` up to ``end``, oldest first."""
    rng = random.Random(seed)
    span = days * 86400
    end_ts = end.timestamp()
    for i in range(n):
        ts = end_ts - span * (n - i) / n
        t = datetime.fromtimestamp(ts, UTC)
        hours_before = int((end_ts - ts) // 3600)
        rec: dict[str, object] = {
            "time": t.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "request_id": f"{rng.getrandbits(128):032x}",
            "client_ip": f"10.0.{rng.randrange(4)}.{rng.randrange(2, 60)}",
            "method": "POST",
            "path": "/v1/chat/completions",
        }
        r = rng.random()
        if r < 0.01:
            rec.update(method="GET", path="/health", key_id=None, model=None, status=200)
            rec.update(duration_ms=0.4, cancelled=False)
            yield json_line(rec)
            continue
        key = rng.choice(KEYS)
        model, ttft_base = rng.choice(MODELS)
        if r < 0.03:
            rec.update(client_ip=rng.choice(GUESSERS), key_id=None, model=None, status=401)
            rec.update(error_code="invalid_api_key", duration_ms=0.6, cancelled=False)
            yield json_line(rec)
            continue
        rec.update(key_id=key, user=None, model=model, stream=rng.random() < 0.8)
        if r < 0.06:
            key = "ci-bot" if rng.random() < 0.7 else key
            rec.update(key_id=key, status=429, error_code="rate_limit_exceeded", duration_ms=1.2)
            rec["cancelled"] = False
            yield json_line(rec)
            continue
        daily = 1 + 0.35 * math.sin((t.hour - 8) / 24 * 2 * math.pi)
        slow = 1.7 if hours_before in SLOW_HOURS else 0.4 if hours_before == FAST_HOUR else 1.0
        ttft = round(ttft_base * daily * slow * rng.lognormvariate(0, 0.25), 2)
        completion = int(rng.lognormvariate(5, 0.8))
        duration = round(ttft + completion * rng.uniform(25, 40), 2)
        rec.update(
            prompt_chars=rng.randrange(20, 6000),
            prompt_tokens=rng.randrange(10, 1800),
            upstream="ollama-1",
        )
        if r < 0.09:
            seen = rng.randrange(1, completion + 2)
            rec.update(status=499, completion_tokens=seen, ttft_ms=ttft)
            rec.update(duration_ms=round(ttft + seen * 30, 2), cancelled=True)
            del rec["prompt_tokens"]
        elif r < 0.105:
            status, code = rng.choice(
                [(503, "upstream_busy"), (502, "upstream_error"), (504, "upstream_timeout")]
            )
            rec.update(status=status, error_code=code, duration_ms=round(rng.uniform(2, 900), 2))
            rec["cancelled"] = False
            del rec["prompt_tokens"]
        else:
            rec.update(status=200, completion_tokens=completion, ttft_ms=ttft)
            rec.update(duration_ms=duration, cancelled=False)
        yield json_line(rec)


def write(path: str, n: int, end: datetime, days: float = 8.0, seed: int = 15) -> None:
    with open(path, "wb") as fh:
        for line in audit_lines(n, end, days, seed):
            fh.write(line)


if __name__ == "__main__":  # python -m tests.fakes.audit_log OUT N
    import sys

    write(sys.argv[1], int(sys.argv[2]), datetime.now(UTC) - timedelta(seconds=1))
