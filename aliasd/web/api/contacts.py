"""Contacts (reverse aliases) of an alias in the JSON API: list them, "write to
someone" (a reverse alias for a new correspondent), disable, enable, delete; and the
alias's reply settings (display name, forwarding mode)."""

from __future__ import annotations

from typing import Any

from flask import jsonify

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.reply_headers import HeaderInjection, check_display_name
from aliasd.models import ReverseAlias
from aliasd.web import service
from aliasd.web.api import _str, body, bp, error
from aliasd.web.context import db_session, settings
from aliasd.web.permissions import current_user, token_required


def contact_json(row: ReverseAlias) -> dict[str, Any]:
    def when(value):
        return value.isoformat() if value else None

    return {
        "id": row.id,
        "reverse_alias": row.address,
        "correspondent": row.correspondent,
        "name": row.correspondent_name,
        "enabled": row.enabled,
        "created_at": when(row.created_at),
        "last_used_at": when(row.last_used_at),
        "forwarded": row.forwarded_count,
        "sent": row.sent_count,
        "refused": row.refused_count,
        "last_refused_at": when(row.last_refused_at),
        "last_refused_sender": row.last_refused_sender,
    }


def _alias(alias_id: int):
    return service.alias_for(db_session(), current_user(), alias_id)


@bp.get("/aliases/<int:alias_id>/contacts")
@token_required
def list_contacts(alias_id: int):
    try:
        alias = _alias(alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    return jsonify({"contacts": [contact_json(r) for r in ra.list_for_alias(db_session(), alias.id)]})


@bp.post("/aliases/<int:alias_id>/contacts")
@token_required
def write_to(alias_id: int):
    """Write to someone: the reverse alias to send to from the owner's mail client."""
    data = body()
    s = db_session()
    try:
        alias = _alias(alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    try:
        name = check_display_name(_str(data, "name"))
        row = ra.write_to(s, alias, _str(data, "correspondent") or "", name=name,
                          reply_domain=settings().reply_domain)
        s.commit()
    except (ra.ReverseAliasRefused, HeaderInjection) as exc:
        s.rollback()
        return error(422, str(exc))
    return jsonify(contact_json(row)), 201


def _contact_action(alias_id: int, contact_id: int, action: str):
    s = db_session()
    try:
        row = ra.get_for_alias(s, _alias(alias_id).id, contact_id)
    except core.NotFound:
        return error(404, "no such contact")
    if action == "delete":
        ra.delete(s, row)
        s.commit()
        return "", 204
    ra.set_enabled(s, row, action == "enable")
    s.commit()
    return jsonify(contact_json(row))


@bp.post("/aliases/<int:alias_id>/contacts/<int:contact_id>/disable")
@token_required
def disable_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "disable")


@bp.post("/aliases/<int:alias_id>/contacts/<int:contact_id>/enable")
@token_required
def enable_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "enable")


@bp.delete("/aliases/<int:alias_id>/contacts/<int:contact_id>")
@token_required
def delete_contact(alias_id: int, contact_id: int):
    return _contact_action(alias_id, contact_id, "delete")


@bp.post("/aliases/<int:alias_id>/reply-settings")
@token_required
def reply_settings(alias_id: int):
    """``reply_name`` (display name of mail sent as the alias), ``reply_mode``
    (preserve | rewrite | "" for the domain's)."""
    data = body()
    s = db_session()
    try:
        alias = _alias(alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    try:
        if "reply_name" in data:
            alias.reply_name = check_display_name(_str(data, "reply_name"))
        if "reply_mode" in data:
            mode = _str(data, "reply_mode") or None
            if mode not in (None, "preserve", "rewrite"):
                return error(422, "reply_mode must be 'preserve', 'rewrite' or empty")
            alias.reply_mode = mode
    except HeaderInjection as exc:
        s.rollback()
        return error(422, str(exc))
    s.commit()
    return jsonify({"reply_name": alias.reply_name, "reply_mode": alias.reply_mode})
