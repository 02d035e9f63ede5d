"""Configuration: YAML (or a dict) validated once at load into frozen dataclasses.

This is the only module that reads configuration. Every problem is collected and reported per
key (``auth.valid_keys[1]: expected a string``) so that one run of ``qwengw check-config`` shows
everything that is wrong. Unknown keys are errors: a typo must not silently disable a control.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

CONFIG_ENV = "QWENGW_CONFIG"


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists one message per key."""

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = problems
        self.source = source
        super().__init__(f"{source} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class ApiKey:
    """One caller. Only the SHA-256 of the key is kept; ``id`` is the identity in logs/limits."""

    id: str
    sha256: str = field(repr=False)
    rate_limit: str | None = None  # a limits string such as "60/minute"
    max_concurrent: int | None = None


@dataclass(frozen=True)
class AuthSettings:
    enabled: bool = False
    header_key: str = "X-Api-Key"
    keys: tuple[ApiKey, ...] = ()
    plain_key_count: int = 0  # how many came from the legacy plain `valid_keys` list
    keys_file: str | None = None
    user_header: str | None = None
    max_failures: int = 10  # failed attempts per client IP ...
    failure_window_seconds: int = 60  # ... per this window


@dataclass(frozen=True)
class WhitelistSettings:
    enabled: bool = False
    ips: tuple[IPNetwork, ...] = ()
    trusted_proxies: tuple[IPNetwork, ...] = ()


@dataclass(frozen=True)
class RateLimitSettings:
    enabled: bool = False
    max_requests: int = 30
    window_seconds: int = 60
    storage: str = "memory://"
    on_storage_error: str = "closed"  # closed → 503; open → let the request through
    max_concurrent: int | None = None  # default in-flight cap per key (per IP when auth is off)


@dataclass(frozen=True)
class RequestSettings:
    max_prompt_chars: int = 32768  # every character the model reads (see translate/native.py)
    max_body_bytes: int = 1024 * 1024
    max_messages: int = 4096
    max_tools: int = 256
    max_stop: int = 16  # stop strings / stop_sequences
    max_inputs: int = 2048  # embedding inputs per request (OpenAI's own limit)


@dataclass(frozen=True)
class ClientSettings:
    """How long the gateway waits on one client, and how many connections one may hold.

    Request headers are bounded by gunicorn's keep-alive timer (5 s, see gunicorn_conf.py).
    """

    body_timeout: float = 30.0  # whole request body, from the end of the headers → 408
    send_timeout: float = 60.0  # one write to the client blocked this long → cancelled (499)
    max_connections: int = 250  # open connections per client address per worker; 0 = no cap


@dataclass(frozen=True)
class AuditSettings:
    enabled: bool = True
    path: str = "-"
    housekeeping: bool = False  # also log /health, /ready and /metrics (refusals always are)


@dataclass(frozen=True)
class UpstreamSettings:
    connect_timeout: float = 3.0
    first_token_timeout: float = 120.0
    idle_timeout: float = 60.0
    failure_threshold: int = 5
    open_seconds: float = 30.0
    pool_size: int = 256


@dataclass(frozen=True)
class MetricsSettings:
    enabled: bool = True


@dataclass(frozen=True)
class Settings:
    listen_host: str = "127.0.0.1"
    listen_port: int = 18789
    ollama_urls: tuple[str, ...] = ("http://127.0.0.1:11434",)
    log_level: str = "info"
    workers: int = 2
    models: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    auth: AuthSettings = AuthSettings()
    whitelist: WhitelistSettings = WhitelistSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    request: RequestSettings = RequestSettings()
    client: ClientSettings = ClientSettings()
    audit: AuditSettings = AuditSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    metrics: MetricsSettings = MetricsSettings()

    @property
    def listen(self) -> str:
        host = f"[{self.listen_host}]" if ":" in self.listen_host else self.listen_host
        return f"{host}:{self.listen_port}"


# --------------------------------------------------------------------------- validation helpers


class _Checker:
    """Collects problems while reading a nested dict; each read names its key path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def section(self, data: Any, path: str, allowed: set[str]) -> dict[str, Any]:
        if data is None:
            return {}
        if not isinstance(data, dict):
            self.problems.append(f"{path or '(top level)'}: expected a mapping, got {_kind(data)}")
            return {}
        for key in data:
            if key not in allowed:
                where = f"{path}.{key}" if path else str(key)
                self.problems.append(
                    f"{where}: unknown key (allowed: {', '.join(sorted(allowed))})"
                )
        return data

    def get(
        self,
        data: dict[str, Any],
        path: str,
        key: str,
        kind: type | tuple[type, ...],
        default: Any,
        check: Callable[[Any], str | None] | None = None,
    ) -> Any:
        where = f"{path}.{key}" if path else key
        if key not in data or data[key] is None:
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; never accept it where a number is meant, and vice versa.
        if isinstance(value, bool) and bool not in kinds:
            self.problems.append(f"{where}: expected {_names(kinds)}, got a boolean")
            return default
        if not isinstance(value, kinds):
            self.problems.append(f"{where}: expected {_names(kinds)}, got {_kind(value)}")
            return default
        if check is not None:
            msg = check(value)
            if msg:
                self.problems.append(f"{where}: {msg}")
                return default
        if float in kinds and isinstance(value, int):
            return float(value)
        return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _names(kinds: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        str: "a string",
        bool: "true or false",
        list: "a list",
        dict: "a mapping",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds if not (k is int and float in kinds))


def _positive(value: Any) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"  # YAML's .inf / .nan
    return None if value > 0 else "must be greater than 0"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def parse_listen(value: str) -> tuple[str, int]:
    """``":18789"`` → all interfaces; ``"127.0.0.1:18789"``; ``"[::1]:18789"``."""
    m = re.fullmatch(r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", value)
    if not m:
        raise ValueError("expected HOST:PORT, :PORT or [IPv6]:PORT")
    port = int(m.group("port"))
    if not 0 < port < 65536:
        raise ValueError("port must be between 1 and 65535")
    host = m.group("v6") or m.group("host") or "0.0.0.0"
    return host, port


def _check_url(value: str) -> str | None:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "expected an http:// or https:// URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "expected an http:// or https:// URL"
    if parts.username or parts.password or parts.query or parts.fragment:
        # Never honoured, and a URL with credentials would end up in logs.
        return "credentials, query strings and fragments are not supported (scheme://host:port)"
    if parts.path not in ("", "/"):
        return "a path prefix is not supported; give scheme://host:port only"
    return None


def _networks(ck: _Checker, data: dict[str, Any], path: str, key: str) -> tuple[IPNetwork, ...]:
    raw = ck.get(data, path, key, list, [])
    nets: list[IPNetwork] = []
    for i, item in enumerate(raw):
        try:
            nets.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            ck.problems.append(f"{path}.{key}[{i}]: {item!r} is not an IP address or CIDR")
    return tuple(nets)


def _limit_string(value: str) -> str | None:
    from limits import parse_many

    try:
        parse_many(value)
    except ValueError:
        return f"{value!r} is not a rate such as '60/minute' or '10/second'"
    return None


_SHA256 = re.compile(r"[0-9a-f]{64}")


def hash_key(key: str) -> str:
    """SHA-256 hex of an API key, the form keys are stored in."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def _keys(ck: _Checker, entries: Any, path: str) -> list[ApiKey]:
    if not isinstance(entries, list):
        ck.problems.append(f"{path}: expected a list, got {_kind(entries)}")
        return []
    keys = []
    for i, entry in enumerate(entries):
        where = f"{path}[{i}]"
        e = ck.section(entry, where, {"id", "sha256", "rate_limit", "max_concurrent"})
        if not isinstance(entry, dict):
            continue
        key_id = ck.get(e, where, "id", str, None)
        digest = ck.get(e, where, "sha256", str, None)
        if not key_id:
            ck.problems.append(f"{where}.id: required")
        if digest is None or not _SHA256.fullmatch(digest.lower()):
            ck.problems.append(f"{where}.sha256: required, 64 hex characters (qwengw hash-key)")
            continue
        rate = ck.get(e, where, "rate_limit", str, None, _limit_string)
        conc = ck.get(e, where, "max_concurrent", int, None, _positive)
        if key_id:
            keys.append(ApiKey(key_id, digest.lower(), rate, conc))
    return keys


# --------------------------------------------------------------------------- sections


def _auth(ck: _Checker, raw: Any, base_dir: Path) -> AuthSettings:
    p = "auth"
    d = ck.section(
        raw,
        p,
        {
            "enabled",
            "header_key",
            "valid_keys",
            "keys",
            "keys_file",
            "user_header",
            "max_failures",
            "failure_window_seconds",
        },
    )
    problems_before = len(ck.problems)
    enabled = ck.get(d, p, "enabled", bool, False)
    plain = ck.get(d, p, "valid_keys", list, [])
    keys: list[ApiKey] = []
    for i, k in enumerate(plain):
        if not isinstance(k, str) or not k:
            ck.problems.append(f"{p}.valid_keys[{i}]: expected a non-empty string")
            continue
        # Plain keys get an id derived from their hash, so logs never show the key itself.
        keys.append(ApiKey(f"key-{hash_key(k)[:8]}", hash_key(k)))
    plain_count = len(keys)
    if "keys" in d and d["keys"] is not None:
        keys.extend(_keys(ck, d["keys"], f"{p}.keys"))
    keys_file = ck.get(d, p, "keys_file", str, None)
    if keys_file:
        kpath = Path(keys_file) if Path(keys_file).is_absolute() else base_dir / keys_file
        try:
            loaded = yaml.safe_load(kpath.read_text(encoding="utf-8"))
        except OSError as exc:
            ck.problems.append(f"{p}.keys_file: cannot read {kpath}: {exc.strerror}")
        except yaml.YAMLError as exc:
            ck.problems.append(f"{p}.keys_file: {kpath} is not valid YAML: {yaml_problem(exc)}")
        else:
            if isinstance(loaded, dict):
                ck.section(loaded, f"{p}.keys_file", {"keys"})
                loaded = loaded.get("keys", [])
            keys.extend(_keys(ck, loaded, f"{p}.keys_file"))
    ids = [k.id for k in keys]
    for dup in sorted({i for i in ids if ids.count(i) > 1}):
        ck.problems.append(f"{p}.keys: id {dup!r} is used more than once")
    if enabled and not keys and len(ck.problems) == problems_before:  # not when a key was bad
        ck.problems.append(
            f"{p}: enabled but no keys are configured (valid_keys, keys or keys_file)"
        )
    return AuthSettings(
        enabled=enabled,
        header_key=ck.get(d, p, "header_key", str, "X-Api-Key", _header_name),
        keys=tuple(keys),
        plain_key_count=plain_count,
        keys_file=keys_file,
        user_header=ck.get(d, p, "user_header", str, None, _header_name),
        max_failures=ck.get(d, p, "max_failures", int, 10, _positive),
        failure_window_seconds=ck.get(d, p, "failure_window_seconds", int, 60, _positive),
    )


def _header_name(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9-]+", value) else "not a valid HTTP header name"


def _whitelist(ck: _Checker, raw: Any) -> WhitelistSettings:
    p = "whitelist"
    d = ck.section(raw, p, {"enabled", "ips", "trusted_proxies"})
    enabled = ck.get(d, p, "enabled", bool, False)
    ips = _networks(ck, d, p, "ips")
    if enabled and not ips and d.get("ips") == []:
        ck.problems.append(f"{p}.ips: enabled with an empty list would reject every client")
    return WhitelistSettings(enabled, ips, _networks(ck, d, p, "trusted_proxies"))


def _storage_uri(value: str) -> str | None:
    scheme = value.split("://", 1)[0] if "://" in value else ""
    known = {
        "memory",
        "redis",
        "rediss",
        "redis+unix",
        "redis+sentinel",
        "redis+cluster",
        "valkey",
        "valkeys",
        "valkey+unix",
        "valkey+sentinel",
        "valkey+cluster",
    }
    if scheme not in known:
        return "expected memory:// or a redis:// (rediss://, redis+sentinel://, ...) URI"
    return None


def redact_uri(uri: str) -> str:
    """A storage URI fit for logs: no user name or password, no query string."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    netloc, slash, path = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{path.split('?', 1)[0]}"


_HOST_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<host>[^:]+)(?::(?P<port>\d+))?")


def storage_endpoints(uri: str) -> list[tuple[str, int] | str]:
    """Where a storage URI points: ``(host, port)`` pairs, or a Unix socket path.

    ``memory://`` points nowhere; sentinel and cluster URIs list several hosts.
    """
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme == "memory":
        return []
    if scheme.endswith("+unix"):
        return [urlsplit(uri).path]
    default_port = 26379 if scheme.endswith("+sentinel") else 6379
    out: list[tuple[str, int] | str] = []
    for hostport in rest.partition("/")[0].rpartition("@")[2].split(","):
        m = _HOST_PORT.fullmatch(hostport)
        if m:
            host = m.group("v6") or m.group("host")
            port = m.group("p6") or m.group("port")
            out.append((host, int(port) if port else default_port))
    return out


def _rate_limit(ck: _Checker, raw: Any) -> RateLimitSettings:
    p = "rate_limit"
    d = ck.section(
        raw,
        p,
        {
            "enabled",
            "max_requests",
            "window_seconds",
            "storage",
            "on_storage_error",
            "max_concurrent",
        },
    )
    return RateLimitSettings(
        enabled=ck.get(d, p, "enabled", bool, False),
        max_requests=ck.get(d, p, "max_requests", int, 30, _positive),
        window_seconds=ck.get(d, p, "window_seconds", int, 60, _positive),
        storage=ck.get(d, p, "storage", str, "memory://", _storage_uri),
        on_storage_error=ck.get(
            d,
            p,
            "on_storage_error",
            str,
            "closed",
            lambda v: None if v in ("open", "closed") else "expected 'open' or 'closed'",
        ),
        max_concurrent=ck.get(d, p, "max_concurrent", int, None, _positive),
    )


def _request(ck: _Checker, raw: Any) -> RequestSettings:
    p = "request"
    defaults = RequestSettings()
    names = [f.name for f in fields(RequestSettings)]
    d = ck.section(raw, p, set(names))
    return RequestSettings(
        **{n: ck.get(d, p, n, int, getattr(defaults, n), _positive) for n in names}
    )


def _client(ck: _Checker, raw: Any) -> ClientSettings:
    p = "client"
    d = ck.section(raw, p, {"body_timeout", "send_timeout", "max_connections"})
    num = (int, float)
    return ClientSettings(
        body_timeout=ck.get(d, p, "body_timeout", num, 30.0, _positive),
        send_timeout=ck.get(d, p, "send_timeout", num, 60.0, _positive),
        max_connections=ck.get(d, p, "max_connections", int, 250, _non_negative),
    )


def _audit(ck: _Checker, raw: Any) -> AuditSettings:
    p = "audit"
    d = ck.section(raw, p, {"enabled", "path", "housekeeping"})
    return AuditSettings(
        enabled=ck.get(d, p, "enabled", bool, True),
        path=ck.get(d, p, "path", str, "-", lambda v: None if v else "must not be empty"),
        housekeeping=ck.get(d, p, "housekeeping", bool, False),
    )


def _upstream(ck: _Checker, raw: Any) -> UpstreamSettings:
    p = "upstream"
    d = ck.section(
        raw,
        p,
        {
            "connect_timeout",
            "first_token_timeout",
            "idle_timeout",
            "failure_threshold",
            "open_seconds",
            "pool_size",
        },
    )
    num = (int, float)
    return UpstreamSettings(
        connect_timeout=ck.get(d, p, "connect_timeout", num, 3.0, _positive),
        first_token_timeout=ck.get(d, p, "first_token_timeout", num, 120.0, _positive),
        idle_timeout=ck.get(d, p, "idle_timeout", num, 60.0, _positive),
        failure_threshold=ck.get(d, p, "failure_threshold", int, 5, _positive),
        open_seconds=ck.get(d, p, "open_seconds", num, 30.0, _positive),
        pool_size=ck.get(d, p, "pool_size", int, 256, _positive),
    )


def _models(ck: _Checker, raw: Any) -> Mapping[str, str]:
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        ck.problems.append(
            f"models: expected a mapping of public name → Ollama name, got {_kind(raw)}"
        )
        return MappingProxyType({})
    out: dict[str, str] = {}
    for public, upstream in raw.items():
        if (
            not isinstance(public, str)
            or not public
            or not isinstance(upstream, str)
            or not upstream
        ):
            ck.problems.append(
                f"models.{public}: expected a non-empty string (the Ollama model name)"
            )
            continue
        out[public] = upstream
    return MappingProxyType(out)


def _ollama_urls(ck: _Checker, raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, list) else [raw]
    urls: list[str] = []
    for i, item in enumerate(items):
        where = "ollama_api" if not isinstance(raw, list) else f"ollama_api[{i}]"
        if not isinstance(item, str):
            ck.problems.append(f"{where}: expected a URL string, got {_kind(item)}")
            continue
        msg = _check_url(item)
        if msg:
            ck.problems.append(f"{where}: {msg}")
            continue
        urls.append(item.rstrip("/"))
    if isinstance(raw, list) and not raw:
        ck.problems.append("ollama_api: the list is empty")
    return tuple(urls) or ("http://127.0.0.1:11434",)


TOP_LEVEL = {
    "listen",
    "ollama_api",
    "log_level",
    "workers",
    "models",
    "auth",
    "whitelist",
    "rate_limit",
    "request",
    "client",
    "audit",
    "upstream",
    "metrics",
}


def warnings(s: Settings, workers: int = 1) -> list[str]:
    """Valid but risky choices, said at start-up and by ``qwengw check-config``."""
    out = []
    if s.auth.plain_key_count:
        out.append(
            f"auth.valid_keys holds {s.auth.plain_key_count} plain-text key(s); store "
            "hashes instead (auth.keys with sha256 from `qwengw hash-key`)"
        )
    if s.rate_limit.enabled and s.rate_limit.storage.startswith("memory") and workers > 1:
        out.append(
            f"rate_limit.storage is memory:// with {workers} workers: limits are per "
            f"worker (up to {workers}x the configured rate); use redis:// for exact limits"
        )
    if not s.auth.enabled:
        out.append("auth is disabled: anyone who can reach the gateway can use the model")
    out += _placeholder_keys(s.auth.keys)
    if s.listen_host in ("0.0.0.0", "::"):
        out.append(
            f"listen {s.listen} accepts connections on every interface; behind Nginx on the "
            "same box use 127.0.0.1, and close the port in the firewall"
        )
    out += _audit_path_warnings(s.audit)
    return out


def _audit_path_warnings(audit: AuditSettings) -> list[str]:
    """Said before start-up, where serve would otherwise create the directory quietly (root)
    or fail on the first request (anyone else)."""
    if not audit.enabled or audit.path in ("-", ""):
        return []
    directory = Path(audit.path).expanduser().parent
    if not directory.is_dir():
        return [
            f"audit.path: the directory {directory} does not exist; start-up creates it when "
            "it may (root), else the audit log cannot be written"
        ]
    if not os.access(directory, os.W_OK):
        return [f"audit.path: this user cannot write in {directory}"]
    return []


def settings_from_dict(
    raw: Any, *, source: str = "configuration", base_dir: Path | None = None
) -> Settings:
    """Validate a parsed YAML document into ``Settings``; ``ConfigError`` lists every problem."""
    ck = _Checker()
    d = ck.section(raw if raw is not None else {}, "", TOP_LEVEL)
    host, port = "127.0.0.1", 18789
    if isinstance(d.get("listen"), int) and not isinstance(d.get("listen"), bool):
        ck.problems.append(f'listen: expected a quoted "HOST:PORT", e.g. "127.0.0.1:{d["listen"]}"')
        d = {k: v for k, v in d.items() if k != "listen"}
    listen = ck.get(d, "", "listen", str, None)
    if listen is not None:
        try:
            host, port = parse_listen(listen)
        except ValueError as exc:
            ck.problems.append(f"listen: {exc}")
    urls = (
        _ollama_urls(ck, d["ollama_api"])
        if d.get("ollama_api") is not None
        else ("http://127.0.0.1:11434",)
    )
    metrics_raw = ck.section(d.get("metrics"), "metrics", {"enabled"})
    settings = Settings(
        listen_host=host,
        listen_port=port,
        ollama_urls=urls,
        log_level=ck.get(
            d,
            "",
            "log_level",
            str,
            "info",
            lambda v: (
                None
                if v.lower() in ("debug", "info", "warning", "error", "critical")
                else "expected one of debug, info, warning, error, critical"
            ),
        ).lower(),
        workers=ck.get(d, "", "workers", int, 2, _positive),
        models=_models(ck, d.get("models")),
        auth=_auth(ck, d.get("auth"), base_dir or Path.cwd()),
        whitelist=_whitelist(ck, d.get("whitelist")),
        rate_limit=_rate_limit(ck, d.get("rate_limit")),
        request=_request(ck, d.get("request")),
        client=_client(ck, d.get("client")),
        audit=_audit(ck, d.get("audit")),
        upstream=_upstream(ck, d.get("upstream")),
        metrics=MetricsSettings(enabled=ck.get(metrics_raw, "metrics", "enabled", bool, True)),
    )
    if ck.problems:
        raise ConfigError(ck.problems, source)
    return settings


def load_settings(
    config: str | os.PathLike[str] | Mapping[str, Any] | Settings | None = None,
) -> Settings:
    """Settings from a path, a dict, a ready ``Settings``, or ``$QWENGW_CONFIG``, else defaults."""
    if isinstance(config, Settings):
        return config
    if isinstance(config, Mapping):
        return settings_from_dict(dict(config))
    if config is None:
        env_path = os.environ.get(CONFIG_ENV)
        if not env_path:
            return Settings()
        config = env_path
    path = Path(config)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror}"], str(path)) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {yaml_problem(exc)}"], str(path)) from None
    return settings_from_dict(raw, source=str(path), base_dir=path.parent)


def yaml_problem(exc: yaml.YAMLError) -> str:
    """``line 4, column 3: <what>``: PyYAML's own text names ``"<unicode string>"`` as the
    file, because it was given text; the caller says which file."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is None or not problem:
        return str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line != mark.line:
        where += f" ({context} started at line {context_mark.line + 1})"
    return where


def _placeholder_keys(keys: tuple[ApiKey, ...]) -> list[str]:
    # An example's "000…0" hash is valid hex, so it loads; no key ever hashes to it, and a
    # reader may believe the entry is a working key.
    return [
        f"auth key {k.id!r} has a placeholder sha256 ({k.sha256[:8]}…): no key matches it; "
        "put the output of `qwengw hash-key` there, or delete the entry"
        for k in keys
        if len(set(k.sha256)) == 1
    ]


# Environment variables that override the file (for service managers and tests). Each is
# checked like the key it overrides, and named in the message.
ENV_BIND = "QWENGW_BIND"
ENV_WORKERS = "QWENGW_WORKERS"
# Set by qwengw's gunicorn settings: the master has said the config warnings, so the workers
# (each of which loads the config again) do not repeat them.
ENV_WARNINGS_SAID = "QWENGW_WARNINGS_SAID"
ENV_INTS = {
    # name: (smallest allowed, what it is), the two gunicorn settings without a YAML key
    "QWENGW_GRACEFUL_TIMEOUT": (0, "seconds in-flight streams get on stop or reload"),
    "QWENGW_MAX_REQUESTS": (0, "requests a worker serves before it is replaced (0: never)"),
}


def apply_environment(settings: Settings, environ: Mapping[str, str] | None = None) -> Settings:
    """``settings`` with ``QWENGW_BIND`` / ``QWENGW_WORKERS`` applied, every ``QWENGW_*``
    number checked; ``ConfigError`` (source "the environment") names each bad variable."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    changes: dict[str, Any] = {}
    bind = env.get(ENV_BIND, "").strip()
    if bind:
        try:
            changes["listen_host"], changes["listen_port"] = parse_listen(bind)
        except ValueError as exc:
            problems.append(f"{ENV_BIND}={bind!r}: {exc} (it overrides listen)")
    workers = _env_int(env, ENV_WORKERS, 1, problems, "it overrides workers")
    if workers is not None:
        changes["workers"] = workers
    for name, (least, what) in ENV_INTS.items():
        _env_int(env, name, least, problems, what)
    if problems:
        raise ConfigError(problems, "the environment")
    return replace(settings, **changes) if changes else settings


def _env_int(
    env: Mapping[str, str], name: str, least: int, problems: list[str], what: str
) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name}={raw!r}: expected a whole number ({what})")
        return None
    if value < least:
        bound = "greater than 0" if least == 1 else f"{least} or more"  # as the YAML keys say
        problems.append(f"{name}={raw!r}: must be {bound} ({what})")
        return None
    return value
