# gunicorn settings for the gateway: used by `gunicorn wsgi:app` (through the repo root's
# gunicorn.conf.py) and by `qwengw serve`.
# This file runs in the gunicorn master BEFORE gevent patches anything (each worker patches
# after fork): keep imports to the standard library and qwengw.config (pure Python, no sockets).
# Never set preload_app: the app must be imported after patching.
import errno
import glob
import os
import shutil
import signal
import socket
import sys
import tempfile
from importlib.util import find_spec
from urllib.parse import urlsplit

from qwengw.config import (
    ENV_WARNINGS_SAID,
    ConfigError,
    Settings,
    apply_environment,
    load_settings,
    redact_uri,
    storage_endpoints,
)
from qwengw.config import warnings as config_warnings

try:
    # $QWENGW_CONFIG (else built-in defaults), then QWENGW_BIND / QWENGW_WORKERS, all checked
    _settings = apply_environment(load_settings())
except ConfigError as _err:
    sys.stderr.write(f"qwengw: {_err}\n")
    raise SystemExit(2) from None

bind = _settings.listen
# gunicorn's gevent worker, plus a per-address connection cap and /health not counting toward
# max_requests (qwengw/worker.py).
worker_class = "qwengw.worker.Worker"
workers = _settings.workers
os.environ["QWENGW_WORKERS"] = str(workers)  # lets the app warn about per-worker memory limits
os.environ[ENV_WARNINGS_SAID] = "1"  # the master says the config warnings once (when_ready)
worker_connections = 1000  # per worker; one client address gets client.max_connections of it
backlog = 2048
timeout = 30  # gevent: a hub-liveness watchdog, not a request timeout
# SIGTERM / reload: in-flight streams get this long to finish.
graceful_timeout = int(os.environ.get("QWENGW_GRACEFUL_TIMEOUT", "130"))
# Idle keep-alive connections are closed after 5 s. Short, because gunicorn's graceful stop
# waits for idle keep-alive connections too (a restart would otherwise hang for up to this
# long); nginxgen sets the gateway upstream's keepalive_timeout to 4 s, so Nginx closes first.
# The same timer bounds how long a request's line and headers may take to arrive (slowloris):
# gunicorn's gevent worker wraps the whole header read in it, the first request included.
keepalive = 5
# Recycling workers after N requests bounds a slow leak, but a recycled worker forgets every
# memory:// counter (rates, in-flight slots, failed-auth counts): anyone able to send N cheap
# requests could reset the limits at will. So no recycling with memory:// storage unless asked
# for; with Redis the counters survive a recycle. Jitter keeps workers from restarting together.
_default_max_requests = "0" if _settings.rate_limit.storage.startswith("memory") else "20000"
max_requests = int(os.environ.get("QWENGW_MAX_REQUESTS", _default_max_requests))
max_requests_jitter = max_requests // 10
# Only the configured trusted proxies may set forwarding headers gunicorn acts on
# (X-Forwarded-Proto for the URL scheme), and no header may rewrite the WSGI routing
# variables: gunicorn's default believes SCRIPT_NAME / PATH_INFO headers from 127.0.0.1, and a
# SCRIPT_NAME that is not a prefix of the path was a 500 "Configuration problem" page.
# header_map "drop": a header with "_" in its name is dropped, not mapped or refused.
forwarded_allow_ips = ",".join(str(net) for net in _settings.whitelist.trusted_proxies)
forwarder_headers = ""
header_map = "drop"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
control_socket_disable = True  # one per instance would clash between instances on one host
accesslog = None  # the audit log is the access log
errorlog = "-"
loglevel = _settings.log_level
proc_name = "qwengw"

# Prometheus multiprocess mode: the directory must be known before workers import the client.
_own_metrics_dir = None
if (
    _settings.metrics.enabled
    and find_spec("prometheus_client") is not None
    and not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
):
    _own_metrics_dir = tempfile.mkdtemp(prefix="qwengw-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def on_starting(server):
    _refuse_busy_address(server)
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        os.makedirs(metrics_dir, exist_ok=True)
        for path in glob.glob(os.path.join(metrics_dir, "*.db")):
            os.remove(path)


def on_exit(server):
    if _own_metrics_dir:  # made by us for this run: do not leave one behind per start
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def when_ready(server):
    for warning in config_warnings(_settings, workers):
        server.log.warning("%s", warning)
    _check_ollama(server, _settings)
    _check_storage(server, _settings)
    rl, auth = _settings.rate_limit, _settings.auth
    if max_requests and rl.storage.startswith("memory") and (rl.enabled or auth.enabled):
        server.log.warning(
            "workers are recycled every ~%d requests (QWENGW_MAX_REQUESTS) and each recycle "
            "forgets the memory:// limits: a client able to send that many cheap requests can "
            "reset them. Use redis:// storage, or QWENGW_MAX_REQUESTS=0.",
            max_requests,
        )


def post_worker_init(worker):
    # Ctrl-C signals the whole process group. The master stops the workers itself; a worker
    # that also acts on the SIGINT is told to quit twice, which gevent reports as a SystemExit
    # traceback and "greenlet failed". SIGTERM (systemd) only reaches the master.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def child_exit(server, worker):
    # prometheus_client.multiprocess.mark_process_dead, without importing it into the master.
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        for path in glob.glob(os.path.join(metrics_dir, f"gauge_live*_{worker.pid}.db")):
            os.remove(path)


def _check_ollama(server, settings: Settings) -> None:
    """Say clearly at start-up when Ollama cannot be reached (the gateway still starts)."""
    for url in settings.ollama_urls:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname, port), timeout=2).close()
        except OSError as exc:
            server.log.warning(
                "Ollama is not reachable at %s (%s). The gateway is up, but model requests will "
                "get 503 until it is: start it (`ollama serve`, or `systemctl start ollama`) or "
                "set ollama_api in the config.",
                url,
                exc.strerror or exc,
            )
        else:
            server.log.info("Ollama reachable at %s", url)


def _refuse_busy_address(server) -> None:
    """One line naming the address, instead of gunicorn's five "Connection in use" retries."""
    if os.environ.get("GUNICORN_FD") or os.environ.get("LISTEN_FDS"):
        return  # the sockets are inherited (USR2 upgrade, systemd socket activation)
    for address in server.cfg.address:
        if not isinstance(address, tuple):
            continue  # a unix socket
        host, port = address[0], address[1]
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        shown = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
            try:
                probe.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    why = f"it is already in use (who: ss -ltnp 'sport = :{port}')"
                else:
                    why = exc.strerror or str(exc)
                server.log.error(
                    "cannot listen on %s: %s. Choose another address with listen: in the "
                    "config file, or QWENGW_BIND=HOST:PORT in the environment.",
                    shown,
                    why,
                )
                sys.exit(1)


def _check_storage(server, settings: Settings) -> None:
    """Say at start-up when the rate-limit storage cannot be reached (the gateway still starts)."""
    rl = settings.rate_limit
    uri = redact_uri(rl.storage)  # never a password in the log
    reason = None
    for where in storage_endpoints(rl.storage):  # nothing for memory://
        try:
            if isinstance(where, str):
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.settimeout(2)
                    sock.connect(where)
            else:
                socket.create_connection(where, timeout=2).close()
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
        else:
            server.log.info("rate-limit storage reachable at %s", uri)
            return
    if reason is None:
        return
    consequence = (
        "requests that need it get 503 service_unavailable until it is "
        "(rate_limit.on_storage_error: closed)"
        if rl.on_storage_error == "closed"
        else "limits are not enforced until it is (rate_limit.on_storage_error: open)"
    )
    server.log.warning(
        "rate-limit storage is not reachable at %s (%s): %s; /ready reports it.",
        uri,
        reason,
        consequence,
    )
