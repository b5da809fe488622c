"""gunicorn entry point: ``gunicorn wsgi:app``."""

from aliasd.web import create_app

app = create_app()
