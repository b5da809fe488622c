"""One site of the spam-source report: spam per day, senders (which are the site's own,
which are blocked), sample spam subjects, the leak status with its evidence, the site's
known senders and block suggestions drawn from the evidence. Reads aggregates and at most
``SAMPLE_SUBJECTS`` events."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.core import block_protection, leaks, protected_senders
from aliasd.core.block_decision import BlockList, Sender, blocked_for, load_blocklist
from aliasd.core.report_site import aliases_under
from aliasd.core.reports import _as_date, _site_filter, period_start
from aliasd.models import Alias, MailEvent, SiteDay, SiteLeak, SiteSender

SAMPLE_SUBJECTS = 10
MAX_SENDERS = 200
MAX_EVIDENCE = 50


@dataclass
class SenderRow:
    domain: str
    total: int
    spam: int
    first_at: dt.datetime
    last_at: dt.datetime
    last_spam_at: dt.datetime | None
    blocked: bool
    rule_id: int | None  # the server rule's id, or the owner's sender block's id
    block_scope: str | None = None  # server | user | alias (None: not blocked)
    # Belongs to one of the owner's sites or is their mailbox domain: no block, and why.
    protection: protected_senders.Protection | None = None
    # A domain this server serves (or the owner's mailbox domain): spam forges these, and
    # block_protection refuses any block of them, so the page offers none.
    unblockable: bool = False

    @property
    def protected(self) -> bool:
        return self.protection is not None


@dataclass
class SiteDetail:
    owner_id: int
    site: str
    days: list[tuple[dt.date, int, int]]  # (day, spam, total), every day of the window
    senders: list[SenderRow]
    subjects: list[tuple[dt.datetime, str, str | None]]  # (at, subject, sender domain)
    aliases: list[Alias]
    spam: int
    total: int
    status: leaks.LeakStatus = field(default_factory=lambda: leaks.LeakStatus(leaks.CLEAN, "", None, 0))
    evidence: list[SiteLeak] = field(default_factory=list)  # the first MAX_EVIDENCE
    evidence_total: int = 0
    known: list[leaks.KnownSender] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)  # block suggestions from the evidence


def site_detail(
    session: Session,
    owner_id: int,
    site: str,
    *,
    period: str = "30d",
    today: dt.date | None = None,
    leak_senders: int = 4,
    affiliations_file: str = "",
    exempt: Iterable[str] = (),
) -> SiteDetail | None:
    """Spam per day (gaps filled with zero), senders and sample subjects of one site of
    one owner; None when the site has no mail and no alias. ``exempt``: the large mail
    providers (``block_protection.exempt_domains``), never suggested as a block: one
    spam from gmail.com does not make all of Gmail a spam source."""
    today = today or dt.datetime.now(dt.UTC).date()
    since = period_start(period, today)
    day_rows = session.execute(
        _site_filter(
            select(SiteDay.day, SiteDay.spam, SiteDay.total).where(SiteDay.site == site),
            owner_id,
            since,
        ).order_by(SiteDay.day)
    ).all()
    aliases = list(
        session.scalars(
            select(Alias)
            .where(
                Alias.owner_id == owner_id,
                aliases_under(site),
            )
            .order_by(Alias.address)
        )
    )
    if not day_rows and not aliases:
        return None
    by_day = {_as_date(d): (int(s), int(t)) for d, s, t in day_rows}
    start = since or (min(by_day) if by_day else today)
    end = max([today, *by_day])
    days = []
    current = start
    while current <= end:
        spam, total = by_day.get(current, (0, 0))
        days.append((current, spam, total))
        current += dt.timedelta(days=1)

    blocklist = load_blocklist(session)
    protected = protected_senders.protections(session, owner_id, affiliations_file)
    exempt = set(exempt)
    own_domains = block_protection.protected_domains(session, owner_id)
    senders = []
    sender_query = select(SiteSender).where(
        SiteSender.owner_id == owner_id, SiteSender.site == site
    )
    if since is not None:
        sender_query = sender_query.where(
            SiteSender.last_at >= dt.datetime.combine(since, dt.time(), dt.UTC)
        )
    for row in session.scalars(
        sender_query.order_by(SiteSender.spam.desc(), SiteSender.total.desc()).limit(MAX_SENDERS)
    ):
        block = _block_of(blocklist, row.sender_domain, owner_id)
        senders.append(
            SenderRow(
                domain=row.sender_domain,
                total=row.total,
                spam=row.spam,
                first_at=row.first_at,
                last_at=row.last_at,
                last_spam_at=row.last_spam_at,
                blocked=block is not None,
                rule_id=block.id if block is not None else None,
                protection=protected_senders.protection(row.sender_domain, protected, site),
                block_scope=block.scope if block is not None else None,
                unblockable=block_protection.is_protected(row.sender_domain, own_domains),
            )
        )

    subjects: list[tuple[dt.datetime, str, str | None]] = []
    alias_ids = [a.id for a in aliases][:50]
    if alias_ids:
        # Bounded: the newest few spam events of these aliases, via (alias_id, at).
        rows = session.execute(
            select(MailEvent.at, MailEvent.subject, MailEvent.from_domain, MailEvent.sender_domain)
            .where(MailEvent.alias_id.in_(alias_ids), MailEvent.is_spam.is_(True))
            .order_by(MailEvent.at.desc())
            .limit(SAMPLE_SUBJECTS)
        ).all()
        subjects = [(r.at, r.subject or "(no subject)", r.from_domain or r.sender_domain)
                    for r in rows]
    # A leaked site can have hundreds of unrelated senders: the page shows the first
    # MAX_EVIDENCE (most spam first), the status comes from the site's summary.
    evidence = leaks.site_evidence(session, owner_id, site, limit=MAX_EVIDENCE)
    suggestions = [
        e.sender_domain for e in evidence
        if e.dismissed_at is None and (e.spam or e.confirmed_at) and "." in e.sender_domain
        and not protected_senders.is_protected(e.sender_domain, protected)
        and not block_protection.is_protected(e.sender_domain, exempt)
        and not block_protection.is_protected(e.sender_domain, own_domains)
        and _block_of(blocklist, e.sender_domain, owner_id) is None
    ]  # fmt: skip
    return SiteDetail(
        owner_id=owner_id,
        site=site,
        days=days,
        senders=senders,
        subjects=subjects,
        aliases=aliases,
        spam=sum(s for _d, s, _t in days),
        total=sum(t for _d, _s, t in days),
        status=leaks.statuses(session, [(owner_id, site)], leak_senders).get(
            (owner_id, site), leaks.LeakStatus(leaks.CLEAN, "", None, 0)
        ),
        evidence=evidence,
        evidence_total=(
            leaks.evidence_count(session, owner_id, site)
            if len(evidence) == MAX_EVIDENCE else len(evidence)
        ),
        known=leaks.list_known_senders(session, owner_id, site),
        suggestions=suggestions,
    )


def _block_of(blocklist: BlockList, domain: str, owner_id: int) -> Any:
    """The block (server rule or the owner's own) refusing mail from ``domain``."""
    return blocked_for(blocklist, Sender.of_domain(domain), owner_id=owner_id)
