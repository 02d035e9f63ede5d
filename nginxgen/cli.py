"""``nginxgen show|lint|write``: flags map 1:1 onto SiteSpec fields (or a --site YAML)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import MISSING, replace
from pathlib import Path
from typing import Any

import yaml

from qwengw import __version__
from qwengw.config import ConfigError, yaml_problem

from . import __doc__ as _pkg_doc
from . import gixy
from .build import ACME_PATH, render
from .deploy import DeployError, Nginx, install
from .lint import lint, lint_text
from .model import (
    LE_LIVE,
    TLS,
    GatewaySettings,
    RateLimit,
    SiteSpec,
    SpecError,
    gateway_warnings,
    parse_version,
    version_text,
)


def _default(name: str) -> Any:
    """A SiteSpec field's default, so that --help shows what the site gets without the flag."""
    f = SiteSpec.__dataclass_fields__[name]
    value = f.default_factory() if f.default_factory is not MISSING else f.default
    if isinstance(value, tuple) and value and isinstance(value[0], int):
        return version_text(value)  # type: ignore[arg-type]
    return ", ".join(value) if isinstance(value, tuple) else value


def _site_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("site description (flags override --site)")
    g.add_argument("--site", metavar="FILE", help="YAML site description (its keys: docs/nginx.md)")
    g.add_argument(
        "--server-name",
        action="append",
        metavar="NAME",
        help="public host name (repeatable; the first names the certificate); required",
    )
    g.add_argument(
        "--ssl-cert",
        metavar="PATH",
        help=f"certificate chain (default: Let's Encrypt's {LE_LIVE}/NAME/fullchain.pem)",
    )
    g.add_argument(
        "--ssl-key",
        metavar="PATH",
        help=f"private key, with --ssl-cert (default: {LE_LIVE}/NAME/privkey.pem)",
    )
    g.add_argument(
        "--ssl-chain",
        metavar="PATH",
        help="intermediate chain: turns OCSP stapling on (not for Let's Encrypt, default: none)",
    )
    g.add_argument(
        "--ui",
        action="append",
        metavar="HOST:PORT",
        help=f"chat UI served at / (repeatable; default: {_default('ui')})",
    )
    g.add_argument(
        "--gateway",
        action="append",
        metavar="HOST:PORT",
        help=f"qwengw served at /v1/ (repeatable; default: {_default('gateway')}, or the "
        "listen: of --gateway-config)",
    )
    g.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help=f"plain HTTP: ACME and the redirect (default: {_default('http_port')})",
    )
    g.add_argument(
        "--https-port", type=int, metavar="PORT", help=f"default: {_default('https_port')}"
    )
    g.add_argument(
        "--listen-address",
        action="append",
        metavar="ADDR",
        help="address to listen on (repeatable; default: every IPv4 and IPv6 address)",
    )
    g.add_argument(
        "--nginx-version",
        metavar="X.Y.Z",
        help=f"the nginx the site is for (default: {_default('nginx_version')}, Debian 12's)",
    )
    g.add_argument(
        "--gateway-config",
        metavar="FILE",
        help="the gateway's config (checked as `qwengw check-config` does): its listen, body "
        "size, timeouts and trusted proxies shape the site",
    )
    g.add_argument(
        "--static-root",
        metavar="DIR",
        help="serve the UI's static files from disk (default: the UI serves them)",
    )
    g.add_argument(
        "--allow",
        action="append",
        metavar="CIDR",
        help="/v1/ clients allowed (repeatable; default: everyone, the gateway decides)",
    )
    g.add_argument(
        "--no-rate-limit",
        action="store_true",
        help=f"no nginx-level limit_req (default: {RateLimit().rate}, burst {RateLimit().burst} "
        "per client address)",
    )
    g.add_argument("--access-log", metavar="PATH", help=f"default: {_default('access_log')}")
    g.add_argument(
        "--acme-root",
        metavar="DIR",
        help=f"certbot's webroot for {ACME_PATH} (default: {_default('acme_root')})",
    )


def _spec(ns: argparse.Namespace) -> tuple[SiteSpec, GatewaySettings | None]:
    data: dict[str, Any] = {}
    base = None
    if ns.site:
        try:
            data = yaml.safe_load(Path(ns.site).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise SpecError(f"{ns.site}: not valid YAML: {yaml_problem(exc)}") from None
        base = Path(ns.site).parent
    gw_path = ns.gateway_config or data.pop("gateway_config", None)
    flags = {
        "server_names": ns.server_name,
        "ui": ns.ui,
        "http_port": ns.http_port,
        "https_port": ns.https_port,
        "listen_addresses": ns.listen_address,
        "nginx_version": ns.nginx_version,
        "static_root": ns.static_root,
        "allow": ns.allow,
        "access_log": ns.access_log,
        "acme_root": ns.acme_root,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    if ns.no_rate_limit:
        data["rate_limit"] = None
    if ns.ssl_cert or ns.ssl_key:
        if not (ns.ssl_cert and ns.ssl_key):
            raise SpecError("--ssl-cert and --ssl-key go together")
        data["tls"] = {"cert": ns.ssl_cert, "key": ns.ssl_key, "chain": ns.ssl_chain}
    spec = SiteSpec.from_mapping(data, base_dir=base)
    gw = None
    if gw_path:
        path = Path(gw_path)
        if base is not None and not ns.gateway_config and not path.is_absolute():
            path = base / path
        gw = GatewaySettings.from_yaml(path)
        spec = spec.with_gateway(gw)
    if ns.gateway:
        spec = replace(spec, gateway=tuple(ns.gateway))
    if ns.ssl_chain and not ns.ssl_cert and spec.tls is not None:
        spec = replace(spec, tls=TLS(spec.tls.cert, spec.tls.key, ns.ssl_chain))
    return spec, gw


def _warn(spec: SiteSpec, gw: GatewaySettings | None) -> None:
    for w in gateway_warnings(spec, gw) if gw else ():
        print(f"nginxgen: warning: {w}", file=sys.stderr)


def cmd_show(ns: argparse.Namespace) -> int:
    spec, gw = _spec(ns)
    _warn(spec, gw)
    sys.stdout.write(render(spec))
    return 0


def _gixy_for(ns: argparse.Namespace) -> tuple[str | None, str | None]:
    """(gixy-ng executable or None, the sentence to print when it is not used)."""
    if ns.no_gixy:
        return None, None
    if ns.gixy and not gixy.runnable(ns.gixy):
        raise FileNotFoundError(f"--gixy {ns.gixy}: not an executable file")
    found = gixy.find(ns.gixy)
    if found:
        return found, None
    return None, (
        f"gixy-ng: not available (looked for {gixy.looked_for(ns.gixy)}); "
        "only nginxgen's own rules ran (install it in its own venv: python3 -m venv "
        f"{Path(gixy.VENV).parents[1]} && {Path(gixy.VENV).parent}/pip install gixy-ng)"
    )


def cmd_lint(ns: argparse.Namespace) -> int:
    if not Path(ns.file).is_file():
        raise FileNotFoundError(f"{ns.file}: no such file")
    if ns.conf_dir and not Path(ns.conf_dir).is_dir():
        raise FileNotFoundError(f"--conf-dir {ns.conf_dir}: no such directory")
    gw = GatewaySettings.from_yaml(ns.gateway_config) if ns.gateway_config else None
    version = parse_version(ns.nginx_version) if ns.nginx_version else (1, 22, 1)
    binary, missing = _gixy_for(ns)
    report = lint(
        ns.file,
        nginx_version=version,
        gateway=gw,
        conf_dir=ns.conf_dir,
        context=ns.context,
        gixy=binary,
    )
    note = report.gixy or missing
    if ns.json:
        json.dump([f.as_dict() for f in report.findings], sys.stdout, indent=2)
        sys.stdout.write("\n")
        if note:
            print(note, file=sys.stderr)
    else:
        for f in report.findings:
            print(f)
        if note:
            print(note)
        print(f"{len(report.findings)} finding(s) in {ns.file} ({report.context} context)")
    threshold = FAIL_LEVELS.index(ns.fail_on)
    failing = [f for f in report.findings if FAIL_LEVELS.index(f.severity) >= threshold]
    return 1 if failing else 0


FAIL_LEVELS = ("info", "warning", "error")  # ascending severity


def cmd_write(ns: argparse.Namespace) -> int:
    spec, gw = _spec(ns)
    _warn(spec, gw)
    text = render(spec)
    # NG33 is about the gateway's YAML, already printed as a warning above.
    problems = [
        f for f in lint_text(text, nginx_version=spec.nginx_version, gateway=gw) if f.rule != "NG33"
    ]
    if problems:  # a bug in nginxgen, never the user's: refuse to install it
        for f in problems:
            print(f, file=sys.stderr)
        return 2
    nginx = Nginx(ns.nginx, ns.nginx_prefix, ns.nginx_conf)
    try:
        res = install(text, ns.dest, enable=ns.enable, test=ns.test, reload=ns.reload, nginx=nginx)
    except DeployError as exc:
        print(f"nginxgen: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {res.dest}" + (f" (previous kept as {res.backup})" if res.backup else ""))
    if res.link:
        print(f"enabled {res.link} -> {res.dest}")
    if res.test_output:
        print(res.test_output)
    if res.reloaded_with:
        print(f"reloaded ({res.reloaded_with})")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nginxgen", description=(_pkg_doc or "").splitlines()[0])
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__} (qwengw)")
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", aliases=["render"], help="print the site to stdout")
    _site_flags(show)
    show.set_defaults(func=cmd_show)
    lint = sub.add_parser("lint", help="lint any nginx config; exit 1 on findings")
    lint.add_argument("file", help="the config to lint: a site, a snippet or a whole nginx.conf")
    lint.add_argument(
        "--json", action="store_true", help="findings as a JSON list (default: one line each)"
    )
    lint.add_argument(
        "--nginx-version",
        metavar="X.Y.Z",
        help="the nginx the rules assume (default: 1.22.1, Debian 12's)",
    )
    lint.add_argument("--gateway-config", metavar="FILE", help="check agreement with it")
    lint.add_argument(
        "--conf-dir",
        metavar="DIR",
        help="nginx's conf prefix for relative includes (default: the nearest directory at "
        "or above the file that holds an nginx.conf)",
    )
    lint.add_argument(
        "--context",
        choices=("main", "http", "server", "location"),
        help="where nginx reads the file (default: detected from its directives)",
    )
    lint.add_argument(
        "--gixy",
        metavar="PATH",
        help=f"gixy-ng executable (default: ${gixy.ENV}, gixy on PATH, {gixy.VENV})",
    )
    lint.add_argument("--no-gixy", action="store_true", help="do not run gixy-ng")
    lint.add_argument(
        "--fail-on",
        choices=FAIL_LEVELS,
        default="info",
        help="exit 1 only for findings of this severity or above (default: info, i.e. any "
        "finding); every finding is printed either way",
    )
    lint.set_defaults(func=cmd_lint)
    write = sub.add_parser("write", help="install the site (atomic, backup, nginx -t)")
    _site_flags(write)
    w = write.add_argument_group("installing")
    w.add_argument(
        "--dest",
        required=True,
        metavar="PATH",
        help="the site file, e.g. /etc/nginx/sites-available/qwen3-prod (the old one is kept "
        "as PATH.bak)",
    )
    w.add_argument("--enable", action="store_true", help="link it from ../sites-enabled/")
    w.add_argument(
        "--test",
        action="store_true",
        help="nginx -t, and check that nginx.conf includes the site; restore on failure",
    )
    w.add_argument("--reload", action="store_true", help="reload nginx afterwards")
    w.add_argument(
        "--nginx",
        default="/usr/sbin/nginx",
        metavar="PATH",
        help="nginx binary (default: %(default)s)",
    )
    w.add_argument(
        "--nginx-prefix", metavar="DIR", help="nginx -p (default: nginx's own, e.g. for tests)"
    )
    w.add_argument(
        "--nginx-conf", metavar="FILE", help="nginx -c (default: nginx's own /etc/nginx/nginx.conf)"
    )
    write.set_defaults(func=cmd_write)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (SpecError, ConfigError, OSError, yaml.YAMLError) as exc:
        print(f"nginxgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
