"""Which domains a block may not touch, and how a domain is matched against a set of
domains. Every path that creates a block (auto-block, the Block buttons, the CLI, the
API) asks here, so "protected" means one thing everywhere.

A block of a domain covers its subdomains. So a block of ``d`` touches a protected
domain ``p`` when ``d`` is ``p``, a subdomain of ``p`` (spam forges ``x.example.net`` for
a served ``example.net``), or a parent of ``p`` (blocking ``example.net`` would refuse
``mail.example.net``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.addresses import domain_of
from aliasd.models import Domain, User


def covering(domain: str | None, names: Container[str]) -> str | None:
    """The first of ``domain`` and its parent domains that is in ``names`` (a bare top
    level label never counts); None when none is."""
    if not domain:
        return None
    labels = domain.split(".")
    for i in range(len(labels) - 1):
        candidate = ".".join(labels[i:])
        if candidate in names:
            return candidate
    return None


def is_protected(domain: str, protected: Iterable[str]) -> bool:
    """Whether a block of ``domain`` would touch one of ``protected`` (see the module
    docstring): equal, inside one, or a parent of one."""
    protected = protected if isinstance(protected, (set, frozenset, dict)) else set(protected)
    if covering(domain, protected) is not None:
        return True
    suffix = "." + domain
    return any(p.endswith(suffix) for p in protected)


def protected_domains(session: Session, owner_id: int | None = None) -> set[str]:
    """Domains no block may touch: the domains aliasd serves (spam forges them, and a
    block would refuse the users' own addresses) and mailbox domains. For a server-wide
    rule (``owner_id`` None) every user's mailbox domain; for one user's own block only
    that user's (another user's mail provider is theirs to block for themselves)."""
    protected = set(session.scalars(select(Domain.name)))
    mailboxes = select(User.mailbox).distinct()
    if owner_id is not None:
        mailboxes = mailboxes.where(User.id == owner_id)
    for mailbox in session.scalars(mailboxes):
        own = domain_of(mailbox)
        if own:
            protected.add(own)
    return protected


def exempt_domains(settings: Settings) -> set[str]:
    """``autoblock_exempt_domains``: big mailbox providers that also carry wanted mail;
    never blocked server-wide."""
    return {d.strip().lower().rstrip(".") for d in settings.autoblock_exempt_domains if d.strip()}


def server_block_refusal(session: Session, settings: Settings, domain: str) -> str | None:
    """Why a server-wide rule may not block ``domain``; None when it may."""
    return server_block_refusals(session, settings, [domain]).get(domain)


def server_block_refusals(
    session: Session, settings: Settings, domains: Iterable[str]
) -> dict[str, str]:
    """:func:`server_block_refusal` for many domains (a page of senders) with one read
    of the protected domains; only the refused ones are keys."""
    protected, exempt = protected_domains(session), exempt_domains(settings)
    refusals = {}
    for domain in domains:
        if is_protected(domain, protected):
            refusals[domain] = (f"{domain} is a domain this server serves or where users keep "
                                "their mailboxes; a server-wide block would refuse their own mail")
        elif is_protected(domain, exempt):
            refusals[domain] = (f"{domain} is a large mail provider (autoblock_exempt_domains); a "
                                "server-wide block would refuse wanted mail for every user")
    return refusals


def user_block_refusal(session: Session, owner_id: int, domain: str) -> str | None:
    """Why a block for one user's aliases may not block ``domain``; None when it may."""
    if is_protected(domain, protected_domains(session, owner_id)):
        return (f"{domain} is a domain this server serves or your own mailbox domain; "
                "blocking it would refuse your own mail")
    return None
