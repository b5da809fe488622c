"""Saving a profile form (display name, mailbox): the user's own settings page and the
admin's user page share it, so both apply the same core rules."""

from __future__ import annotations

from sqlalchemy.orm import Session

from aliasd.core import accounts
from aliasd.models import User
from aliasd.web.admin.forms import ProfileForm


def fill(form: ProfileForm, user: User) -> None:
    form.display_name.data = user.display_name or ""
    form.mailbox.data = user.mailbox


def save(session: Session, form: ProfileForm, user: User) -> int | None:
    """Apply a validated form. Returns how many aliases moved to the new mailbox, or None
    when core refused a value (the error is on the field; nothing is changed)."""
    try:
        accounts.set_display_name(user, form.display_name.data)
    except accounts.AccountError as exc:
        session.rollback()
        form.display_name.errors = [*form.display_name.errors, sentence(exc)]
        return None
    if user.auth_source != "local":
        return 0  # the directory owns the mailbox; the field is shown read-only
    try:
        return accounts.change_mailbox(session, user, form.mailbox.data or "")
    except accounts.AccountError as exc:
        session.rollback()
        form.mailbox.errors = [*form.mailbox.errors, sentence(exc)]
        return None


def sentence(exc: Exception) -> str:
    text = str(exc)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")
