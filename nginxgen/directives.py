"""Which directives exist, where they may appear, and which module brings them.

crossplane 0.5.8's table stops at nginx ~1.17. We add what came after, once at import time
(its ``register_external_directives()`` fails on Python 3, so the table is extended
directly), and name the common third-party modules so that their directives are told apart
from typos.
"""

from __future__ import annotations

import difflib

import crossplane.analyzer as _A

HTTP = _A.NGX_HTTP_MAIN_CONF | _A.NGX_HTTP_SRV_CONF
HTTP_LOC = HTTP | _A.NGX_HTTP_LOC_CONF
STREAM = _A.NGX_STREAM_MAIN_CONF | _A.NGX_STREAM_SRV_CONF
MAIL = _A.NGX_MAIL_MAIN_CONF | _A.NGX_MAIL_SRV_CONF

# Directives nginx gained after crossplane's table (the version is in the comment; NG19 gates
# the ones a target may lack).
MODERN: dict[str, list[int]] = {
    "auth_delay": [HTTP_LOC | _A.NGX_CONF_TAKE1],  # 1.17.10
    "ssl_ocsp": [HTTP | _A.NGX_CONF_TAKE1],  # 1.19.0
    "ssl_ocsp_cache": [HTTP | _A.NGX_CONF_TAKE1],
    "ssl_ocsp_responder": [HTTP | _A.NGX_CONF_TAKE1],
    "proxy_cookie_flags": [HTTP_LOC | _A.NGX_CONF_1MORE],  # 1.19.3
    "userid_flags": [HTTP_LOC | _A.NGX_CONF_1MORE],
    "ssl_conf_command": [  # 1.19.4
        HTTP | _A.NGX_CONF_TAKE2,
        STREAM | _A.NGX_CONF_TAKE2,
        MAIL | _A.NGX_CONF_TAKE2,
    ],
    "proxy_ssl_conf_command": [HTTP_LOC | _A.NGX_CONF_TAKE2, STREAM | _A.NGX_CONF_TAKE2],
    "grpc_ssl_conf_command": [HTTP_LOC | _A.NGX_CONF_TAKE2],
    "uwsgi_ssl_conf_command": [HTTP_LOC | _A.NGX_CONF_TAKE2],
    "ssl_reject_handshake": [HTTP | _A.NGX_CONF_FLAG, STREAM | _A.NGX_CONF_FLAG],
    "max_errors": [MAIL | _A.NGX_CONF_TAKE1],  # 1.19.7
    "keepalive_time": [  # 1.19.10
        HTTP_LOC | _A.NGX_CONF_TAKE1,
        _A.NGX_HTTP_UPS_CONF | _A.NGX_CONF_TAKE1,
    ],
    "mp4_start_key_frame": [_A.NGX_HTTP_LOC_CONF | _A.NGX_CONF_FLAG],  # 1.21.4
    "proxy_half_close": [STREAM | _A.NGX_CONF_FLAG],
    "ssl_alpn": [STREAM | _A.NGX_CONF_1MORE],
    "http3": [HTTP | _A.NGX_CONF_FLAG],  # 1.25.0 (with the http_v3 module)
    "http3_hq": [HTTP | _A.NGX_CONF_FLAG],
    "http3_max_concurrent_streams": [HTTP | _A.NGX_CONF_TAKE1],
    "http3_stream_buffer_size": [HTTP | _A.NGX_CONF_TAKE1],
    "quic_active_connection_id_limit": [HTTP | _A.NGX_CONF_TAKE1],
    "quic_bpf": [_A.NGX_MAIN_CONF | _A.NGX_DIRECT_CONF | _A.NGX_CONF_FLAG],
    "quic_gso": [HTTP | _A.NGX_CONF_FLAG],
    "quic_host_key": [HTTP | _A.NGX_CONF_TAKE1],
    "quic_retry": [HTTP | _A.NGX_CONF_FLAG],
    "http2": [HTTP | _A.NGX_CONF_FLAG],  # 1.25.1
    "pass": [_A.NGX_STREAM_SRV_CONF | _A.NGX_CONF_TAKE1],  # 1.25.5
    "ssl_certificate_cache": [HTTP_LOC | _A.NGX_CONF_TAKE123],  # 1.27.4
    "proxy_ssl_certificate_cache": [HTTP_LOC | _A.NGX_CONF_TAKE123],
    "ssl_object_cache_inheritable": [_A.NGX_MAIN_CONF | _A.NGX_DIRECT_CONF | _A.NGX_CONF_FLAG],
    "keepalive_min_timeout": [HTTP_LOC | _A.NGX_CONF_TAKE1],
    "early_hints": [HTTP_LOC | _A.NGX_CONF_1MORE],  # 1.29.0
    "add_header_inherit": [HTTP_LOC | _A.NGX_HTTP_LIF_CONF | _A.NGX_CONF_TAKE1],  # 1.29.3
    "add_trailer_inherit": [HTTP_LOC | _A.NGX_HTTP_LIF_CONF | _A.NGX_CONF_TAKE1],
}
_A.DIRECTIVES.update(MODERN)

# Prefixes and names of widely used modules that are not in nginx's own source tree (or are
# built separately, like njs): nginx -t fails on them unless the module is loaded, but they
# are not typos.
THIRD_PARTY_PREFIXES = {
    "more_": "headers-more (Debian: libnginx-mod-http-headers-more-filter)",
    "js_": "njs (nginx-module-njs / libnginx-mod-http-js)",
    "lua_": "lua (OpenResty, libnginx-mod-http-lua)",
    "brotli": "ngx_brotli (libnginx-mod-http-brotli-filter)",
    "geoip2_": "ngx_http_geoip2 (libnginx-mod-http-geoip2)",
    "vhost_traffic_status": "nginx-module-vts",
    "pagespeed": "ngx_pagespeed",
    "modsecurity": "ModSecurity-nginx",
    "passenger_": "Phusion Passenger",
    "echo": "echo-nginx-module (libnginx-mod-http-echo)",
    "set_": "set-misc-nginx-module",
    "srcache_": "srcache-nginx-module",
    "auth_ldap": "nginx-auth-ldap",
    "auth_pam": "ngx_http_auth_pam (libnginx-mod-http-auth-pam)",
    "fancyindex": "ngx-fancyindex (libnginx-mod-http-fancyindex)",
    "dav_ext_": "nginx-dav-ext-module (libnginx-mod-http-dav-ext)",
    "subs_filter": "ngx_http_substitutions_filter (libnginx-mod-http-subs-filter)",
    "upload_progress": "nginx-upload-progress (libnginx-mod-http-uploadprogress)",
    "track_uploads": "nginx-upload-progress (libnginx-mod-http-uploadprogress)",
    "push_stream_": "nginx-push-stream-module",
    "zstd": "zstd-nginx-module",
    "cache_purge": "ngx_cache_purge (libnginx-mod-http-cache-purge)",
    "proxy_cache_purge": "ngx_cache_purge (libnginx-mod-http-cache-purge)",
    "naxsi": "naxsi",
    "vod_": "nginx-vod-module",
    "rtmp": "nginx-rtmp-module (libnginx-mod-rtmp)",
    "testcookie": "testcookie-nginx-module",
    "sticky": "nginx-sticky-module",
    "otel_": "ngx_otel_module",
}
THIRD_PARTY_NAMES: dict[str, str] = {
    # naxsi rules are CamelCase directives
    "SecRulesEnabled": "naxsi",
    "SecRulesDisabled": "naxsi",
    "LearningMode": "naxsi",
    "DeniedUrl": "naxsi",
    "MainRule": "naxsi",
    "BasicRule": "naxsi",
    "CheckRule": "naxsi",
    "LibInjectionXss": "naxsi",
    "LibInjectionSql": "naxsi",
    "application": "nginx-rtmp-module (libnginx-mod-rtmp)",
}

# Blocks whose bodies are data (map entries, MIME types, …), not directives.
DATA_BLOCKS = frozenset(
    {"map", "geo", "types", "split_clients", "charset_map", "match", "perl_set", "js_set"}
)


def known(name: str) -> bool:
    return name in _A.DIRECTIVES


def third_party(name: str) -> str | None:
    """The third-party module that provides `name`, or None."""
    if name in THIRD_PARTY_NAMES:
        return THIRD_PARTY_NAMES[name]
    if name.endswith(("_by_lua", "_by_lua_block", "_by_lua_file")):
        return THIRD_PARTY_PREFIXES["lua_"]
    for prefix, module in THIRD_PARTY_PREFIXES.items():
        if name.startswith(prefix):
            return module
    return None


def suggest(name: str) -> str | None:
    """The closest directive nginx knows, for a misspelt one."""
    close = difflib.get_close_matches(name, _A.DIRECTIVES.keys(), n=1, cutoff=0.75)
    return close[0] if close else None


def allowed(name: str, ctx: tuple[str, ...]) -> bool | None:
    """Whether `name` may appear in the block path `ctx`; None when nginx's table is silent."""
    if ctx not in _A.CONTEXTS or name not in _A.DIRECTIVES:
        return None
    return any(mask & _A.CONTEXTS[ctx] for mask in _A.DIRECTIVES[name])
