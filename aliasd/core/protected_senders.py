"""Which sender domains a user's blocks must spare: the known senders of every one of
the user's sites (their own registrable domains, affiliated domains, the stored known
senders) and the user's mailbox domain. Auto-block, the Block button and the site page's
block suggestions all ask here."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.core import attribution
from aliasd.core.addresses import domain_of, registrable_domain
from aliasd.models import Alias, SiteKnownSender, User


def for_user(
    session: Session, owner_id: int, affiliations_file: str = ""
) -> set[str]:
    """Registrable domains known to belong to any of the user's sites (own, affiliated,
    stored) and the user's mailbox domain: never a block target for this user."""
    affiliated = attribution.affiliations(affiliations_file)
    sites = session.scalars(
        select(Alias.site).where(Alias.owner_id == owner_id, Alias.site.is_not(None)).distinct()
    )
    protected: set[str] = set()
    for site in sites:
        reg = registrable_domain(site)
        if reg:
            protected.add(reg)
            protected |= affiliated.get(reg, frozenset())
    protected |= set(
        session.scalars(
            select(SiteKnownSender.domain).where(SiteKnownSender.owner_id == owner_id).distinct()
        )
    )
    mailbox = session.scalar(select(User.mailbox).where(User.id == owner_id))
    own = registrable_domain(domain_of(mailbox))
    if own:
        protected.add(own)
    return protected


def is_protected(domain: str, protected: set[str]) -> bool:
    """Whether ``domain`` (any host under it) is one of the protected registrable ones."""
    return (registrable_domain(domain) or domain) in protected or domain in protected
