# `gunicorn wsgi:app` in the repo root reads this file: gevent workers bound to the configured
# `listen` address ($QWENGW_CONFIG, else 127.0.0.1:18789). The settings live in the package so
# that `qwengw serve` uses exactly the same ones.
from qwengw.gunicorn_conf import *  # noqa: F403
from qwengw.gunicorn_conf import (  # noqa: F401
    child_exit,
    on_exit,
    on_starting,
    post_worker_init,
    when_ready,
)
