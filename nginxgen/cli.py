"""``nginxgen show|lint|write``: flags map 1:1 onto SiteSpec fields (or a --site YAML)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from . import __doc__ as _pkg_doc
from . import gixy
from .build import render
from .deploy import DeployError, Nginx, install
from .lint import lint, lint_text
from .model import TLS, GatewaySettings, SiteSpec, SpecError, gateway_warnings, parse_version


def _site_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("site description (flags override --site)")
    g.add_argument("--site", metavar="FILE", help="YAML site description")
    g.add_argument("--server-name", action="append", metavar="NAME", help="repeatable")
    g.add_argument("--ssl-cert", metavar="PATH")
    g.add_argument("--ssl-key", metavar="PATH")
    g.add_argument("--ssl-chain", metavar="PATH", help="enables OCSP stapling (non-LE certs)")
    g.add_argument("--ui", action="append", metavar="HOST:PORT", help="chat UI (repeatable)")
    g.add_argument("--gateway", action="append", metavar="HOST:PORT", help="repeatable")
    g.add_argument("--http-port", type=int)
    g.add_argument("--https-port", type=int)
    g.add_argument("--listen-address", action="append", metavar="ADDR", help="repeatable")
    g.add_argument("--nginx-version", metavar="X.Y.Z", help="target nginx (default 1.22.1)")
    g.add_argument("--gateway-config", metavar="FILE", help="the gateway's YAML")
    g.add_argument("--static-root", metavar="DIR")
    g.add_argument("--allow", action="append", metavar="CIDR", help="/v1/ allowlist")
    g.add_argument("--no-rate-limit", action="store_true", help="no nginx-level limit_req")
    g.add_argument("--access-log", metavar="PATH")
    g.add_argument("--acme-root", metavar="DIR")


def _spec(ns: argparse.Namespace) -> tuple[SiteSpec, GatewaySettings | None]:
    data: dict[str, Any] = {}
    base = None
    if ns.site:
        data = yaml.safe_load(Path(ns.site).read_text(encoding="utf-8")) or {}
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
    return 1 if report.findings else 0


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
    sub = p.add_subparsers(dest="command", required=True)
    show = sub.add_parser("show", aliases=["render"], help="print the site to stdout")
    _site_flags(show)
    show.set_defaults(func=cmd_show)
    lint = sub.add_parser("lint", help="lint any nginx config; exit 1 on findings")
    lint.add_argument("file")
    lint.add_argument("--json", action="store_true")
    lint.add_argument("--nginx-version", metavar="X.Y.Z")
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
    lint.set_defaults(func=cmd_lint)
    write = sub.add_parser("write", help="install the site (atomic, backup, nginx -t)")
    _site_flags(write)
    write.add_argument("--dest", required=True, help="e.g. /etc/nginx/sites-available/qwen3-prod")
    write.add_argument("--enable", action="store_true", help="link it from ../sites-enabled/")
    write.add_argument("--test", action="store_true", help="nginx -t; restore on failure")
    write.add_argument("--reload", action="store_true", help="reload nginx afterwards")
    write.add_argument("--nginx", default="/usr/sbin/nginx", help="nginx binary")
    write.add_argument("--nginx-prefix", help="nginx -p (tests)")
    write.add_argument("--nginx-conf", help="nginx -c (tests)")
    write.set_defaults(func=cmd_write)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    try:
        return int(ns.func(ns))
    except (SpecError, OSError, yaml.YAMLError) as exc:
        print(f"nginxgen: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
