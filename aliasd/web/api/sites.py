"""The API's view of one site of the token's user: its leak status with the evidence,
its known senders, and the user's word on them (add / remove a sender, dismiss /
confirm a leak). A site is named as on the alias (``github.com``), or by the address of
an alias that has no site."""

from __future__ import annotations

from typing import Any

from flask import jsonify
from sqlalchemy import and_, exists, or_, select

from aliasd.core import leaks
from aliasd.core.addresses import AddressError
from aliasd.models import Alias, SiteLeak
from aliasd.web.api import body, bp, error
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import current_user, token_required


def _when(value) -> str | None:
    return value.isoformat() if value else None


def evidence_json(e: SiteLeak) -> dict[str, Any]:
    return {
        "sender": e.sender_domain,
        "first_at": _when(e.first_at),
        "last_at": _when(e.last_at),
        "messages": e.total,
        "spam": e.spam,
        "message": {
            "at": _when(e.evidence_at),
            "envelope_sender": e.evidence_sender,
            "from_domain": e.evidence_from_domain,
            "subject": e.evidence_subject,
            "score": e.evidence_score,
            "spam": e.evidence_spam,
        },
        "why": e.evidence_why,
        "dismissed_at": _when(e.dismissed_at),
        "confirmed_at": _when(e.confirmed_at),
    }


def _owned(site: str) -> bool:
    user = current_user()
    site = site.strip().lower()
    return bool(
        db_session().scalar(
            select(
                exists().where(
                    Alias.owner_id == user.id,
                    or_(Alias.site == site, and_(Alias.site.is_(None), Alias.address == site)),
                )
            )
        )
    )


def _site_json(site: str) -> dict[str, Any]:
    s, user = db_session(), current_user()
    evidence = leaks.site_evidence(s, user.id, site)
    status = leaks.status_of(evidence, settings().attribution_leak_senders,
                             leaks.known_senders(s, user.id, site))
    return {
        "site": site,
        "status": status.status,
        "reason": status.reason,
        "since": _when(status.since),
        "evidence": [evidence_json(e) for e in evidence],
        "senders": [
            {"domain": k.domain, "source": k.source, "since": _when(k.since), "note": k.note}
            for k in leaks.list_known_senders(s, user.id, site)
        ],
    }


@bp.get("/sites/<site>")
@token_required
def site_status(site: str):
    site = site.strip().lower()
    if not _owned(site):
        return error(404, "no such site")
    return jsonify(_site_json(site))


@bp.post("/sites/<site>/senders")
@token_required
def add_site_sender(site: str):
    """``{"domain": "x.com"}`` (or an address): this sender belongs to the site."""
    site = site.strip().lower()
    if not _owned(site):
        return error(404, "no such site")
    data = body()
    domain = data.get("domain")
    if not isinstance(domain, str):
        return error(400, "'domain' must be a string")
    s = db_session()
    try:
        leaks.add_known_sender(s, current_user().id, site, domain[:320], note="confirmed by the user")
        s.commit()
    except AddressError as exc:
        s.rollback()
        return error(422, str(exc))
    return jsonify(_site_json(site)), 201


@bp.delete("/sites/<site>/senders/<domain>")
@token_required
def remove_site_sender(site: str, domain: str):
    """Undo: the sender no longer belongs to the site."""
    site = site.strip().lower()
    if not _owned(site):
        return error(404, "no such site")
    s = db_session()
    try:
        removed = leaks.remove_known_sender(s, current_user().id, site, domain[:320])
    except AddressError as exc:
        s.rollback()
        return error(422, str(exc))
    if not removed:
        s.rollback()
        return error(404, f"{domain[:100]} is not a stored sender of {site}")
    s.commit()
    return jsonify(_site_json(site))


def _judge(site: str, sender: str, verb: str):
    site = site.strip().lower()
    if not _owned(site):
        return error(404, "no such site")
    s = db_session()
    try:
        if verb == "dismiss":
            leaks.dismiss_leak(s, current_user().id, site, sender[:253])
        else:
            leaks.confirm_leak(s, current_user().id, site, sender[:253])
        s.commit()
    except LookupError as exc:
        s.rollback()
        return error(404, str(exc.args[0]))
    return jsonify(_site_json(site))


@bp.post("/sites/<site>/leaks/<sender>/dismiss")
@token_required
def dismiss_site_leak(site: str, sender: str):
    return _judge(site, sender, "dismiss")


@bp.post("/sites/<site>/leaks/<sender>/confirm")
@token_required
def confirm_site_leak(site: str, sender: str):
    return _judge(site, sender, "confirm")
