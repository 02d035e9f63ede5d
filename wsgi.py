"""WSGI entry point: ``gunicorn wsgi:app`` (gunicorn.conf.py beside it sets gevent workers).

No monkey-patching here: gunicorn's gevent worker patches before it imports this module.
"""

from qwengw import create_app

app = create_app()
