"""Local passwords and web-session revocation. No Flask here.

Web sessions are signed cookies: the server keeps no list of them. Each carries the
user's ``session_epoch`` from when it was made; bumping the epoch ends every session
made before, including copies of the cookie elsewhere."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.aliases import AliasdError
from aliasd.core.auth import MAX_PASSWORD, is_rate_limited, record_failure
from aliasd.core.passwords import hash_password, verify_password
from aliasd.models import User

MIN_PASSWORD = 8


class AccountError(AliasdError):
    """A password change that cannot be made; the message says why."""


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must be at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise AccountError(f"the password must be at most {MAX_PASSWORD} characters")
    if "\x00" in password:
        raise AccountError("the password must not contain NUL characters")


def set_password(session: Session, user: User, password: str) -> None:
    """Set a local password (admin reset, or after the current one was checked) and end
    every web session the user has."""
    if user.auth_source != "local":
        raise AccountError(
            f"{user.username} signs in through the directory (LDAP): change the password there"
        )
    check_new_password(password)
    user.password_hash = hash_password(password)
    end_sessions(user)
    session.flush()


def change_password(session: Session, settings: Settings, user: User, current: str,
                    new: str, client: str) -> None:
    """The user's own change: the current password must be right. Wrong guesses count
    against the sign-in rate limit, so a stolen session cannot be used to find it."""
    if user.auth_source != "local":
        raise AccountError("your password is kept in the directory (LDAP): change it there")
    if is_rate_limited(session, settings, user.username, client):
        raise AccountError("too many wrong passwords; try again later")
    if not verify_password(user.password_hash, current):
        record_failure(session, user.username, client)
        session.flush()
        raise AccountError("the current password is wrong")
    set_password(session, user, new)


def end_sessions(user: User) -> None:
    """Every web session made so far stops working at its next request."""
    user.session_epoch = (user.session_epoch or 0) + 1
