"""Accounts: local passwords, web-session revocation, directory users' re-check
between sign-ins, profile (display name, mailbox) and the admin role. No Flask here.

Web sessions are signed cookies: the server keeps no list of them. Each carries the
user's ``session_epoch`` from when it was made; bumping the epoch ends every session
made before, including copies of the cookie elsewhere."""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.addresses import AddressError, domain_of, normalize_address
from aliasd.core.aliases import create_user, record_change
from aliasd.core.auth import (
    MAX_PASSWORD,
    LdapUnavailable,
    is_rate_limited,
    ldap_lookup,
    record_failure,
)
from aliasd.core.block_protection import covering
from aliasd.core.errors import AliasdError
from aliasd.core.passwords import hash_password, verify_password
from aliasd.models import Alias, Domain, User, utcnow

log = logging.getLogger(__name__)

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
    try:
        password.encode("utf-8")  # bytes that were not UTF-8 arrive as lone surrogates
    except UnicodeEncodeError as exc:
        raise AccountError(
            "the password must be UTF-8 text (it was read in another encoding)"
        ) from exc


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


# --- directory users between sign-ins ---------------------------------------------------
def directory_allows(settings: Settings, user: User, *, now: dt.datetime | None = None) -> bool:
    """Whether a session or API token of ``user`` may still be used, re-checking a
    directory (LDAP) user against the directory at most every ``ldap_recheck_interval``
    seconds (so not on every request). Entry still there: ``is_admin`` follows the
    admin group. Entry gone: sessions end, tokens are refused and the admin role goes,
    until the directory has the entry again. Directory unreachable: nothing changes
    (a warning is logged). Local users are always allowed. The caller commits what
    changed on ``user``."""
    if user.auth_source != "ldap":
        return True
    if settings.ldap_uri and settings.ldap_recheck_interval > 0:
        now = now or utcnow()
        last = user.directory_checked_at
        if last is None or (now - last).total_seconds() >= settings.ldap_recheck_interval:
            _recheck(settings, user, now)
    return user.directory_missing_since is None


def _recheck(settings: Settings, user: User, now: dt.datetime) -> None:
    # Stamped before asking: an unreachable directory is tried again after the interval,
    # not on every request, each of which would wait for the LDAP timeout.
    user.directory_checked_at = now
    try:
        identity = ldap_lookup(settings, user.username)
    except LdapUnavailable as exc:
        log.warning("cannot re-check directory user %r (%s); keeping what was known",
                    user.username, exc)
        return
    # The entry must still be this user's: sign-in would give a different uid to
    # another account.
    if identity is None or identity.username != user.username:
        if user.directory_missing_since is None:
            log.warning("directory user %r is no longer in the directory: sessions "
                        "ended, API tokens refused", user.username)
            user.directory_missing_since = now
            user.is_admin = False
            end_sessions(user)
        return
    if user.directory_missing_since is not None:
        log.info("directory user %r is back in the directory", user.username)
    user.directory_missing_since = None
    user.is_admin = identity.is_admin


# --- profile and roles ------------------------------------------------------------------
MAX_DISPLAY_NAME = 100


def set_display_name(user: User, name: str | None) -> None:
    """The name shown for the user; empty means the user name."""
    name = " ".join((name or "").split())  # no newlines or runs of spaces
    if len(name) > MAX_DISPLAY_NAME:
        raise AccountError(f"the display name must be at most {MAX_DISPLAY_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 0x7F for c in name):
        raise AccountError("the display name must not contain control characters")
    user.display_name = name or None


def change_mailbox(session: Session, user: User, mailbox: str) -> int:
    """Point the user's mail at a new real mailbox. Aliases that forwarded to the old
    mailbox forward to the new one (extra destinations stay). Returns how many aliases
    moved. A directory (LDAP) user's mailbox comes from the directory at each sign-in."""
    if user.auth_source != "local":
        raise AccountError(
            f"the mailbox of {user.username} comes from the directory (LDAP): change it there"
        )
    try:
        new = normalize_address(mailbox)
    except AddressError as exc:
        raise AccountError(f"mailbox: {exc}") from exc
    if session.scalar(select(Alias.id).where(Alias.address == new).limit(1)) is not None:
        raise AccountError(f"{new} is an alias, not a real mailbox: mail to it would loop")
    # Every address of a served domain is an alias or refused, so no mail would arrive;
    # and on another user's catch-all domain the address would be kept from becoming one.
    served = covering(domain_of(new), set(session.scalars(select(Domain.name))))
    if served is not None:
        raise AccountError(f"{new} is on {served}, a domain aliasd serves: every address there "
                           "is an alias, so it cannot be a real mailbox")
    old = user.mailbox
    if new == old:
        return 0
    moved = 0
    owned = select(Alias).where(Alias.owner_id == user.id, Alias.destinations.contains(old))
    for alias in session.scalars(owned):
        dests = alias.destination_list
        if old not in dests:  # a longer address that merely contains the old one
            continue
        replaced = list(dict.fromkeys(new if d == old else d for d in dests))
        alias.destinations = ",".join(replaced)
        moved += 1
    user.mailbox = new
    record_change(session, None)  # lookupd re-reads mailboxes, catch-all owners, aliases
    session.flush()
    return moved


def set_admin(session: Session, user: User, is_admin: bool) -> None:
    """Grant or take away the admin role. The last admin keeps it (someone must be able
    to manage users), and a directory user's role is the directory's."""
    if user.is_admin == is_admin:
        return
    if user.auth_source != "local":
        raise AccountError(
            f"{user.username}'s admin role comes from the directory (LDAP) group: change it there"
        )
    if not is_admin:
        admins = session.scalar(
            select(func.count()).select_from(User).where(User.is_admin.is_(True))
        )
        if admins <= 1:
            raise AccountError(f"{user.username} is the last admin; make another admin first")
    user.is_admin = is_admin
    session.flush()


def create_local_user(session: Session, username: str, mailbox: str, password: str | None,
                      *, is_admin: bool = False) -> User:
    """A user who signs in with a password kept here (None: no password yet; set one
    later with ``aliasd user passwd``)."""
    password_hash = None
    if password is not None:
        check_new_password(password)
        password_hash = hash_password(password)
    return create_user(session, username, mailbox, is_admin=is_admin,
                       password_hash=password_hash)


def list_users(session: Session) -> list[User]:
    return list(session.scalars(select(User).order_by(User.username)))
