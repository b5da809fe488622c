"""gunicorn entry point in a checkout: ``gunicorn wsgi:app``; the same app as
``aliasd.web.wsgi:app``, which an installed aliasd uses."""

from aliasd.web.wsgi import app

__all__ = ["app"]
