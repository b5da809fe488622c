"""Per-user and per-alias sender blocks: "block this sender for this alias" and "for
all my aliases". They are enforced by the milter for that user's (or alias's) mail only,
never written to Postfix's tables: a server-wide rule is an admin's tool.

A block names a sender domain (which covers its subdomains) or one sender address. The
caller checks who may change which block (the web layer's ownership check)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from aliasd.core.addresses import AddressError, normalize_address, normalize_domain
from aliasd.core.block_protection import user_block_refusal
from aliasd.core.errors import AliasdError, NotFound
from aliasd.models import Alias, SenderBlock, utcnow

MAX_BLOCKS_PER_USER = 5000


class SenderBlockError(AliasdError):
    """A sender block could not be added; the message says why."""


def normalize_sender(value: str) -> str:
    """A domain (``Example.COM.`` → ``example.com``; ``@example.com`` too) or an address
    (lower case); SenderBlockError for anything else."""
    text = (value or "").strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text.startswith("@"):
        text = text[1:]
    if not text or len(text) > 320:
        raise SenderBlockError("enter a sender domain (example.com) or address")
    try:
        if "@" in text:
            return normalize_address(text)
        return normalize_domain(text)
    except AddressError as exc:
        raise SenderBlockError(f"{text[:100]!r} is not a sender domain or address: {exc}") from exc


def sender_domain(sender: str) -> str:
    return sender.rpartition("@")[2]


def add_block(
    session: Session,
    owner_id: int,
    sender: str,
    *,
    alias: Alias | None = None,
    note: str | None = None,
) -> SenderBlock:
    """Block ``sender`` for all of ``owner_id``'s aliases, or for ``alias`` only (which
    must be theirs). Idempotent: an existing block is returned."""
    if alias is not None and alias.owner_id != owner_id:
        raise NotFound("no such alias")
    value = normalize_sender(sender)
    refusal = user_block_refusal(session, owner_id, sender_domain(value))
    if refusal:
        raise SenderBlockError(refusal)
    alias_id = alias.id if alias is not None else None
    existing = session.scalar(
        select(SenderBlock).where(
            SenderBlock.owner_id == owner_id,
            SenderBlock.sender == value,
            SenderBlock.alias_id.is_(None) if alias_id is None else SenderBlock.alias_id == alias_id,
        )
    )
    if existing is not None:
        return existing
    count = len(list_blocks(session, owner_id))
    if count >= MAX_BLOCKS_PER_USER:
        raise SenderBlockError(f"you have {count} sender blocks, the most one user may have")
    block = SenderBlock(owner_id=owner_id, alias_id=alias_id, sender=value,
                        note=(note or "").strip()[:500] or None, hits=0)  # fmt: skip
    session.add(block)
    session.flush()
    return block


def get_block(session: Session, owner_id: int | None, block_id: int) -> SenderBlock:
    """The block ``block_id`` of ``owner_id`` (None: any owner, for admins); NotFound
    otherwise, the same answer as for a block that does not exist."""
    block = session.get(SenderBlock, block_id) if -(2**31) <= block_id < 2**31 else None
    if block is None or (owner_id is not None and block.owner_id != owner_id):
        raise NotFound(f"no sender block with id {block_id}")
    return block


def remove_block(session: Session, owner_id: int | None, block_id: int) -> SenderBlock:
    block = get_block(session, owner_id, block_id)
    session.delete(block)
    session.flush()
    return block


def list_blocks(
    session: Session, owner_id: int, *, alias_id: int | None = None, user_wide: bool = False
) -> list[SenderBlock]:
    """One user's blocks: all of them; with ``alias_id`` that alias's own and the
    user-wide ones (what applies to the alias); with ``user_wide`` the user-wide only."""
    query = select(SenderBlock).where(SenderBlock.owner_id == owner_id)
    if alias_id is not None:
        query = query.where((SenderBlock.alias_id == alias_id) | SenderBlock.alias_id.is_(None))
    elif user_wide:
        query = query.where(SenderBlock.alias_id.is_(None))
    return list(session.scalars(query.order_by(SenderBlock.sender, SenderBlock.id)))


def block_json(block: SenderBlock) -> dict:
    return {
        "id": block.id,
        "sender": block.sender,
        "scope": "alias" if block.alias_id is not None else "user",
        "alias_id": block.alias_id,
        "note": block.note,
        "hits": block.hits,
        "created_at": block.created_at.isoformat() if block.created_at else None,
        "last_hit_at": block.last_hit_at.isoformat() if block.last_hit_at else None,
    }


def record_hits(session: Session, block_ids: list[int]) -> None:
    """Count one refused message against each block (atomic, for many milters)."""
    if block_ids:
        session.execute(
            update(SenderBlock)
            .where(SenderBlock.id.in_(block_ids))
            .values(hits=SenderBlock.hits + 1, last_hit_at=utcnow())
        )
