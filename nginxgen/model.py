"""The site description: small frozen dataclasses, validated once, shared by build and lint.

Nothing here knows about crossplane or files other than the YAML it is asked to read. The
gateway's YAML is read and validated by the gateway's own loader (``qwengw.config``, pure
Python), so that nginxgen and ``qwengw check-config`` accept and reject the same files with the
same messages, and the edge and the gateway agree on body size, timeouts, port and trusted
proxies from one source of truth.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from qwengw.config import Settings, load_settings, settings_from_dict

LE_LIVE = "/etc/letsencrypt/live"
DEFAULT_UI = "127.0.0.1:8080"
DEFAULT_GATEWAY = "127.0.0.1:18789"
DEFAULT_BODY_BYTES = 1048576  # the gateway's request.max_body_bytes default
MIN_STREAM_TIMEOUT = 300  # seconds; also NG09's floor when no gateway config is known

# A CSP a chat SPA can live with: no inline/eval scripts (model output is untrusted input to
# the page), inline styles allowed for UI libraries, same-origin fetch/SSE/websocket.
DEFAULT_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "media-src 'self' blob:; worker-src 'self' blob:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'; upgrade-insecure-requests"
)
DEFAULT_PERMISSIONS = "camera=(), microphone=(self), geolocation=(), payment=(), usb=()"

_NAME_RE = re.compile(r"^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9-]{1,63})*\.?$")
_HOSTPORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+|unix:/\S+):?(\d{1,5})?$")
_RATE_RE = re.compile(r"^\d+r/[sm]$")
_SIZE_RE = re.compile(r"^(\d+)([kKmMgG]?)$")


class SpecError(ValueError):
    """A site description that cannot produce a correct site."""


def parse_version(text: str | tuple[int, ...]) -> tuple[int, int, int]:
    """'1.22' or '1.25.1' → (1, 25, 1)."""
    if isinstance(text, tuple):
        parts = list(text)
    else:
        try:
            parts = [int(p) for p in str(text).strip().split(".")]
        except ValueError as exc:
            raise SpecError(f"bad nginx version {text!r}") from exc
    if not 2 <= len(parts) <= 3:
        raise SpecError(f"bad nginx version {text!r}")
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def version_text(version: tuple[int, int, int]) -> str:
    """(1, 25, 1) → '1.25.1'."""
    return ".".join(map(str, version))


def parse_size(value: int | str) -> int:
    """'25m' / '512k' / 1048576 → bytes (nginx size units)."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value).strip())
    if not m:
        raise SpecError(f"bad size {value!r} (use bytes or k/m/g)")
    mult = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[m.group(2).lower()]
    return int(m.group(1)) * mult


def check_hostport(value: str, what: str) -> str:
    if not _HOSTPORT_RE.match(value) or (":" not in value and not value.startswith("unix:")):
        raise SpecError(f"{what}: expected HOST:PORT, got {value!r}")
    return value


@dataclass(frozen=True)
class TLS:
    """Certificate paths and OCSP stapling.

    Stapling defaults to on when a chain is given, except for Let's Encrypt certificates:
    LE shut its OCSP responders down in 2025, so stapling there only produces warnings.
    Stapling needs a resolver nginx can reach; a local one (127.0.0.1) by default.
    """

    cert: str
    key: str
    chain: str | None = None
    stapling: bool | None = None
    resolver: str = "127.0.0.1"

    def __post_init__(self) -> None:
        if not self.cert or not self.key:
            raise SpecError("tls: cert and key are required")
        if self.stapling is None:
            auto = bool(self.chain) and not self.cert.startswith(LE_LIVE + "/")
            object.__setattr__(self, "stapling", auto)
        if self.stapling and not self.chain:
            raise SpecError("tls: stapling needs a chain (ssl_trusted_certificate)")

    @classmethod
    def letsencrypt(cls, name: str) -> TLS:
        base = f"{LE_LIVE}/{name}"
        return cls(f"{base}/fullchain.pem", f"{base}/privkey.pem", f"{base}/chain.pem")


@dataclass(frozen=True)
class Headers:
    """Security headers sent on every response (``always``) from every location."""

    hsts_max_age: int = 63072000
    hsts_include_subdomains: bool = True
    hsts_preload: bool = False
    csp: str = DEFAULT_CSP
    csp_report_only: bool = False
    referrer_policy: str = "strict-origin-when-cross-origin"
    permissions_policy: str = DEFAULT_PERMISSIONS
    frame_options: str = "DENY"

    def __post_init__(self) -> None:
        if self.hsts_max_age < 31536000:
            raise SpecError("headers.hsts_max_age must be at least 31536000 (one year)")
        if self.hsts_preload and not self.hsts_include_subdomains:
            raise SpecError("headers.hsts_preload requires hsts_include_subdomains")
        if self.frame_options.upper() not in ("DENY", "SAMEORIGIN"):
            raise SpecError("headers.frame_options must be DENY or SAMEORIGIN")
        for name in ("csp", "referrer_policy", "permissions_policy"):
            value = getattr(self, name)
            if any(c in value for c in "\r\n\\") or value.startswith("#"):
                raise SpecError(f"headers.{name}: no newlines, backslashes or leading '#'")


@dataclass(frozen=True)
class RateLimit:
    """Per-client-IP request rate and concurrent-connection (open stream) caps on /v1/."""

    rate: str = "10r/s"
    burst: int = 20
    connections: int = 20

    def __post_init__(self) -> None:
        if not _RATE_RE.match(self.rate):
            raise SpecError(f"rate_limit.rate: expected like '10r/s', got {self.rate!r}")
        if self.burst < 0 or self.connections < 1:
            raise SpecError("rate_limit: burst >= 0 and connections >= 1")


@dataclass(frozen=True)
class GatewaySettings:
    """What nginx must agree on with the gateway; defaults are the gateway's own defaults."""

    listen: str = DEFAULT_GATEWAY
    max_body_bytes: int = DEFAULT_BODY_BYTES
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    connect_timeout: float = 3.0
    trusted_proxies: tuple[str, ...] = ()

    @property
    def upstream(self) -> str:
        """The address nginx connects to (':18789' means all interfaces → loopback)."""
        host, _, port = self.listen.rpartition(":")
        if host in ("", "0.0.0.0", "*"):
            host = "127.0.0.1"
        elif host in ("::", "[::]"):
            host = "[::1]"
        return f"{host}:{port}"

    @property
    def read_timeout(self) -> int:
        """Longer than any pause the gateway itself tolerates, and never under 300 s."""
        return max(MIN_STREAM_TIMEOUT, int(max(self.first_token_timeout, self.idle_timeout)) + 30)

    def trusts(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        for entry in self.trusted_proxies:
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewaySettings:
        return cls(
            listen=settings.listen,
            max_body_bytes=settings.request.max_body_bytes,
            first_token_timeout=settings.upstream.first_token_timeout,
            idle_timeout=settings.upstream.idle_timeout,
            connect_timeout=settings.upstream.connect_timeout,
            trusted_proxies=tuple(str(net) for net in settings.whitelist.trusted_proxies),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None) -> GatewaySettings:
        """From a parsed gateway config; ``qwengw.config.ConfigError`` as qwengw would say."""
        return cls.from_settings(settings_from_dict(dict(data or {})))

    @classmethod
    def from_yaml(cls, path: str | Path) -> GatewaySettings:
        """From the gateway's config file, read and checked by qwengw's own loader."""
        return cls.from_settings(load_settings(Path(path)))


@dataclass(frozen=True)
class SiteSpec:
    """Everything that varies between deployments of the hardened site."""

    server_names: tuple[str, ...]
    tls: TLS | None = None  # None → Let's Encrypt layout for the first name
    ui: tuple[str, ...] = (DEFAULT_UI,)
    gateway: tuple[str, ...] = (DEFAULT_GATEWAY,)
    static_root: str | None = None
    headers: Headers = field(default_factory=Headers)
    allow: tuple[str, ...] = ()  # /v1/ client allowlist (CIDRs); empty = everyone
    rate_limit: RateLimit | None = field(default_factory=RateLimit)
    nginx_version: tuple[int, int, int] = (1, 22, 1)
    http_port: int = 80
    https_port: int = 443
    listen_addresses: tuple[str, ...] = ()  # () → all IPv4 and IPv6 addresses
    client_max_body_size: int = DEFAULT_BODY_BYTES
    read_timeout: int = MIN_STREAM_TIMEOUT
    connect_timeout: int = 5
    keepalive: int = 16
    acme_root: str = "/var/www/_letsencrypt"
    access_log: str = "/var/log/nginx/qwengw.access.log"
    ui_upstream_name: str = "qwengw_ui"
    gateway_upstream_name: str = "qwengw_gateway"

    def __post_init__(self) -> None:
        if isinstance(self.server_names, str):
            object.__setattr__(self, "server_names", (self.server_names,))
        if not self.server_names:
            raise SpecError("at least one server_name is required")
        for name in self.server_names:
            if not _NAME_RE.match(name):
                raise SpecError(f"bad server_name {name!r}")
        if self.tls is None:
            object.__setattr__(self, "tls", TLS.letsencrypt(self.server_names[0].lstrip("*.")))
        if not self.ui or not self.gateway:
            raise SpecError("ui and gateway need at least one HOST:PORT each")
        for hp in self.ui:
            check_hostport(hp, "ui")
        for hp in self.gateway:
            check_hostport(hp, "gateway")
        for cidr in self.allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise SpecError(f"allow: bad address or CIDR {cidr!r}") from exc
        for port in (self.http_port, self.https_port):
            if not 1 <= port <= 65535:
                raise SpecError(f"bad port {port}")
        if self.http_port == self.https_port:
            raise SpecError("http_port and https_port must differ")
        if self.client_max_body_size < 1:
            raise SpecError("client_max_body_size must be positive")
        if self.read_timeout < MIN_STREAM_TIMEOUT:
            raise SpecError(f"read_timeout must be at least {MIN_STREAM_TIMEOUT} s for streaming")
        if self.static_root is not None and not self.static_root.startswith("/"):
            raise SpecError("static_root must be an absolute path")
        if self.static_root in ("/",):
            raise SpecError("static_root '/' would expose the whole filesystem")

    @property
    def http2_directive(self) -> bool:
        """`http2 on;` exists from 1.25.1; before that only `listen ... http2` works."""
        return self.nginx_version >= (1, 25, 1)

    def with_gateway(self, gw: GatewaySettings) -> SiteSpec:
        """Take port, body size and timeouts from the gateway's own configuration."""
        return replace(
            self,
            gateway=(gw.upstream,),
            client_max_body_size=gw.max_body_bytes,
            read_timeout=max(self.read_timeout, gw.read_timeout),
            connect_timeout=max(1, int(round(gw.connect_timeout)) + 2),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base_dir: Path | None = None) -> SiteSpec:
        """Build from the YAML description (keys = field names; a few friendly aliases)."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        aliases = {"server_name": "server_names", "body_size": "client_max_body_size"}
        kw: dict[str, Any] = {}
        gateway_config = data.pop("gateway_config", None)
        for key, value in data.items():
            key = aliases.get(key, key)
            if key not in known:
                raise SpecError(f"unknown key {key!r} in site description")
            kw[key] = value
        for key in ("server_names", "ui", "gateway", "allow", "listen_addresses"):
            if key in kw and isinstance(kw[key], str):
                kw[key] = (kw[key],)
            elif key in kw:
                kw[key] = tuple(str(v) for v in kw[key])
        if "tls" in kw and isinstance(kw["tls"], Mapping):
            kw["tls"] = TLS(**kw["tls"])
        if "headers" in kw:
            kw["headers"] = Headers(**(kw["headers"] or {}))
        if "rate_limit" in kw and kw["rate_limit"] is not None:
            rl = kw["rate_limit"]
            kw["rate_limit"] = RateLimit(**rl) if isinstance(rl, Mapping) else RateLimit()
        if "nginx_version" in kw:
            kw["nginx_version"] = parse_version(str(kw["nginx_version"]))
        if "client_max_body_size" in kw:
            kw["client_max_body_size"] = parse_size(kw["client_max_body_size"])
        if not kw.get("server_names"):
            raise SpecError("at least one server_name is required (--server-name NAME)")
        spec = cls(**kw)
        if gateway_config:
            path = Path(gateway_config)
            if base_dir is not None and not path.is_absolute():
                path = base_dir / path
            spec = spec.with_gateway(GatewaySettings.from_yaml(path))
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> SiteSpec:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping):
            raise SpecError(f"{path}: expected a mapping at the top level")
        return cls.from_mapping(data, base_dir=path.parent)


def gateway_warnings(spec: SiteSpec, gw: GatewaySettings) -> list[str]:
    """Disagreements that would make the gateway see nginx, not the client."""
    warnings = []
    for hp in spec.gateway:
        host = hp.rpartition(":")[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        source = "127.0.0.1" if ip.is_loopback and ip.version == 4 else str(ip)
        if ip.is_loopback and ip.version == 6:
            source = "::1"
        if not ip.is_loopback:
            continue  # the source address on a routed network is not knowable here
        if not gw.trusts(source):
            warnings.append(
                f"gateway whitelist.trusted_proxies {list(gw.trusted_proxies)} does not include "
                f"{source}: the gateway will ignore X-Forwarded-For/X-Request-Id from nginx and "
                f"see every client as {source}; add '{source}' to whitelist.trusted_proxies"
            )
    return warnings
