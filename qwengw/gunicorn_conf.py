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

from qwengw.config import ENV_WARNINGS_SAID, ConfigError, Settings, apply_environment, load_settings
from qwengw.config import warnings as config_warnings

try:
    # $QWENGW_CONFIG (else built-in defaults), then QWENGW_BIND / QWENGW_WORKERS, all checked
    _settings = apply_environment(load_settings())
except ConfigError as _err:
    sys.stderr.write(f"qwengw: {_err}\n")
    raise SystemExit(2) from None

bind = _settings.listen
worker_class = "gevent"
workers = _settings.workers
os.environ["QWENGW_WORKERS"] = str(workers)  # lets the app warn about per-worker memory limits
os.environ[ENV_WARNINGS_SAID] = "1"  # the master says the config warnings once (when_ready)
worker_connections = 1000
backlog = 2048
timeout = 30  # gevent: a hub-liveness watchdog, not a request timeout
# SIGTERM / reload: in-flight streams get this long to finish.
graceful_timeout = int(os.environ.get("QWENGW_GRACEFUL_TIMEOUT", "130"))
# Idle keep-alive connections are closed after 5 s. Short, because gunicorn's graceful stop
# waits for idle keep-alive connections too (a restart would otherwise hang for up to this
# long); nginxgen sets the gateway upstream's keepalive_timeout to 4 s, so Nginx closes first.
keepalive = 5
# Recycle workers now and then so a slow leak cannot grow without bound; jitter avoids
# all workers restarting at once.
max_requests = int(os.environ.get("QWENGW_MAX_REQUESTS", "20000"))
max_requests_jitter = max_requests // 10
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
