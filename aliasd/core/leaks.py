"""A site's known senders and leak evidence, as stored per (owner, site).

``core.attribution`` decides whether one message's sender is the site; this module keeps
what that decision learns (``site_known_senders``) and what it finds (``site_leaks``),
turns the evidence into a status with a one-line reason, and carries out the user's
word: "this sender belongs to this site", undo, dismiss a leak, confirm a leak.

A site is *leaked* when an unrelated sender sent spam, when the user confirmed it, or
when several unrelated senders wrote; *shared* when fewer unrelated senders wrote clean
mail (a partner the site passed the address to); *clean* otherwise."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, select, update
from sqlalchemy.orm import Session

from aliasd.core import attribution, block_protection
from aliasd.core.addresses import (
    AddressError,
    looks_like_hostname,
    normalize_domain,
    parse_address,
    registrable_domain,
)
from aliasd.models import (
    SiteKnownSender,
    SiteLeak,
    SiteLeakSummary,
    UTCDateTime,
    utcnow,
)

CLEAN, SHARED, LEAKED = "clean", "shared", "leaked"
# The sender of evidence migrated from a leak date whose mail events were gone.
UNKNOWN_SENDER = "(unknown)"


@dataclass(frozen=True)
class KnownSender:
    domain: str
    source: str
    since: dt.datetime | None
    note: str | None = None

    @property
    def label(self) -> str:
        return attribution.SOURCE_LABELS.get(self.source, self.source)

    @property
    def removable(self) -> bool:
        return self.source != attribution.SOURCE_SITE


@dataclass(frozen=True)
class LeakStatus:
    status: str  # clean | shared | leaked
    reason: str  # one line; "" when clean
    since: dt.datetime | None  # first unrelated mail still counted
    senders: int  # unrelated sender domains still counted
    evidence: SiteLeak | Any | None = None  # a SiteLeak, or a row of its columns

    @property
    def leaked(self) -> bool:
        return self.status == LEAKED


def site_domain(site: str) -> str:
    """The registrable domain a site's own mail comes from (the site itself when it is
    an address, for aliases never tied to a site)."""
    return registrable_domain(site) or site


# --- known senders ------------------------------------------------------------------------
# Statements the mail path runs per message, built once: building SQLAlchemy
# statements per call cost more than running them.
_OWNER, _SITE = bindparam("owner"), bindparam("site")
_KNOWN = select(SiteKnownSender.domain, SiteKnownSender.source).where(
    SiteKnownSender.owner_id == _OWNER, SiteKnownSender.site == _SITE
)
_counted = and_(
    SiteLeak.owner_id == _OWNER,
    SiteLeak.site == _SITE,
    SiteLeak.dismissed_at.is_(None),
    ~exists().where(
        SiteKnownSender.owner_id == SiteLeak.owner_id,
        SiteKnownSender.site == SiteLeak.site,
        SiteKnownSender.domain == SiteLeak.sender_domain,
    ),
)
_COUNT_EVIDENCE = select(func.count(), func.min(SiteLeak.first_at)).where(_counted)
# The evidence a status line quotes: a confirmed leak, then a spam sender, the earliest.
_BEST_EVIDENCE = (
    select(SiteLeak.id)
    .where(_counted)
    .order_by(
        case((SiteLeak.confirmed_at.is_(None), 1), else_=0),
        case((and_(SiteLeak.spam > 0, SiteLeak.spam * 2 >= SiteLeak.total), 0), else_=1),
        SiteLeak.first_at,
        SiteLeak.id,
    )
    .limit(1)
)
_summary_upserts: dict[str, Any] = {}


def known_senders(session: Session | Connection, owner_id: int, site: str) -> dict[str, str]:
    """Stored sender domain → source, for the mail path's decision."""
    return dict(session.execute(_KNOWN, {"owner": owner_id, "site": site}).all())


def list_known_senders(session: Session, owner_id: int, site: str) -> list[KnownSender]:
    """The site's own domain first, then the stored ones by date."""
    own = site_domain(site)
    out = [KnownSender(own, attribution.SOURCE_SITE, None)]
    rows = session.scalars(
        select(SiteKnownSender)
        .where(SiteKnownSender.owner_id == owner_id, SiteKnownSender.site == site)
        .order_by(SiteKnownSender.created_at, SiteKnownSender.domain)
    )
    out += [KnownSender(r.domain, r.source, r.created_at, r.note) for r in rows if r.domain != own]
    return out


def parse_sender_domain(text: str) -> str:
    """A user's "this sender": a domain or an address, reduced to its registrable domain.
    Anything else (spaces, markup, a bare word) is refused, never trimmed into a domain."""
    raw = (text or "").strip()
    try:
        domain = parse_address(raw, "").domain if "@" in raw else normalize_domain(raw)
    except AddressError as exc:
        raise AddressError(f"{raw[:100]!r} is not a sender domain or address: {exc}") from exc
    reg = registrable_domain(domain) if looks_like_hostname(domain) else None
    if not reg:
        raise AddressError(f"{raw[:100]!r} is not a sender domain or address")
    return reg


def sender_refusal(session: Session, owner_id: int, domain: str) -> str | None:
    """Why the user's word cannot make ``domain`` a sender of one of their sites: the
    domains this server serves and the user's mailbox domain are what spam forges to
    look local, and a site's sender never counts as leak evidence."""
    if block_protection.covering(domain, block_protection.protected_domains(session, owner_id)):
        return (f"{domain} is a domain this server serves or your own mailbox domain; mail "
                "claiming to come from it is not a site's, and must stay leak evidence")
    return None


def add_known_sender(
    session: Session, owner_id: int, site: str, sender: str, *,
    source: str = attribution.SOURCE_USER, note: str | None = None,
) -> SiteKnownSender:  # fmt: skip
    """Record that ``sender`` belongs to the site; a user's word replaces a weaker source
    and its mail stops counting as leak evidence (dismissed, kept). Raises AddressError
    for what is not a sender domain, or one :func:`sender_refusal` refuses."""
    domain = parse_sender_domain(sender)
    refusal = sender_refusal(session, owner_id, domain)
    if refusal:
        raise AddressError(refusal)
    row = session.scalar(
        select(SiteKnownSender).where(
            SiteKnownSender.owner_id == owner_id,
            SiteKnownSender.site == site,
            SiteKnownSender.domain == domain,
        )
    )
    if row is None:
        row = SiteKnownSender(owner_id=owner_id, site=site, domain=domain, source=source, note=note)
        session.add(row)
    elif source == attribution.SOURCE_USER:
        row.source, row.note, row.created_at = source, note, utcnow()
    if source == attribution.SOURCE_USER:
        session.execute(
            update(SiteLeak)
            .where(SiteLeak.owner_id == owner_id, SiteLeak.site == site,
                   SiteLeak.sender_domain == domain, SiteLeak.dismissed_at.is_(None))
            .values(dismissed_at=utcnow(), confirmed_at=None)
        )  # fmt: skip
    session.flush()
    refresh_summary(session.connection(), owner_id, site)
    return row


def remove_known_sender(session: Session, owner_id: int, site: str, sender: str) -> bool:
    """Undo: the sender no longer belongs to the site, and a leak dismissed for it counts
    again. Returns whether anything was stored for it."""
    domain = parse_sender_domain(sender)
    gone = session.execute(
        delete(SiteKnownSender).where(
            SiteKnownSender.owner_id == owner_id,
            SiteKnownSender.site == site,
            SiteKnownSender.domain == domain,
        )
    ).rowcount
    session.execute(
        update(SiteLeak)
        .where(SiteLeak.owner_id == owner_id, SiteLeak.site == site,
               SiteLeak.sender_domain == domain)
        .values(dismissed_at=None)
    )  # fmt: skip
    refresh_summary(session.connection(), owner_id, site)
    return bool(gone)


# --- the user's word on a leak -------------------------------------------------------------
def _evidence_row(session: Session, owner_id: int, site: str, sender: str) -> SiteLeak:
    row = session.scalar(
        select(SiteLeak).where(
            SiteLeak.owner_id == owner_id, SiteLeak.site == site,
            SiteLeak.sender_domain == sender.strip().lower(),
        )
    )  # fmt: skip
    if row is None:
        raise LookupError(f"no leak evidence from {sender[:100]!r} for {site}")
    return row


def dismiss_leak(session: Session, owner_id: int, site: str, sender: str) -> SiteLeak:
    """Not a leak: the sender becomes one of the site's (unless :func:`sender_refusal`
    refuses it), the evidence stays, marked."""
    row = _evidence_row(session, owner_id, site, sender)
    row.dismissed_at, row.confirmed_at = utcnow(), None
    # not a domain, or one that may never be a site's: dismissed, not stored
    with contextlib.suppress(AddressError):
        add_known_sender(session, owner_id, site, row.sender_domain, note="dismissed a leak")
    session.flush()
    refresh_summary(session.connection(), owner_id, site)
    return row


def confirm_leak(session: Session, owner_id: int, site: str, sender: str) -> SiteLeak:
    """A leak: counted whatever the evidence alone would say (clean mail included)."""
    row = _evidence_row(session, owner_id, site, sender)
    row.confirmed_at, row.dismissed_at = utcnow(), None
    remove_known_sender_silently(session, owner_id, site, row.sender_domain)
    session.flush()
    refresh_summary(session.connection(), owner_id, site)
    return row


def remove_known_sender_silently(session: Session, owner_id: int, site: str, domain: str) -> None:
    session.execute(
        delete(SiteKnownSender).where(
            SiteKnownSender.owner_id == owner_id, SiteKnownSender.site == site,
            SiteKnownSender.domain == domain,
        )
    )  # fmt: skip


# --- status ----------------------------------------------------------------------------------
def _reason(status: str, ev: SiteLeak | None, senders: int) -> str:
    if ev is None:
        return ""
    subject = (ev.evidence_subject or "(no subject)")[:80]
    what = f"{ev.sender_domain}, “{subject}”, {ev.evidence_at:%Y-%m-%d}"
    if ev.sender_domain == UNKNOWN_SENDER:
        return f"Leaked since {ev.first_at:%Y-%m-%d} (recorded before aliasd kept the evidence)."
    if ev.confirmed_at is not None:
        return f"You confirmed the leak: mail from {what}."
    if status == LEAKED and spam_sender(ev):
        return f"Spam from {what} (score {ev.evidence_score:.1f}): {ev.evidence_why}."
    if status == LEAKED:
        return f"{senders} unrelated senders wrote, first {what}: {ev.evidence_why}."
    return (
        f"Clean mail from {what}, not one of the site's senders: "
        "the site likely passed the address to a partner."
    )


def spam_sender(row: SiteLeak) -> bool:
    """A sender is judged by most of its mail: one message of a partner's that the
    scanner got wrong does not make it a spammer, one phishing message does."""
    return row.spam > 0 and row.spam * 2 >= row.total


def _rank(row) -> tuple:
    """Which evidence a status line quotes: a confirmed leak, then a spam sender, then
    the earliest."""
    return (row.confirmed_at is None, not spam_sender(row), _as_utc(row.first_at), row.id)


def _status(ev: SiteLeak, senders: int, since: dt.datetime | None, leak_senders: int) -> LeakStatus:
    leaked = ev.confirmed_at is not None or spam_sender(ev) or senders >= leak_senders
    status = LEAKED if leaked else SHARED
    return LeakStatus(status, _reason(status, ev, senders), since, senders, ev)


def status_of(
    rows: Sequence[SiteLeak], leak_senders: int, known: Iterable[str] = ()
) -> LeakStatus:
    """The status of one site from its evidence rows. Dismissed rows and rows of senders
    known by now (a name match seen later in clean mail, the user's word) are ignored."""
    known = set(known)
    active = [r for r in rows if r.dismissed_at is None and r.sender_domain not in known]
    if not active:
        return LeakStatus(CLEAN, "", None, 0)
    since = min(r.first_at for r in active)
    return _status(min(active, key=_rank), len(active), since, leak_senders)


def site_status(session: Session, owner_id: int, site: str, leak_senders: int) -> LeakStatus:
    """One site's status from its stored evidence and known senders."""
    return status_of(
        site_evidence(session, owner_id, site), leak_senders,
        known_senders(session, owner_id, site),
    )  # fmt: skip


def site_evidence(
    session: Session, owner_id: int, site: str, limit: int | None = None
) -> list[SiteLeak]:
    """Evidence rows of one site, the most spam first (``limit``: the first few)."""
    query = (
        select(SiteLeak)
        .where(SiteLeak.owner_id == owner_id, SiteLeak.site == site)
        .order_by(SiteLeak.spam.desc(), SiteLeak.first_at, SiteLeak.id)
    )
    return list(session.scalars(query if limit is None else query.limit(limit)))


def evidence_count(session: Session, owner_id: int, site: str) -> int:
    return int(session.scalar(
        select(func.count()).select_from(SiteLeak)
        .where(SiteLeak.owner_id == owner_id, SiteLeak.site == site)
    ) or 0)  # fmt: skip


def statuses(
    session: Session, keys: Iterable[tuple[int, str]], leak_senders: int
) -> dict[tuple[int, str], LeakStatus]:
    """Status of many (owner, site) keys from the per-site summaries the writers keep
    (one index read per key) and the one evidence row each status line quotes."""
    keys = list(keys)
    if not keys:
        return {}
    by_owner: dict[int, list[str]] = {}
    for owner_id, site in keys:
        by_owner.setdefault(owner_id, []).append(site)
    ev = SiteLeak.__table__.c
    query = (
        select(
            SiteLeakSummary.senders, SiteLeakSummary.since, ev.owner_id, ev.site,
            ev.sender_domain, ev.first_at, ev.spam, ev.total, ev.evidence_at,
            ev.evidence_subject, ev.evidence_score, ev.evidence_why, ev.confirmed_at,
        )
        .join(SiteLeak.__table__, ev.id == SiteLeakSummary.evidence_id)
        .where(
            SiteLeakSummary.owner_id == bindparam("owner"),
            SiteLeakSummary.site.in_(bindparam("sites", expanding=True)),
            SiteLeakSummary.senders > 0,
        )
    )
    # One indexed read per owner (a row-value IN list makes SQLite scan the table, and
    # an OR term per key costs more to build than the query takes); plain rows, not ORM
    # objects: the report lists up to a thousand sites.
    out: dict[tuple[int, str], LeakStatus] = {}
    for owner_id, sites in by_owner.items():
        for row in session.execute(query, {"owner": owner_id, "sites": sites}):
            out[(row.owner_id, row.site)] = _status(
                row, row.senders, _as_utc(row.since), leak_senders
            )
    return out


def refresh_summary(conn: Connection, owner_id: int, site: str) -> None:
    """Recompute one site's summary after its evidence or known senders changed (the
    mail path, in the same transaction, and every action of the user's)."""
    params = {"owner": owner_id, "site": site}
    senders, since = conn.execute(_COUNT_EVIDENCE, params).one()
    conn.execute(
        _summary_upsert(conn.dialect.name),
        {
            **params,
            "senders": int(senders or 0),
            "since": _as_utc(since),
            "evidence_id": conn.execute(_BEST_EVIDENCE, params).scalar() if senders else None,
        },
    )


def _summary_upsert(dialect: str):
    stmt = _summary_upserts.get(dialect)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        values = {
            "senders": bindparam("senders"),
            "since": bindparam("since", type_=UTCDateTime()),
            "evidence_id": bindparam("evidence_id"),
        }
        stmt = _summary_upserts[dialect] = (
            insert(SiteLeakSummary)
            .values(owner_id=bindparam("owner"), site=bindparam("site"), **values)
            .on_conflict_do_update(index_elements=["owner_id", "site"], set_=values)
        )
    return stmt


def _as_utc(value) -> dt.datetime | None:
    if isinstance(value, str):  # window MIN of a datetime comes back as text on SQLite
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
