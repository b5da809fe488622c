"""Error pages: JSON for API clients (paths under /api/), HTML for people."""

from __future__ import annotations

import logging

from flask import Blueprint, current_app, g, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException, InternalServerError, ServiceUnavailable

bp = Blueprint("errors", __name__)
log = logging.getLogger(__name__)


def wants_json() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def _load_user_for_nav() -> None:
    """Error pages show the same navigation as every page. A 404 never ran the permission
    check, so the signed-in user is not loaded yet; a failure to load is no reason to
    fail the error page as well."""
    if "aliasd_user" in g:
        return
    from aliasd.web.context import load_session_user

    try:
        load_session_user()
    except Exception as exc:  # database down, broken session: the page renders without
        log.warning("error page without the signed-in user: %s", exc)
        g.aliasd_user = None


def error_response(status: int, title: str, message: str, *, with_user: bool = True):
    if wants_json():
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="aliasd"'
        return response
    if with_user:
        _load_user_for_nav()
    else:
        g.setdefault("aliasd_user", None)
    return render_template("errors/error.html", status=status, title=title,
                           message=message), status


def secure_cookie_lost_over_http() -> bool:
    """Whether the browser kept the session cookie back because it is Secure and this
    page came over plain HTTP: reloading never helps then. (Browsers make an exception
    for localhost, so this is seen at a real host name.)"""
    return (current_app.config["SESSION_COOKIE_SECURE"] and not request.is_secure
            and current_app.config["SESSION_COOKIE_NAME"] not in request.cookies)


@bp.app_errorhandler(CSRFError)
def csrf_error(exc: CSRFError):
    if secure_cookie_lost_over_http():
        return error_response(
            400, "HTTPS needed",
            "This page came over plain HTTP, but aliasd's session cookie is only sent over "
            "HTTPS (session_cookie_secure), so the browser never sent it back and no form "
            "can be submitted. Open the https:// address instead. For a local or test "
            "setup without TLS, set ALIASD_SESSION_COOKIE_SECURE=false (README, Web app).",
        )
    return error_response(
        400, "Form expired",
        "The form was missing its security token or it expired. Go back, reload the page "
        "and submit again.",
    )


@bp.app_errorhandler(HTTPException)
def http_error(exc: HTTPException):
    messages = {
        401: "A valid API token is required (header 'Authentication: <token>' or "
             "'Authorization: Bearer <token>').",
        403: "You are not allowed to do that.",
        404: "There is nothing here.",
    }
    message = messages.get(exc.code or 500, exc.description or exc.name)
    return error_response(exc.code or 500, exc.name, message)


@bp.app_errorhandler(OperationalError)
@bp.app_errorhandler(DBAPIError)
def database_error(exc: Exception):
    log.error("database unavailable: %s", exc)
    # The failed statement leaves the request's session needing a rollback; without it
    # rendering the page (current user in the header) would fail a second time.
    s = g.get("aliasd_db")
    if s is not None:
        try:
            s.rollback()
        except Exception:  # a dead connection: the page renders without the user
            g.pop("aliasd_user", None)
    return error_response(
        ServiceUnavailable.code, "Database unavailable",
        "The database cannot be reached right now. Nothing was changed; try again shortly.",
        with_user="aliasd_user" in g,  # no second wait on a database that is down
    )


@bp.app_errorhandler(Exception)
def unexpected_error(exc: Exception):
    log.exception("unexpected error")
    return error_response(InternalServerError.code, "Internal error",
                          "Something went wrong on our side.")
