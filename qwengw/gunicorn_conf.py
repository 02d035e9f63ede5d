# gunicorn settings for the gateway: used by `gunicorn wsgi:app` (through the repo root's
# gunicorn.conf.py) and by `qwengw serve`.
# This file runs in the gunicorn master BEFORE gevent patches anything (each worker patches
# after fork): keep imports to the standard library and qwengw.config (pure Python, no sockets).
# Never set preload_app: the app must be imported after patching.
import glob
import os
import shutil
import socket
import sys
import tempfile
from importlib.util import find_spec
from urllib.parse import urlsplit

from qwengw.config import ConfigError, Settings, load_settings, parse_listen

try:
    _settings = load_settings()  # $QWENGW_CONFIG, else built-in defaults
    if os.environ.get("QWENGW_BIND"):
        try:
            parse_listen(os.environ["QWENGW_BIND"])
        except ValueError as _bad:
            raise ConfigError([f"QWENGW_BIND: {_bad}"], "the environment") from None
except ConfigError as _err:
    sys.stderr.write(f"qwengw: {_err}\n")
    raise SystemExit(2) from None

bind = os.environ.get("QWENGW_BIND", _settings.listen)
worker_class = "gevent"
workers = int(os.environ.get("QWENGW_WORKERS", _settings.workers))
os.environ["QWENGW_WORKERS"] = str(workers)  # lets the app warn about per-worker memory limits
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
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        os.makedirs(metrics_dir, exist_ok=True)
        for path in glob.glob(os.path.join(metrics_dir, "*.db")):
            os.remove(path)


def on_exit(server):
    if _own_metrics_dir:  # made by us for this run: do not leave one behind per start
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)


def when_ready(server):
    _check_ollama(server, _settings)


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
