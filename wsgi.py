"""gunicorn entry point: ``gunicorn wsgi:app`` (settings from ALIASD_* / ALIASD_CONFIG)."""

from aliasd.web import create_app

app = create_app(check_schema=True)
