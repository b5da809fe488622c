"""Mail events and the aggregates the report reads.

The milter calls :func:`record_and_notify` once per message (:func:`record_message`
does the writing): one ``MailEvent`` per alias the message was addressed to, the alias's counters, the per-site aggregates
(``SiteDay``, ``SiteSender``) that the spam-source report reads instead of scanning the
events table, and what ``core.attribution`` decided about the sender (a learned known
sender, or leak evidence in ``SiteLeak``). Counter and aggregate writes are single atomic statements (``x = x + 1``,
``INSERT .. ON CONFLICT DO UPDATE``) so several milter processes can write at once on
PostgreSQL and on SQLite without lost updates.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core import attribution_store, blocking
from aliasd.core.addresses import AddressError, domain_of, normalize_address
from aliasd.core.report_site import report_site_of
from aliasd.db import Database
from aliasd.models import Alias, MailEvent, SiteDay, SiteSender, UTCDateTime, utcnow

log = logging.getLogger(__name__)

# Action recorded when the scanner failed or timed out and the message passed unscanned.
ACTION_SKIPPED = "skipped"


@dataclass(frozen=True)
class AliasTarget:
    """A snapshot of the alias a recipient resolved to (detached from any session,
    so the milter can keep it between callbacks)."""

    id: int
    address: str
    owner_id: int
    site: str | None
    state: str

    @property
    def report_site(self) -> str:
        return report_site_of(self.site, self.address)


@dataclass(frozen=True)
class MessageFacts:
    """What the milter saw of one message, independent of the scan verdict."""

    envelope_sender: str  # "" for the null sender <>
    client_addr: str | None = None
    helo: str | None = None
    from_domain: str | None = None  # domain of the From: header
    subject: str | None = None
    queue_id: str | None = None
    size: int = 0
    at: dt.datetime | None = None
    # The DKIM verifier's result: whether it ran, and the d= domains that verified.
    dkim_checked: bool = False
    dkim_pass_domains: tuple[str, ...] = ()
    # SPF/DKIM/DMARC/ARC results in one line ("spf=pass dkim=pass dmarc=pass arc=none")
    auth: str | None = None


@dataclass(frozen=True)
class AppliedVerdict:
    """The verdict as it was applied to the message."""

    score: float
    action: str  # an aliasd.scanner.Action value, or ACTION_SKIPPED
    is_spam: bool
    symbols: str = ""  # "SYM(score)[opts]; ..." as in X-Spamd-Result
    rejected: bool = False  # refused (5xx or 4xx): not forwarded
    held: bool = False  # held for review: forwarded only if released


def alias_candidates(recipients: Iterable[str], delimiter: str) -> list[tuple[str, str]]:
    """(exact, without extension) lower-case addresses of each parseable recipient, in
    recipient order: the addresses :func:`find_aliases` looks for."""
    # As lookupd resolves them: the exact address first (an imported alias may contain
    # the delimiter, ``info+shop@…``), then without the extension.
    candidates: list[tuple[str, str]] = []
    for rcpt in recipients:
        try:
            exact = normalize_address(rcpt)
            base = normalize_address(rcpt, delimiter)
        except AddressError:
            continue
        candidates.append((exact, base))
    return candidates


_ALIAS_ROWS = (
    select(Alias.__table__.c.id, Alias.__table__.c.address, Alias.__table__.c.owner_id,
           Alias.__table__.c.site, Alias.__table__.c.state)
    .where(Alias.__table__.c.address.in_(bindparam("addresses", expanding=True)))
)  # fmt: skip


def alias_rows(connection: Connection | Session,
               addresses: Iterable[str]) -> dict[str, AliasTarget]:  # fmt: skip
    """The aliases at ``addresses`` (lower case), by address; absent ones are left out.
    A Core statement built once: building it per message cost more than the query."""
    wanted = sorted(set(addresses))
    if not wanted:
        return {}
    return {r.address: AliasTarget(r.id, r.address, r.owner_id, r.site, r.state)
            for r in connection.execute(_ALIAS_ROWS, {"addresses": wanted})}  # fmt: skip


def targets_for(candidates: Sequence[tuple[str, str]],
                by_address: dict[str, AliasTarget | None]) -> list[AliasTarget]:
    """The alias of each candidate pair (the exact address first), without duplicates."""
    targets: list[AliasTarget] = []
    seen: set[str] = set()
    for exact, base in candidates:
        target = by_address.get(exact) or by_address.get(base)
        if target is not None and target.address not in seen:
            seen.add(target.address)
            targets.append(target)
    return targets


def find_aliases(
    session: Session, recipients: Iterable[str], delimiter: str
) -> list[AliasTarget]:
    """The aliases behind the original RCPT addresses (extension stripped, lower case),
    in recipient order without duplicates. Unparseable or unknown recipients (postmaster,
    mail to other domains) are simply not aliases."""
    candidates = alias_candidates(recipients, delimiter)
    if not candidates:
        return []
    # through the session: what it has pending is flushed first, as for any query
    rows = alias_rows(session, (a for pair in candidates for a in pair))
    return targets_for(candidates, dict(rows))


class _Statements:
    """The recording statements, built once per dialect with bind parameters: building
    SQLAlchemy statements per message cost more than executing them."""

    def __init__(self, dialect: str) -> None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - only the two supported engines
            raise RuntimeError(f"unsupported database dialect {dialect}")
        ev = MailEvent.__table__
        self.event = insert(ev).returning(ev.c.id)

        al = Alias.__table__.c
        at = bindparam("b_at", type_=UTCDateTime())
        self.alias = (
            update(Alias.__table__)
            .where(al.id == bindparam("b_id"))
            .values(
                forwarded_count=al.forwarded_count + bindparam("b_fwd"),
                rejected_count=al.rejected_count + bindparam("b_rej"),
                held_count=al.held_count + bindparam("b_held"),
                spam_count=al.spam_count + bindparam("b_spam"),
                last_mail_at=at,
                # the mail path's counters must not look like a configuration change
                updated_at=al.updated_at,
            )
        )

        sd = SiteDay.__table__.c
        day = insert(SiteDay.__table__).values(
            owner_id=bindparam("b_owner"),
            site=bindparam("b_site"),
            day=bindparam("b_day"),
            total=1,
            spam=bindparam("b_spam"),
            unrelated=bindparam("b_unrel"),
        )
        self.site_day = day.on_conflict_do_update(
            index_elements=["owner_id", "site", "day"],
            set_={
                "total": sd.total + 1,
                "spam": sd.spam + day.excluded.spam,
                "unrelated": sd.unrelated + day.excluded.unrelated,
            },
        )

        ss = SiteSender.__table__.c
        spam_at = bindparam("b_spam_at", type_=UTCDateTime())
        sender = insert(SiteSender.__table__).values(
            owner_id=bindparam("b_owner"),
            site=bindparam("b_site"),
            sender_domain=bindparam("b_domain"),
            total=1,
            spam=bindparam("b_spam"),
            first_at=at,
            last_at=at,
            first_spam_at=spam_at,
            last_spam_at=spam_at,
        )
        excluded = sender.excluded
        self.site_sender = sender.on_conflict_do_update(
            index_elements=["owner_id", "site", "sender_domain"],
            set_={
                "total": ss.total + 1,
                "spam": ss.spam + excluded.spam,
                "last_at": excluded.last_at,
                "first_spam_at": func.coalesce(ss.first_spam_at, excluded.first_spam_at),
                "last_spam_at": func.coalesce(excluded.last_spam_at, ss.last_spam_at),
            },
        )


_statements: dict[str, _Statements] = {}


def _statements_for(session: Session) -> _Statements:
    name = session.get_bind().dialect.name
    stmts = _statements.get(name)
    if stmts is None:
        stmts = _statements[name] = _Statements(name)
    return stmts


def record_message(
    session: Session,
    targets: Sequence[AliasTarget],
    facts: MessageFacts,
    outcome: AppliedVerdict,
    policy: attribution_store.AttributionPolicy | None = None,
    stale_summaries: set[tuple[int, str]] | None = None,
) -> list[int]:
    """Record one event per alias and update counters and aggregates in ``session``.
    The caller commits. Returns the new event ids. ``stale_summaries``: see
    :func:`attribution_store.record` (a writer of many messages refreshes each site's
    leak summary once)."""
    policy = policy or attribution_store.AttributionPolicy()
    at = facts.at or utcnow()
    sender_domain = domain_of(facts.envelope_sender)
    block_domain = facts.from_domain or sender_domain  # what a header_checks rule can match
    stmts = _statements_for(session)
    conn = session.connection()
    common = {
        "at": at,
        "client_addr": _clip(facts.client_addr, 64),
        "helo": _clip(facts.helo, 255),
        "envelope_sender": _clip(facts.envelope_sender, 320),
        "sender_domain": sender_domain,
        "from_domain": facts.from_domain,
        "subject": _clip(facts.subject, 500),
        "score": outcome.score,
        "action": outcome.action,
        "is_spam": outcome.is_spam,
        "symbols": outcome.symbols,
        "queue_id": _clip(facts.queue_id, 64),
        "size": facts.size,
        "auth": _clip(facts.auth, 200),
    }
    spam = int(outcome.is_spam)
    ids: list[int] = []
    # A fixed order of row locks keeps concurrent PostgreSQL writers from deadlocking.
    for target in sorted(targets, key=lambda t: t.id):
        verdict = attribution_store.attribute(
            session, target, facts, outcome.is_spam, policy, at
        )
        related = verdict.related
        unrelated = int(not related)
        event_id = conn.execute(
            stmts.event,
            {
                **common,
                "alias_id": target.id,
                "owner_id": target.owner_id,
                "alias_address": target.address,
                "site": target.site,
                "related_sender": related,
            },
        ).scalar_one()
        ids.append(event_id)
        conn.execute(
            stmts.alias,
            {
                "b_id": target.id,
                "b_fwd": 0 if outcome.rejected or outcome.held else 1,
                "b_rej": 1 if outcome.rejected else 0,
                "b_held": 1 if outcome.held and not outcome.rejected else 0,
                "b_spam": spam,
                "b_at": at,
            },
        )
        site = {"b_owner": target.owner_id, "b_site": target.report_site, "b_spam": spam}
        conn.execute(
            stmts.site_day,
            {**site, "b_day": at.astimezone(dt.UTC).date(), "b_unrel": unrelated},
        )
        if block_domain:
            conn.execute(
                stmts.site_sender,
                {
                    **site,
                    "b_domain": block_domain,
                    "b_at": at,
                    "b_spam_at": at if outcome.is_spam else None,
                },
            )
        attribution_store.record(conn, target, common, outcome, verdict, at, stale_summaries)
    return ids


def record_and_notify(
    database: Database,
    settings: Settings,
    targets: Sequence[AliasTarget],
    facts: MessageFacts,
    outcome: AppliedVerdict,
    *,
    attempts: int = 3,
) -> list[int]:
    """Record the message in its own transaction (retried when SQLite is busy or
    PostgreSQL reports a deadlock), then run the auto-block hook for spam events.
    Returns the new event ids."""
    if not targets:
        return []
    for attempt in range(1, attempts + 1):
        try:
            with database.session() as session:
                ids = record_message(
                    session, targets, facts, outcome,
                    attribution_store.AttributionPolicy.from_settings(settings),
                )
            break
        except OperationalError:
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    if outcome.is_spam:
        run_spam_hook(database, settings, ids)
    return ids


# --- auto-block ------------------------------------------------------------------------
def run_spam_hook(database: Database, settings: Settings, event_ids: Sequence[int]) -> None:
    """Let the auto-block policy (blocking.after_spam_event) judge each spam event, each
    in its own transaction after the event is committed: a failing policy never loses
    the event itself."""
    for event_id in event_ids:
        try:
            with database.session() as session:
                event = session.get(MailEvent, event_id)
                if event is not None:
                    blocking.after_spam_event(session, settings, event)
        except Exception:  # the message is already handled; log and go on
            log.exception("auto-block policy failed for mail event %s", event_id)


def _clip(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    # Surrogate-escaped junk from the wire must not break the database driver.
    value = value.encode("utf-8", "replace").decode("utf-8", "replace")
    value = "".join(c if c.isprintable() else " " for c in value)
    return value[:limit]
