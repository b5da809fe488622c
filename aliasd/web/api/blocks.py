"""Sender blocks in the JSON API: a user's own blocks, for all their aliases or for one.
They are enforced by the milter for that user's mail only; server-wide rules are an
admin's tool on the blocklist page and the command line.

    GET    /api/blocks                      the caller's blocks
    POST   /api/blocks                      {"sender": "spam.example"} for all their aliases
    DELETE /api/blocks/<id>                 remove one
    GET    /api/aliases/<id>/blocks         the blocks that apply to one alias
    POST   /api/aliases/<id>/blocks         {"sender": ..., "scope": "alias" | "user"}
"""

from __future__ import annotations

from flask import jsonify

from aliasd.core import aliases as core
from aliasd.core import sender_blocks
from aliasd.web import service
from aliasd.web.api import _str, body, bp, error
from aliasd.web.context import db_session
from aliasd.web.permissions import current_user, token_required


def _add(owner_id: int, sender: str | None, alias=None):
    if not sender:
        return error(422, "'sender' is required: a sender domain or address")
    s = db_session()
    try:
        block = sender_blocks.add_block(s, owner_id, sender, alias=alias, note="added via the API")
        s.commit()
    except core.AliasdError as exc:
        s.rollback()
        return error(422, str(exc))
    return jsonify(sender_blocks.block_json(block)), 201


@bp.get("/blocks")
@token_required
def list_blocks():
    blocks = sender_blocks.list_blocks(db_session(), current_user().id)
    return jsonify({"blocks": [sender_blocks.block_json(b) for b in blocks]})


@bp.post("/blocks")
@token_required
def add_user_block():
    return _add(current_user().id, _str(body(), "sender"))


@bp.delete("/blocks/<int:block_id>")
@token_required
def delete_block(block_id: int):
    user = current_user()
    s = db_session()
    try:
        block = sender_blocks.remove_block(s, None if user.is_admin else user.id, block_id)
        s.commit()
    except core.NotFound:
        s.rollback()
        return error(404, "no such block")
    return jsonify({"deleted": block_id, "sender": block.sender})


@bp.get("/aliases/<int:alias_id>/blocks")
@token_required
def alias_blocks(alias_id: int):
    s = db_session()
    try:
        alias = service.alias_for(s, current_user(), alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    blocks = sender_blocks.list_blocks(s, alias.owner_id, alias_id=alias.id)
    return jsonify({"blocks": [sender_blocks.block_json(b) for b in blocks]})


@bp.post("/aliases/<int:alias_id>/blocks")
@token_required
def add_alias_block(alias_id: int):
    data = body()
    scope = _str(data, "scope") or "alias"
    if scope not in ("alias", "user"):
        return error(422, "'scope' must be 'alias' or 'user'")
    try:
        alias = service.alias_for(db_session(), current_user(), alias_id)
    except core.NotFound:
        return error(404, "no such alias")
    return _add(alias.owner_id, _str(data, "sender"), alias if scope == "alias" else None)
