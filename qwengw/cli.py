"""``qwengw serve | check-config | hash-key | report``: thin wrappers over library functions."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from pathlib import Path

from . import __version__
from .config import (
    CONFIG_ENV,
    ENV_BIND,
    ENV_INTS,
    ENV_WORKERS,
    ConfigError,
    apply_environment,
    hash_key,
    load_settings,
)
from .config import warnings as config_warnings

_ENVIRONMENT = [
    (f"{CONFIG_ENV}=FILE", "the config file when --config is not given"),
    (f"{ENV_BIND}=HOST:PORT", "where to listen; overrides listen:"),
    (f"{ENV_WORKERS}=N", "gevent worker processes; overrides workers:"),
    *((f"{name}=N", what) for name, (_, what) in ENV_INTS.items()),
]
ENVIRONMENT_HELP = "environment (overrides, checked like the config keys):\n" + "".join(
    f"  {name:<26} {what}\n" for name, what in _ENVIRONMENT
)


def _serve(args: argparse.Namespace) -> int:
    if args.config:
        os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    try:
        # fail here, with the per-key message, before gunicorn starts
        apply_environment(load_settings())
    except ConfigError as err:
        print(f"qwengw: {err}", file=sys.stderr)
        return 2
    conf = Path(__file__).with_name("gunicorn_conf.py")
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf), "qwengw.app:create_app()"]
    os.execv(sys.executable, argv)
    return 0  # pragma: no cover


def _check_config(args: argparse.Namespace) -> int:
    # Exactly what `qwengw serve` would run: FILE, else $QWENGW_CONFIG, else the built-in
    # defaults; then the environment's overrides.
    path = args.file or os.environ.get(CONFIG_ENV) or None
    try:
        s = apply_environment(load_settings(path))
    except ConfigError as err:
        print(err)  # the same text as `qwengw serve` and `nginxgen --gateway-config` give
        return 1
    print(f"{path or 'built-in defaults (no FILE, no $' + CONFIG_ENV + ')'}: OK")
    overridden = [n for n in (ENV_BIND, ENV_WORKERS) if os.environ.get(n, "").strip()]
    if overridden:
        print(f"  (with {' and '.join(overridden)} from the environment)")
    print(f"  listen            {s.listen}")
    print(f"  workers           {s.workers}")
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
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser(
        "serve",
        help="run the gateway under gunicorn with gevent workers",
        description="Check the configuration, then run the gateway under gunicorn with gevent\n"
        "workers. Ctrl-C or SIGTERM stops it.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "--config",
        metavar="FILE",
        help=f"YAML config (default: ${CONFIG_ENV}, else built-in defaults: 127.0.0.1:18789 in "
        "front of Ollama on 127.0.0.1:11434, auth off)",
    )
    s.set_defaults(func=_serve)
    c = sub.add_parser(
        "check-config",
        help="validate a config file and say what is wrong, per key",
        description="Check what `qwengw serve` would run: every problem named by its key, then\n"
        "warnings. Exit 1 when anything is wrong.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument(
        "file",
        nargs="?",
        metavar="FILE",
        help=f"YAML config (default: ${CONFIG_ENV}, else the built-in defaults)",
    )
    c.set_defaults(func=_check_config)
    h = sub.add_parser("hash-key", help="print the sha256 of an API key read from stdin")
    h.set_defaults(func=_hash_key)
    r = sub.add_parser("report", help="summarise an audit log")
    r.add_argument(
        "audit_log",
        metavar="AUDIT_LOG",
        help="the audit log (audit.path), or - for standard input (e.g. zcat -f audit.log* |)",
    )
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
