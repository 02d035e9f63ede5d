"""``qwengw serve | check-config | hash-key | report``: thin wrappers over library functions."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from .config import CONFIG_ENV, ConfigError, hash_key, load_settings
from .config import warnings as config_warnings


def _serve(args: argparse.Namespace) -> int:
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    try:
        load_settings()  # fail here, with the per-key message, before gunicorn starts
    except ConfigError as err:
        print(f"qwengw: {err}", file=sys.stderr)
        return 2
    conf = Path(__file__).with_name("gunicorn_conf.py")
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf), "qwengw.app:create_app()"]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _check_config(args: argparse.Namespace) -> int:
    try:
        s = load_settings(args.file)
    except ConfigError as err:
        print(f"{err.source}: {len(err.problems)} problem(s)")
        for problem in err.problems:
            print(f"  - {problem}")
        return 1
    print(f"{args.file}: OK")
    print(f"  listen            {s.listen}")
    print(f"  ollama upstreams  {len(s.ollama_urls)}")
    print(f"  models            {', '.join(s.models) or '(all models Ollama has)'}")
    print(f"  auth              {'on' if s.auth.enabled else 'OFF'} ({len(s.auth.keys)} key(s))")
    print(
        f"  whitelist         {'on' if s.whitelist.enabled else 'OFF'} ({len(s.whitelist.ips)} "
        f"network(s), {len(s.whitelist.trusted_proxies)} trusted proxy network(s))"
    )
    rl = s.rate_limit
    print(
        f"  rate_limit        {'on' if rl.enabled else 'OFF'} "
        f"({rl.max_requests}/{rl.window_seconds}s, "
        f"storage {rl.storage.split('://')[0]}://)"
    )
    for warning in config_warnings(s, s.workers):
        print(f"  warning: {warning}")
    return 0


def _hash_key(args: argparse.Namespace) -> int:
    key = getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()
    key = key.strip()
    if not key:
        print("qwengw: no key on standard input", file=sys.stderr)
        return 1
    print(hash_key(key))
    return 0


def _report(args: argparse.Namespace) -> int:
    from .report import main_report

    return main_report(args.audit_log, args.since, args.json, html_path=args.html)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="qwengw", description="OpenAI-compatible gateway for Ollama")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the gateway under gunicorn with gevent workers")
    s.add_argument("--config", help=f"YAML config (default: ${CONFIG_ENV}, else built-in defaults)")
    s.set_defaults(func=_serve)
    c = sub.add_parser("check-config", help="validate a config file and say what is wrong, per key")
    c.add_argument("file")
    c.set_defaults(func=_check_config)
    h = sub.add_parser("hash-key", help="print the sha256 of an API key read from stdin")
    h.set_defaults(func=_hash_key)
    r = sub.add_parser("report", help="summarise an audit log")
    r.add_argument("audit_log")
    r.add_argument("--since", default="24h", help="window such as 24h, 7d, 30m (default 24h)")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    r.add_argument(
        "--html",
        metavar="OUT.html",
        help="write one self-contained HTML page (charts, top refusals, slowest requests)",
    )
    r.set_defaults(func=_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
