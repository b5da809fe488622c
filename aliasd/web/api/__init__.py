"""JSON API under /api/, authenticated by per-user tokens only (no cookies, hence no
CSRF): list, show, create, disable, enable, burn; plus SimpleLogin's
``POST /api/alias/random/new`` so password managers' alias generators work."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from flask import Blueprint, jsonify, request
from werkzeug.exceptions import BadRequest

from aliasd.core import aliases as core
from aliasd.models import Alias
from aliasd.web import service
from aliasd.web.context import db_session
from aliasd.web.errors import error_response
from aliasd.web.permissions import current_user, token_required

bp = Blueprint("api", __name__, url_prefix="/api")


def alias_json(alias: Alias) -> dict[str, Any]:
    def when(value):
        return value.isoformat() if value else None

    return {
        "id": alias.id,
        "address": alias.address,
        "site": alias.site,
        "state": alias.state,
        "enabled": alias.state == "active",
        "destinations": alias.destination_list,
        "note": alias.note,
        "origin": alias.origin,
        "created_at": when(alias.created_at),
        "forwarded": alias.forwarded_count,
        "spam": alias.spam_count,
        "rejected": alias.rejected_count,
        "held": alias.held_count,
        "last_mail_at": when(alias.last_mail_at),
    }


def error(status: int, message: str):
    """The API's error answer: the one error builder, which answers JSON under /api."""
    return error_response(status, HTTPStatus(status).phrase, message)


def body() -> dict[str, Any]:
    """The JSON object body, or {} when there is none; 400 for anything else."""
    if not request.get_data(cache=True):
        return {}
    try:
        data = request.get_json(force=True, silent=False)
    except BadRequest:
        data = None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    if _has_nul(data):  # "\u0000" in JSON: PostgreSQL text cannot hold it
        raise BadRequest("the body contains a NUL character")
    return data


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _str(data: dict, key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{key}' must be a string")
    return value


def _create_error(exc: core.AliasdError):
    if isinstance(exc, core.AlreadyExists | core.AddressRetired):
        return error(409, str(exc))
    return error(422, str(exc))


@bp.get("/aliases")
@token_required
def list_aliases():
    args = request.args
    page = service.list_aliases(
        db_session(), current_user(), search=args.get("q", ""),
        state=args.get("state", ""), sort=args.get("sort", "created"),
        after=args.get("after"), before=args.get("before"), last=args.get("last") == "1",
        # type=int falls back to 50 for anything int() refuses ("²" passes isdigit()).
        page_size=min(max(args.get("limit", 50, type=int), 1), 200),
    )
    return jsonify({
        "aliases": [alias_json(a) for a in page.items],
        "total": page.total,
        "next": page.older,
        "prev": page.newer,
    })


@bp.get("/aliases/<int:alias_id>")
@token_required
def show(alias_id: int):
    try:
        alias = service.alias_for(db_session(), current_user(), alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    return jsonify(alias_json(alias))


@bp.post("/aliases")
@token_required
def create():
    data = body()
    destinations = data.get("destinations") or []
    if not isinstance(destinations, list) or not all(isinstance(d, str) for d in destinations):
        raise BadRequest("'destinations' must be a list of addresses")
    s = db_session()
    try:
        alias = service.create_for_user(
            s, current_user(), site=_str(data, "site"), domain_name=_str(data, "domain"),
            local=_str(data, "local"), random=bool(data.get("random")),
            note=_str(data, "note"), destinations=destinations, origin="api",
        )
        s.commit()
    except core.AliasdError as exc:
        s.rollback()
        return _create_error(exc)
    return jsonify(alias_json(alias)), 201


def _transition(alias_id: int, action: str):
    s = db_session()
    user = current_user()
    try:
        alias = service.alias_for(s, user, alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    try:
        service.apply_action(s, user, alias, action)
    except core.InvalidTransition as exc:
        s.rollback()
        return error(409, str(exc))
    s.commit()
    return jsonify(alias_json(alias))


@bp.post("/aliases/<int:alias_id>/disable")
@token_required
def disable(alias_id: int):
    return _transition(alias_id, "disable")


@bp.post("/aliases/<int:alias_id>/enable")
@token_required
def enable(alias_id: int):
    return _transition(alias_id, "enable")


@bp.post("/aliases/<int:alias_id>/burn")
@token_required
def burn(alias_id: int):
    return _transition(alias_id, "burn")


@bp.post("/alias/random/new")
@token_required
def simplelogin_random_new():
    """SimpleLogin's endpoint: ``hostname`` query parameter (the site), optional JSON
    ``note``; answers 201 ``{"alias": "..."}`` with a random-suffixed address."""
    data = body()
    hostname = request.args.get("hostname") or None
    s = db_session()
    try:
        alias = service.create_for_user(
            s, current_user(), site=hostname, random=True, note=_str(data, "note"),
            origin="api",
        )
        s.commit()
    except core.AliasdError as exc:
        s.rollback()
        return _create_error(exc)
    payload = alias_json(alias)
    payload["alias"] = alias.address
    return jsonify(payload), 201


from aliasd.web.api import blocks as _blocks  # noqa: E402,F401 - registers its routes
from aliasd.web.api import contacts as _contacts  # noqa: E402,F401 - registers its routes
from aliasd.web.api import sites  # noqa: E402,F401 - registers its routes
