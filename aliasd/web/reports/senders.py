"""The user's word on a site's senders, from the site page and the alias page: "this
sender belongs to this site" (and undo), dismiss a leak, confirm a leak. Each action is
a POST with CSRF, goes back where it came from and says what changed."""

from __future__ import annotations

from flask import abort, flash, request
from sqlalchemy import and_, exists, or_, select

from aliasd.core import leaks
from aliasd.core.addresses import AddressError
from aliasd.models import Alias
from aliasd.web.context import db_session
from aliasd.web.permissions import current_user, login_required
from aliasd.web.reports import back_to_page, bp


def _site_of(owner_id: int, site: str) -> None:
    """404 unless the signed-in user (or an admin) owns an alias of this site."""
    user = current_user()
    if owner_id != user.id and not user.is_admin:
        abort(404)
    owned = db_session().scalar(
        select(
            exists().where(
                Alias.owner_id == owner_id,
                or_(Alias.site == site, and_(Alias.site.is_(None), Alias.address == site)),
            )
        )
    )
    if not owned:
        abort(404)


@bp.post("/site/<int:owner_id>/<path:site>/senders")
@login_required
def add_sender(owner_id: int, site: str):
    """This sender belongs to this site."""
    _site_of(owner_id, site)
    s = db_session()
    try:
        row = leaks.add_known_sender(s, owner_id, site, request.form.get("domain", "")[:320],
                                     note="confirmed by the user")  # fmt: skip
        s.commit()
    except AddressError as exc:
        s.rollback()
        flash(str(exc), "error")
        return back_to_page(owner_id, site)
    flash(f"{row.domain} now counts as a sender of {site}.", "success")
    return back_to_page(owner_id, site)


@bp.post("/site/<int:owner_id>/<path:site>/senders/remove")
@login_required
def remove_sender(owner_id: int, site: str):
    """Undo: the sender no longer counts as the site's."""
    _site_of(owner_id, site)
    s = db_session()
    try:
        removed = leaks.remove_known_sender(s, owner_id, site, request.form.get("domain", "")[:320])
        s.commit()
    except AddressError as exc:
        s.rollback()
        flash(str(exc), "error")
        return back_to_page(owner_id, site)
    domain = request.form.get("domain", "").strip().lower()[:100]
    if removed:
        flash(f"{domain} no longer counts as a sender of {site}.", "success")
    else:
        flash(f"{domain} was not a stored sender of {site}.", "error")
    return back_to_page(owner_id, site)


def _judge(owner_id: int, site: str, verb: str):
    _site_of(owner_id, site)
    s = db_session()
    sender = request.form.get("sender", "")[:253]
    try:
        if verb == "dismiss":
            leaks.dismiss_leak(s, owner_id, site, sender)
        else:
            leaks.confirm_leak(s, owner_id, site, sender)
        s.commit()
    except LookupError as exc:
        s.rollback()
        flash(str(exc.args[0]), "error")
        return back_to_page(owner_id, site)
    if verb == "dismiss":
        known = sender.strip().lower() in leaks.known_senders(s, owner_id, site)
        flash(f"Dismissed: mail from {sender} is no longer leak evidence for {site}"
              + (f", and {sender} now counts as one of its senders." if known else "."),
              "success")  # fmt: skip
    else:
        flash(f"Confirmed: mail from {sender} counts as a leak of {site}.", "success")
    return back_to_page(owner_id, site)


@bp.post("/site/<int:owner_id>/<path:site>/leaks/dismiss")
@login_required
def dismiss_leak(owner_id: int, site: str):
    return _judge(owner_id, site, "dismiss")


@bp.post("/site/<int:owner_id>/<path:site>/leaks/confirm")
@login_required
def confirm_leak(owner_id: int, site: str):
    return _judge(owner_id, site, "confirm")
