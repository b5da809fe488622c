"""Who may call which view.

Every view function declares its permission with exactly one of these decorators:

    @public            anyone, signed in or not (sign-in page, static files)
    @login_required    a signed-in user (session cookie)
    @admin_required    a signed-in admin
    @token_required    an API client with a valid per-user token (no cookie, no CSRF)

The decorators only set ``view.aliasd_permission``; :func:`enforce` (a
``before_request`` hook installed by ``create_app``) checks it centrally, so a view
that forgot its decorator is refused (deny by default) and
``tests/test_web_permissions.py`` fails by walking ``app.url_map``.

A blueprint written by someone else registers like this (one line in create_app):

    bp = Blueprint("reports", __name__, url_prefix="/reports")

    @bp.get("/")
    @login_required
    def index(): ...

    nav_item(bp, "Report", "reports.index")          # optional: a link in base.html's nav
    nav_item(bp, "Blocklist", "blocklist.index", admin=True)

and in ``aliasd/web/__init__.py``: ``app.register_blueprint(reports.bp)``. Inside a view,
:func:`current_user` is the signed-in ``User`` and :func:`aliasd.web.context.db_session`
the request's database session.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, abort, g, redirect, request, url_for

PUBLIC = "public"
LOGIN = "login"
ADMIN = "admin"
TOKEN = "token"
PERMISSIONS = (PUBLIC, LOGIN, ADMIN, TOKEN)
ATTR = "aliasd_permission"

F = TypeVar("F", bound=Callable[..., Any])


def _mark(permission: str) -> Callable[[F], F]:
    def decorator(view: F) -> F:
        existing = getattr(view, ATTR, None)
        if existing is not None and existing != permission:
            raise TypeError(f"{view.__name__} declares two permissions")
        setattr(view, ATTR, permission)
        return view

    return decorator


public = _mark(PUBLIC)
login_required = _mark(LOGIN)
admin_required = _mark(ADMIN)
token_required = _mark(TOKEN)


def permission_of(view: Callable[..., Any]) -> str | None:
    return getattr(view, ATTR, None)


def current_user():
    """The signed-in (or token-authenticated) ``User`` of this request, or None."""
    return g.get("aliasd_user")


def nav_item(bp: Blueprint, label: str, endpoint: str, *, admin: bool = False) -> None:
    """Add a link to the navigation of base.html when ``bp`` is registered."""

    def record(state) -> None:
        state.app.extensions["aliasd_nav"].append(
            {"label": label, "endpoint": endpoint, "admin": admin}
        )

    bp.record_once(record)


def enforce() -> Any:
    """before_request: apply the permission the matched view declares."""
    from aliasd.web.context import load_session_user, load_token_user

    if request.endpoint is None:  # 404/405: let Flask answer
        return None
    from flask import current_app

    view = current_app.view_functions.get(request.endpoint)
    permission = permission_of(view) if view else None
    if permission not in PERMISSIONS:
        # Deny by default: a view without a declared permission is never served.
        abort(403)
    if permission == PUBLIC:
        if request.endpoint != "static":  # no database round trip for a stylesheet
            load_session_user()
        return None
    if permission == TOKEN:
        if load_token_user() is None:
            abort(401)
        return None
    user = load_session_user()
    if user is None:
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    if permission == ADMIN and not user.is_admin:
        abort(403)
    return None
