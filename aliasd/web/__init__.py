"""Flask application factory.

``create_app(settings)`` builds the app: settings, secure cookies, CSRF on every form,
ProxyFix for reverse proxies, a per-request database session, the permission check,
and the blueprints (one package each under ``aliasd/web/``). How a blueprint declares
permissions and adds a nav link: see :mod:`aliasd.web.permissions`.
"""

from __future__ import annotations

import datetime as dt

from flask import Flask, abort, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from aliasd.config import DEFAULT_SECRET, Settings, SettingsError, load_settings
from aliasd.resources import templates_dir
from aliasd.web import context, permissions

MIN_SECRET_LENGTH = 16

csrf = CSRFProtect()
MAX_DB_ID = 2**31 - 1  # PostgreSQL integer columns; a bigger id cannot exist


class DbIdConverter(IntegerConverter):
    """``<int:...>`` in URLs: ids beyond the integer columns do not match (404) instead
    of failing in the database (SQLite: OverflowError; PostgreSQL: out of range)."""

    def __init__(self, map, *args, **kwargs) -> None:  # noqa: A002 - werkzeug's name
        kwargs.setdefault("max", MAX_DB_ID)
        super().__init__(map, *args, **kwargs)


def refuse_nul() -> None:
    """before_request: no name, address, note or search needs a NUL byte, and
    PostgreSQL text cannot store one; refuse the request (400) before it reaches the
    database, the same on both engines."""
    values = [request.path, *(v for _k, v in request.args.items(multi=True))]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        values.extend(v for _k, v in request.form.items(multi=True))
    if any("\x00" in v for v in values):
        abort(400, "The request contains a NUL byte.")


def check_secret(settings: Settings) -> None:
    """Production refuses to start with a missing, default or short secret key. Only an
    explicit "development" skips the check: a typo such as "prod" must not fail open."""
    if settings.env == "development":
        return
    key = settings.secret_key or ""
    if not key or key == DEFAULT_SECRET or len(key) < MIN_SECRET_LENGTH:
        raise SettingsError(
            "secret_key is missing or the default: set ALIASD_SECRET_KEY to a long random "
            "value (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
            "or set ALIASD_ENV=development for a local trial"
        )


def _check_schema(settings: Settings) -> None:
    """An outdated schema stops the start with a clear message; a database that is down
    does not (pages answer 503 until it is back)."""
    import logging

    from aliasd.db import SchemaOutdated, get_database

    try:
        get_database(settings).require_current_schema()
    except SchemaOutdated:
        raise
    except Exception as exc:
        logging.getLogger(__name__).warning("cannot check the database schema yet: %s", exc)


def create_app(settings: Settings | None = None, *, check_schema: bool = False) -> Flask:
    settings = settings or load_settings()
    check_secret(settings)
    if check_schema:
        _check_schema(settings)

    app = Flask(__name__, template_folder=str(templates_dir()))
    app.url_map.converters["int"] = DbIdConverter  # before any route is added
    app.config.update(
        ALIASD_SETTINGS=settings,
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_NAME="aliasd_session",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=14),
        WTF_CSRF_TIME_LIMIT=None,  # the token lives as long as the session
        WTF_CSRF_SSL_STRICT=settings.session_cookie_secure,
        MAX_CONTENT_LENGTH=1_000_000,
    )
    if settings.proxy_fix_hops > 0:
        hops = settings.proxy_fix_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops, x_prefix=hops
        )
    app.extensions["aliasd_nav"] = []
    csrf.init_app(app)

    app.before_request(refuse_nul)
    app.before_request(permissions.enforce)
    app.teardown_appcontext(context.close_db_session)
    app.view_functions["static"] = permissions.public(app.view_functions["static"])

    @app.get("/favicon.ico")
    @permissions.public
    def favicon():
        # Pages name their icon; this is for clients that ask the old fixed path anyway.
        return redirect(url_for("static", filename="favicon.svg"), 301)

    @app.after_request
    def security_headers(response):
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'",
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response

    @app.context_processor
    def inject():
        from aliasd.web.permissions import current_user

        user = current_user()
        nav = [
            item for item in app.extensions["aliasd_nav"]
            if user is not None and (not item["admin"] or user.is_admin)
        ]
        return {"current_user": user, "nav_items": nav}

    from aliasd.web import aliases, api, auth, errors
    from aliasd.web import settings as settings_bp

    app.register_blueprint(errors.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(aliases.bp)
    app.register_blueprint(settings_bp.bp)
    app.register_blueprint(api.bp)
    from aliasd.web import blocklist, reports  # spam-source report and blocklist

    app.register_blueprint(reports.bp)
    app.register_blueprint(blocklist.bp)
    from aliasd.web import admin  # domains and users

    app.register_blueprint(admin.bp)
    from aliasd.web import quarantine  # held messages, learning, one-click links

    app.register_blueprint(quarantine.bp)
    quarantine.exempt_from_csrf(csrf)
    csrf.exempt(api.bp)  # token-authenticated only: no cookie, so no CSRF to forge
    from aliasd.web import metrics  # Prometheus: /metrics and per-request counters

    metrics.init_app(app)
    return app
