"""Before/after: another checkout's gateway and this one's, side by side in one time window.

On a small shared box the same code measures up to ±30% apart in two runs minutes apart, so a
change is judged by running both versions at once, on one fake Ollama, every control on:
throughput at concurrency 16 alternating between them (gateway CPU per request, median of the
rounds), one latency loop interleaving direct, before and after request by request, and two
bursts of simultaneous streams each (before, after, after, before).

Run from the repo root: ``python -m bench.ab /path/to/other/checkout [--redis]`` (e.g. a
``git worktree add /tmp/before main``). Loopback only; about 45 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import run as B


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("before", help="the other checkout (its gunicorn wsgi:app is started)")
    ap.add_argument("--redis", action="store_true", help="limits in Redis (one for both)")
    ap.add_argument("--rounds", type=int, default=4, help="throughput runs per version")
    ap.add_argument("--requests", type=int, default=2000, help="latency requests per path")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qwengw-ab-") as tmp_s:
        tmp = Path(tmp_s)
        redis = None
        storage = "memory://"
        if args.redis:
            port = B.free_port()
            redis = subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
                + ["--appendonly", "no", "--dir", str(tmp)],
                stdout=subprocess.DEVNULL,
            )
            B.wait_port(port)
            storage = f"redis://127.0.0.1:{port}/0"
        stacks: dict[str, B.Stack] = {}
        try:
            (tmp / "after").mkdir()
            stacks["after"] = B.Stack(tmp / "after", storage, with_floor=False).start()
            (tmp / "before").mkdir()
            here, B.ROOT = B.ROOT, Path(args.before).resolve()  # Stack starts gunicorn in ROOT
            try:
                stacks["before"] = B.Stack(tmp / "before", storage, with_floor=False).start(
                    stacks["after"].fake_port
                )
            finally:
                B.ROOT = here
            report(stacks, args.rounds, args.requests)
        finally:
            for stack in stacks.values():
                stack.stop()
            if redis is not None:
                redis.terminate()
                redis.wait(timeout=10)
    return 0


def report(stacks: dict[str, B.Stack], rounds: int, n: int) -> None:
    request = B.gateway_request(False, "fast")
    cpu: dict[str, list[float]] = {"before": [], "after": []}
    for i in range(rounds):
        for name in ("before", "after") if i % 2 == 0 else ("after", "before"):
            stack = stacks[name]
            used = B.cpu_seconds(stack.workers())
            rps, _ = B.throughput(stack.gw_port, request, 16, 2.0)
            cpu[name].append(1000 * (B.cpu_seconds(stack.workers()) - used) / (rps * 2.3))
    times = B._interleave(
        {
            "direct": (stacks["after"].fake_port, B.direct_request(False, "fast")),
            "before": (stacks["before"].gw_port, request),
            "after": (stacks["after"].gw_port, request),
        },
        n,
    )
    d50, d99 = B.pct(times["direct"], 50), B.pct(times["direct"], 99)
    ttft: dict[str, list[float]] = {"before": [], "after": []}
    stream = B.gateway_request(True, "slow")()
    for name in ("before", "after", "after", "before"):
        ttft[name] += B.streams(stacks[name].gw_port, stream, b"data: [DONE]", B.STREAMS)["ttft"]
        time.sleep(0.5)
    print(
        "| version | gateway CPU per request at 16 (ms, median) | added p50 (ms) | "
        f"added p99 (ms) | TTFT p99 of {B.STREAMS} simultaneous streams (ms) |"
    )
    print("|---|---|---|---|---|")
    for name in ("before", "after"):
        print(
            f"| {name} | {statistics.median(cpu[name]):.3f} | "
            f"{B.pct(times[name], 50) - d50:.2f} | {B.pct(times[name], 99) - d99:.2f} | "
            f"{B.pct(ttft[name], 99):.0f} |"
        )


if __name__ == "__main__":
    raise SystemExit(main())
