"""gunicorn entry point of an installed aliasd: ``gunicorn aliasd.web.wsgi:app``
(settings from ALIASD_* / ALIASD_CONFIG). Needs no source tree."""

from aliasd.web import create_app

app = create_app(check_schema=True)
