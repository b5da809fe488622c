"""Reverse aliases: one unguessable address per (alias, outside correspondent). Mail
from the correspondent to the alias carries it (Reply-To: or From:); mail to it from the
alias's owner goes out as the alias to the correspondent. Nobody else may use one.

Every write that changes what Postfix must be told appends to the change feed, as alias
writes do, so each lookupd learns of a new, disabled or deleted reverse alias."""

from __future__ import annotations

import datetime as dt
import functools
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, and_, bindparam, exists, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from aliasd.core.addresses import AddressError, domain_of, normalize_address, normalize_domain
from aliasd.core.aliases import REVERSE_ALIAS_PREFIX, record_change
from aliasd.core.errors import AliasdError, NotFound
from aliasd.models import (
    Alias,
    AliasState,
    Domain,
    ReplyMode,
    ReverseAlias,
    User,
    utcnow,
)

PREFIX = REVERSE_ALIAS_PREFIX  # local parts starting so are reverse aliases, never aliases
_TOKEN_BYTES = 13  # 104 random bits: 21 base32 characters


class ReverseAliasRefused(AliasdError):
    """No reverse alias for this correspondent (a loop, a bad address, a dead alias)."""


def is_reverse_local(local: str) -> bool:
    return local.lower().startswith(PREFIX)


def new_local_part() -> str:
    return PREFIX + secrets.token_hex(_TOKEN_BYTES)


@dataclass(frozen=True)
class ReverseTarget:
    """A reverse alias and what the mail path needs of its alias and owner (detached)."""

    id: int
    address: str
    correspondent: str
    correspondent_name: str | None
    enabled: bool
    alias_id: int
    alias_address: str
    alias_state: str
    alias_reply_name: str | None
    reply_mode: str
    owner_id: int
    owner_mailbox: str
    destinations: tuple[str, ...]

    @property
    def live(self) -> bool:
        return self.enabled and self.alias_state == AliasState.ACTIVE.value

    @property
    def alias_domain(self) -> str:
        return self.alias_address.rpartition("@")[2]

    def owner_addresses(self) -> set[str]:
        """Addresses that count as the owner's: the mailbox and the alias's destinations."""
        return {self.owner_mailbox, *self.destinations}


def effective_reply_mode(alias_mode: str | None, domain_mode: str | None, default: str) -> str:
    """The alias's choice, else its domain's, else the installation's."""
    for mode in (alias_mode, domain_mode, default):
        if mode in (ReplyMode.PRESERVE.value, ReplyMode.REWRITE.value):
            return mode
    return ReplyMode.PRESERVE.value


def reverse_domain(alias_address: str, reply_domain: str) -> str:
    return normalize_domain(reply_domain) if reply_domain else alias_address.rpartition("@")[2]


def managed_domains(session: Session, reply_domain: str) -> set[str]:
    names = set(session.scalars(select(Domain.name)))
    if reply_domain:
        names.add(normalize_domain(reply_domain))
    return names


def _own_domain(domain: str | None, reply_domain: str, in_domains: bool) -> bool:
    """Whether ``domain`` is one of aliasd's own (``in_domains``: in the domains table)."""
    return in_domains or bool(reply_domain and domain == normalize_domain(reply_domain))


def _in_domains(domain: str | None):
    return exists().where(Domain.name == (domain or ""))


def for_correspondent(
    session: Session,
    alias: Alias,
    correspondent: str,
    *,
    name: str | None = None,
    reply_domain: str = "",
) -> ReverseAlias:
    """The live reverse alias of ``alias`` for ``correspondent``, created when missing.
    Refuses addresses on aliasd's own domains: a reverse alias leading to another alias
    (or reverse alias) would let mail loop between them."""
    try:
        correspondent = normalize_address(correspondent)
    except AddressError as exc:
        raise ReverseAliasRefused(f"correspondent: {exc}") from exc
    domain = domain_of(correspondent)
    if _own_domain(domain, reply_domain, bool(session.scalar(select(_in_domains(domain))))):
        raise ReverseAliasRefused(
            f"{correspondent} is on one of aliasd's own domains: replies would loop"
        )
    existing = session.scalar(
        select(ReverseAlias)
        .where(ReverseAlias.alias_id == alias.id, ReverseAlias.correspondent == correspondent,
               ReverseAlias.deleted_at.is_(None))
        .order_by(ReverseAlias.id)
        .limit(1)
    )
    if existing is not None:
        if name and not existing.correspondent_name:
            existing.correspondent_name = _clean_name(name)
        return existing
    domain = reverse_domain(alias.address, reply_domain)
    for _attempt in range(3):
        address = f"{new_local_part()}@{domain}"
        if session.scalar(select(Alias.id).where(Alias.address == address)) is not None:
            continue
        row = ReverseAlias(address=address, alias_id=alias.id, correspondent=correspondent,
                           correspondent_name=_clean_name(name), enabled=True,
                           forwarded_count=0, sent_count=0, refused_count=0)
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            continue
        record_change(session, address)
        return row
    raise ReverseAliasRefused("could not pick an unused reverse alias address")


def write_to(session: Session, alias: Alias, correspondent: str, *, name: str | None = None,
             reply_domain: str = "") -> ReverseAlias:
    """"Write to someone": the reverse alias the owner writes to so that a new message
    reaches ``correspondent`` from the alias. A disabled or burned alias cannot send."""
    if alias.state != AliasState.ACTIVE.value:
        raise ReverseAliasRefused(f"{alias.address} is {alias.state}: it cannot send")
    row = for_correspondent(session, alias, correspondent, name=name, reply_domain=reply_domain)
    if not row.enabled:
        raise ReverseAliasRefused(f"the contact {row.correspondent} is disabled; enable it first")
    return row


def _clean_name(name: str | None) -> str | None:
    if not name:
        return None
    text = "".join(c for c in name if c.isprintable())
    text = " ".join(text.split())[:200]
    return text or None


# --- reading ------------------------------------------------------------------------
@dataclass(frozen=True)
class ForwardFacts:
    """What forwarding mail from a correspondent to an alias needs, read in one query:
    ``reverse_*`` describe the correspondent's existing reverse alias (None: none yet)."""

    destinations: tuple[str, ...]
    owner_mailbox: str
    reply_mode: str
    refused: bool  # no reverse alias may exist for this correspondent (own domain, bad)
    reverse_id: int | None
    reverse_address: str | None
    reverse_enabled: bool
    reverse_named: bool

    def owner_addresses(self) -> set[str]:
        return {self.owner_mailbox, *self.destinations}


@functools.cache
def _forward_query():
    """Built once: building the expression cost more than running it on SQLite."""
    return (
        select(Alias.destinations, Alias.reply_mode, User.mailbox, Domain.reply_mode,
               exists().where(Domain.name == bindparam("domain")), ReverseAlias.id,
               ReverseAlias.address, ReverseAlias.enabled, ReverseAlias.correspondent_name)
        .join(User, Alias.owner_id == User.id)
        .join(Domain, Alias.domain_id == Domain.id)
        .outerjoin(ReverseAlias, and_(ReverseAlias.alias_id == Alias.id,
                                      ReverseAlias.correspondent == bindparam("correspondent"),
                                      ReverseAlias.deleted_at.is_(None)))
        .where(Alias.id == bindparam("alias_id"))
        .order_by(ReverseAlias.id)
        .limit(1)
    )


def forward_facts(session: Session | Connection, alias_id: int, correspondent: str, *,
                  reply_domain: str = "", default_mode: str = "preserve"
                  ) -> ForwardFacts | None:
    """The alias (None: gone), its owner, reply mode and the live reverse alias
    :func:`for_correspondent` would return for ``correspondent`` if one exists. Creating
    one, or naming a nameless one, stays :func:`for_correspondent`'s job."""
    try:
        correspondent = normalize_address(correspondent)
    except AddressError:
        correspondent = ""
    domain = domain_of(correspondent)
    connection = session.connection() if isinstance(session, Session) else session
    row = connection.execute(_forward_query(), {  # Core: no ORM layer to pass
        "alias_id": alias_id, "correspondent": correspondent, "domain": domain or ""}).first()
    if row is None:
        return None
    dests, alias_mode, mailbox, domain_mode, in_domains, rid, raddress, renabled, rname = row
    return ForwardFacts(
        destinations=tuple(d for d in dests.split(",") if d), owner_mailbox=mailbox,
        reply_mode=effective_reply_mode(alias_mode, domain_mode, default_mode),
        refused=not correspondent or _own_domain(domain, reply_domain, bool(in_domains)),
        reverse_id=rid, reverse_address=raddress, reverse_enabled=bool(renabled),
        reverse_named=bool(rname),
    )


def resolve(session: Session, address: str, default_mode: str = "preserve") -> ReverseTarget | None:
    """The live or disabled reverse alias at ``address`` (None: none, or deleted)."""
    try:
        address = normalize_address(address)
    except AddressError:
        return None
    row = session.execute(
        select(ReverseAlias, Alias, User.mailbox, Domain.reply_mode)
        .join(Alias, ReverseAlias.alias_id == Alias.id)
        .join(User, Alias.owner_id == User.id)
        .join(Domain, Alias.domain_id == Domain.id)
        .where(ReverseAlias.address == address, ReverseAlias.deleted_at.is_(None))
    ).first()
    if row is None:
        return None
    reverse, alias, mailbox, domain_mode = row
    return _target(reverse, alias, mailbox, domain_mode, default_mode)


def _target(reverse: ReverseAlias, alias: Alias, mailbox: str, domain_mode: str | None,
            default_mode: str) -> ReverseTarget:
    return ReverseTarget(
        id=reverse.id, address=reverse.address, correspondent=reverse.correspondent,
        correspondent_name=reverse.correspondent_name, enabled=reverse.enabled,
        alias_id=alias.id, alias_address=alias.address, alias_state=alias.state,
        alias_reply_name=alias.reply_name,
        reply_mode=effective_reply_mode(alias.reply_mode, domain_mode, default_mode),
        owner_id=alias.owner_id, owner_mailbox=mailbox,
        destinations=tuple(alias.destination_list),
    )


def list_for_alias(session: Session, alias_id: int) -> list[ReverseAlias]:
    """The alias's contacts, newest first (deleted ones are not listed)."""
    return list(session.scalars(
        select(ReverseAlias)
        .where(ReverseAlias.alias_id == alias_id, ReverseAlias.deleted_at.is_(None))
        .order_by(ReverseAlias.created_at.desc(), ReverseAlias.id.desc())
    ))


def get_for_alias(session: Session, alias_id: int, reverse_id: int) -> ReverseAlias:
    row = session.get(ReverseAlias, reverse_id)
    if row is None or row.alias_id != alias_id or row.deleted_at is not None:
        raise NotFound("no such contact")
    return row


def lookup_rows(conn: Connection, addresses: Iterable[str] | None = None):
    """(address, destinations, state) for Postfix: the alias's destinations, and the
    alias's state unless the reverse alias is disabled. Deleted ones are left out. With
    ``addresses``, the reverse aliases at those addresses or of the aliases there."""
    query = (
        select(ReverseAlias.address, Alias.destinations, Alias.state, ReverseAlias.enabled)
        .join(Alias, ReverseAlias.alias_id == Alias.id)
        .where(ReverseAlias.deleted_at.is_(None))
    )
    if addresses is not None:
        wanted = list(addresses)
        query = query.where(or_(ReverseAlias.address.in_(wanted), Alias.address.in_(wanted)))
    for address, dests, state, enabled in conn.execute(query):
        yield address, dests, state if enabled else AliasState.DISABLED.value


# --- changing -----------------------------------------------------------------------
def set_enabled(session: Session, row: ReverseAlias, enabled: bool) -> None:
    row.enabled = enabled
    record_change(session, row.address)


def delete(session: Session, row: ReverseAlias) -> None:
    """A tombstone: the address is refused from now on and never handed out again."""
    row.deleted_at = utcnow()
    row.enabled = False
    record_change(session, row.address)


def record_forwarded(session: Session, reverse_id: int, times: int = 1) -> None:
    """Count ``times`` messages forwarded with the reverse alias (a Core statement: no
    ORM objects to keep in step, and one per reverse alias for a batch of messages)."""
    table = ReverseAlias.__table__
    session.execute(update(table).where(table.c.id == reverse_id).values(
        forwarded_count=table.c.forwarded_count + times, last_used_at=utcnow()))


def record_sent(session: Session, reverse_id: int) -> None:
    session.execute(update(ReverseAlias).where(ReverseAlias.id == reverse_id).values(
        sent_count=ReverseAlias.sent_count + 1, last_used_at=utcnow()))


def record_refused(session: Session, reverse_id: int, sender: str,
                   at: dt.datetime | None = None) -> None:
    session.execute(update(ReverseAlias).where(ReverseAlias.id == reverse_id).values(
        refused_count=ReverseAlias.refused_count + 1, last_refused_at=at or utcnow(),
        last_refused_sender=(sender or "<>")[:320]))
