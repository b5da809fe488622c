"""Per-request state: the database session (opened lazily, closed in teardown) and
the user of the request (from the session cookie or an API token)."""

from __future__ import annotations

from flask import current_app, flash, g, request, session
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.db import get_database
from aliasd.models import User


def settings() -> Settings:
    return current_app.config["ALIASD_SETTINGS"]


def db_session() -> Session:
    """The request's SQLAlchemy session; views commit explicitly, teardown closes it
    (rolling back anything uncommitted)."""
    s = g.get("aliasd_db")
    if s is None:
        s = get_database(settings()).sessionmaker()
        g.aliasd_db = s
    return s


def close_db_session(_exc: BaseException | None = None) -> None:
    s = g.pop("aliasd_db", None)
    if s is not None:
        s.close()


def load_session_user() -> User | None:
    if "aliasd_user" in g:
        return g.aliasd_user
    user = None
    uid = session.get("uid")
    if isinstance(uid, int):
        user = db_session().get(User, uid)
        # Not honoured: a session of a deleted user, one made before the user's session
        # epoch moved on (signed out everywhere, password changed), or one of a user
        # the directory no longer has.
        if (user is None or session.get("epoch", 0) != user.session_epoch
                or not _directory_allows(user)):
            session.clear()
            if user is not None and user.directory_missing_since is not None:
                # Every browser of theirs is told why, not only the one that noticed.
                flash("You were signed out: your account is no longer in the directory.",
                      "error")
            user = None
    g.aliasd_user = user
    return user


def _directory_allows(user: User) -> bool:
    from aliasd.core.accounts import directory_allows

    s = db_session()
    allowed = directory_allows(settings(), user)
    if s.dirty:  # only when the directory was asked (at most once per interval)
        s.commit()
    return allowed


def request_token() -> str | None:
    """The API token: SimpleLogin's ``Authentication: <token>`` or ``Authorization: Bearer``."""
    raw = request.headers.get("Authentication")
    if not raw:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        raw = value if scheme.lower() == "bearer" else ""
    raw = (raw or "").strip()
    return raw or None


def load_token_user() -> User | None:
    from aliasd.core.tokens import user_for_token

    if "aliasd_user" in g:
        return g.aliasd_user
    token = request_token()
    user = None
    if token:
        s = db_session()
        user = user_for_token(s, token)
        if user is not None and not _directory_allows(user):
            user = None  # gone from the directory: the token is refused (401)
        s.commit()  # last_used_at
    g.aliasd_user = user
    return user


def client_address() -> str:
    # request.remote_addr is already the client's address when ProxyFix trusts the proxy.
    return request.remote_addr or "unknown"
