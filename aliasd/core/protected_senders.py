"""Which sender domains a user's blocks must spare: the known senders of every one of
the user's sites (their own registrable domains, affiliated domains, the stored known
senders) and the user's mailbox domain. Auto-block, the Block button and the site page's
block suggestions all ask here, and :class:`Protection` says which of these a domain is
(the site page's "no" says why)."""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.core import attribution
from aliasd.core.addresses import domain_of, registrable_domain
from aliasd.models import Alias, SiteKnownSender, User

MAILBOX = ""  # the key protections() uses for the mailbox domain: no site is named ""


@dataclass(frozen=True)
class Protection:
    """Why a sender domain is spared on one site's page."""

    mailbox: bool  # the owner's mailbox domain
    this_site: bool  # a sender of the site being looked at (its own domain too)
    other_sites: tuple[str, ...]  # the owner's other sites it is a known sender of

    def describe(self, whose: str = "your") -> str:
        """A few words; ``whose`` is "your" or "alice's"."""
        if self.mailbox:
            return f"{whose} mailbox domain"
        if self.this_site:
            return "a sender of this site"
        first, more = self.other_sites[0], len(self.other_sites) - 1
        return (f"a known sender of another of {whose} sites ({first}"
                f"{f' and {more} more' if more else ''})")


def protections(
    session: Session, owner_id: int, affiliations_file: str = ""
) -> dict[str, frozenset[str]]:
    """Each registrable domain known to belong to one of the user's sites (own,
    affiliated, stored) → those sites; the user's mailbox domain → ``MAILBOX``."""
    affiliated = attribution.affiliations(affiliations_file)
    out: dict[str, set[str]] = {}
    sites = session.scalars(
        select(Alias.site).where(Alias.owner_id == owner_id, Alias.site.is_not(None)).distinct()
    )
    for site in sites:
        reg = registrable_domain(site)
        if reg:
            for domain in {reg} | affiliated.get(reg, frozenset()):
                out.setdefault(domain, set()).add(site)
    known = session.execute(
        select(SiteKnownSender.domain, SiteKnownSender.site)
        .where(SiteKnownSender.owner_id == owner_id).distinct()
    )
    for domain, site in known:
        out.setdefault(domain, set()).add(site)
    mailbox = session.scalar(select(User.mailbox).where(User.id == owner_id))
    own = registrable_domain(domain_of(mailbox))
    if own:
        out.setdefault(own, set()).add(MAILBOX)
    return {domain: frozenset(sites) for domain, sites in out.items()}


def for_user(
    session: Session, owner_id: int, affiliations_file: str = ""
) -> set[str]:
    """Registrable domains known to belong to any of the user's sites (own, affiliated,
    stored) and the user's mailbox domain: never a block target for this user."""
    return set(protections(session, owner_id, affiliations_file))


def _entry(domain: str, protected: Container[str]) -> str | None:
    for key in (registrable_domain(domain) or domain, domain):
        if key in protected:
            return key
    return None


def is_protected(domain: str, protected: Container[str]) -> bool:
    """Whether ``domain`` (any host under it) is one of the protected registrable ones."""
    return _entry(domain, protected) is not None


def protection(
    domain: str, protected: Mapping[str, frozenset[str]], site: str
) -> Protection | None:
    """Why ``domain`` is spared on ``site``'s page (``protected``: from
    :func:`protections`); None when it is not."""
    key = _entry(domain, protected)
    if key is None:
        return None
    sites = protected[key]
    return Protection(mailbox=MAILBOX in sites, this_site=site in sites,
                      other_sites=tuple(sorted(sites - {MAILBOX, site})))
