"""How long ``nginxgen lint`` takes: a typical site, and one file with 2,000 servers.

    python -m bench.lint_speed [--servers 2000] [--repeat 5]

Prints the median wall time of the whole lint (parse, includes, every rule), without gixy-ng
(which runs as a separate process when present; its time is printed apart). Issue #12's
budget: under 0.3 s for a typical site, under 5 s for 2,000 servers on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nginxgen import gixy
from nginxgen.build import render
from nginxgen.lint import lint
from nginxgen.model import SiteSpec

# One server of the big file: the shapes the rules look hardest at (regex and prefix
# locations, proxying, headers, TLS), with a different name and port each time.
SERVER = """
server {{
    listen {port} ssl;
    server_name s{i}.example.com;
    ssl_certificate /etc/ssl/s{i}.pem;
    ssl_certificate_key /etc/ssl/s{i}.key;
    add_header Strict-Transport-Security "max-age=63072000" always;
    add_header X-Content-Type-Options nosniff always;
    location / {{
        proxy_pass http://app{m};
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $remote_addr;
    }}
    location /static/ {{
        root /srv/s{i};
        expires 7d;
    }}
    location ~* \\.(?:css|js|png|svg)$ {{
        proxy_pass http://app{m};
    }}
    location ~ ^/api/v(\\d+)/(.*)$ {{
        proxy_pass http://app{m}/v$1/$2;
    }}
}}
"""


def big_config(servers: int) -> str:
    head = "".join(f"upstream app{m} {{ server 127.0.0.1:{9000 + m}; }}\n" for m in range(20))
    ssl = "ssl_protocols TLSv1.2 TLSv1.3;\nssl_ciphers ECDHE-RSA-AES128-GCM-SHA256;\n"
    body = "".join(SERVER.format(i=i, m=i % 20, port=10000 + i) for i in range(servers))
    return "server_tokens off;\n" + ssl + head + body


def timed(path: Path, repeat: int, **kw: object) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = len(lint(path, **kw).findings)  # type: ignore[arg-type]
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", type=int, default=2000)
    p.add_argument("--repeat", type=int, default=5)
    ns = p.parse_args(argv)
    seed = Path(__file__).resolve().parents[1] / "tests" / "data" / "seed-site.conf"
    with tempfile.TemporaryDirectory() as tmp:
        emitted = Path(tmp) / "emitted.conf"
        emitted.write_text(render(SiteSpec(server_names=("ai.example.com",))))
        big = Path(tmp) / "big.conf"
        big.write_text(big_config(ns.servers))
        rows = [
            ("seed site (40 lines)", seed, ns.repeat),
            (f"emitted site ({len(emitted.read_text().splitlines())} lines)", emitted, ns.repeat),
            (f"{ns.servers} servers ({len(big.read_text().splitlines())} lines)", big, 3),
        ]
        for label, path, repeat in rows:
            seconds, count = timed(path, repeat)
            print(f"{label:40} {seconds * 1000:8.1f} ms  ({count} findings, median of {repeat})")
        cli = []
        for _ in range(ns.repeat):
            start = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "nginxgen", "lint", "--no-gixy", str(seed)],
                capture_output=True,
                check=False,
            )
            cli.append(time.perf_counter() - start)
        label = "seed site, whole CLI process"
        print(f"{label:40} {statistics.median(cli) * 1000:8.1f} ms  (python start and imports)")
        binary = gixy.find()
        if binary:
            seconds, _ = timed(seed, 3, gixy=binary)
            print(f"{'seed site with gixy-ng merged':40} {seconds * 1000:8.1f} ms")
        else:
            print("gixy-ng not found: its time is not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
