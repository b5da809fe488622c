"""The mail path's side of attribution: gather what ``core.attribution`` needs for one
alias (the owner's known senders, whether the alias is newly given), and store what it
decided (a newly known sender, or leak evidence) with single upsert statements, safe
with several milter processes writing at once."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, and_, bindparam, case, false, select, true
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core import attribution, leaks
from aliasd.core.addresses import domain_of
from aliasd.core.block_protection import exempt_domains
from aliasd.models import Alias, SiteKnownSender, SiteLeak, UTCDateTime

if TYPE_CHECKING:
    from aliasd.core.events import AliasTarget, AppliedVerdict, MessageFacts  # noqa: F401


CLOCK_SKEW = dt.timedelta(minutes=5)
# Built once: building statements per message cost more than running them.
_ALIAS_AGE = select(Alias.created_at, Alias.forwarded_count + Alias.rejected_count).where(
    Alias.id == bindparam("alias")
)


@dataclass(frozen=True)
class AttributionPolicy:
    """The settings attribution reads on the mail path."""

    learn_hours: float = 72.0
    affiliations_file: str = ""
    shared_providers: frozenset[str] = frozenset()  # never learned as a site's sender

    @classmethod
    def from_settings(cls, settings: Settings) -> AttributionPolicy:
        return cls(
            settings.attribution_learn_hours,
            settings.attribution_affiliations_file,
            frozenset(exempt_domains(settings)),
        )


def attribute(
    session: Session,
    target: AliasTarget,
    facts: MessageFacts,
    is_spam: bool,
    policy: AttributionPolicy,
    at: dt.datetime,
) -> attribution.Attribution:
    """core.attribution's verdict for one alias, with this owner's known senders and
    whether the alias is newly given (no mail yet, within the learning window)."""
    if not target.site:
        return attribution.Attribution(True, None, None, why="the alias is not tied to a site")
    conn = session.connection()  # Core: a select per message has no ORM layer to pass
    row = conn.execute(_ALIAS_AGE, {"alias": target.id}).one_or_none()
    eligible = False
    if row is not None and not row[1]:
        created = row[0] if row[0].tzinfo else row[0].replace(tzinfo=dt.UTC)
        # A few minutes of clock difference between processes is not "before creation".
        age = at - created
        eligible = -CLOCK_SKEW <= age <= dt.timedelta(hours=policy.learn_hours)
    return attribution.attribute(
        site=target.site,
        from_domain=facts.from_domain,
        envelope_domain=domain_of(facts.envelope_sender),
        is_spam=is_spam,
        known=leaks.known_senders(conn, target.owner_id, target.site),
        affiliated=attribution.affiliations(policy.affiliations_file),
        learn_eligible=eligible,
        dkim_pass_domains=facts.dkim_pass_domains,
        dkim_checked=facts.dkim_checked,
        shared_providers=policy.shared_providers,
    )


class _Statements:
    def __init__(self, dialect: str) -> None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        elif dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:  # pragma: no cover - only the two supported engines
            raise RuntimeError(f"unsupported database dialect {dialect}")
        at = bindparam("b_at", type_=UTCDateTime())
        self.known_sender = (
            insert(SiteKnownSender.__table__)
            .values(
                owner_id=bindparam("b_owner"),
                site=bindparam("b_site"),
                domain=bindparam("b_domain"),
                source=bindparam("b_source"),
                created_at=bindparam("b_at", type_=UTCDateTime()),
            )
            .on_conflict_do_nothing(index_elements=["owner_id", "site", "domain"])
        )

        # Leak evidence: counts per unrelated sender; the evidence message is the first
        # one, replaced once by the first spam one.
        lk = SiteLeak.__table__.c
        leak = insert(SiteLeak.__table__).values(
            owner_id=bindparam("b_owner"),
            site=bindparam("b_site"),
            sender_domain=bindparam("b_domain"),
            first_at=at,
            last_at=at,
            total=1,
            spam=bindparam("b_spam"),
            evidence_at=at,
            evidence_sender=bindparam("b_env"),
            evidence_from_domain=bindparam("b_from"),
            evidence_subject=bindparam("b_subject"),
            evidence_score=bindparam("b_score"),
            evidence_spam=bindparam("b_is_spam"),
            evidence_why=bindparam("b_why"),
        )
        new = leak.excluded
        upgrade = and_(lk.evidence_spam == false(), new.evidence_spam == true())
        self.leak = leak.on_conflict_do_update(
            index_elements=["owner_id", "site", "sender_domain"],
            set_={
                "total": lk.total + 1,
                "spam": lk.spam + new.spam,
                "last_at": new.last_at,
                **{
                    name: case((upgrade, getattr(new, name)), else_=getattr(lk, name))
                    for name in (
                        "evidence_at", "evidence_sender", "evidence_from_domain",
                        "evidence_subject", "evidence_score", "evidence_why", "evidence_spam",
                    )
                },
            },
        )  # fmt: skip


_statements: dict[str, _Statements] = {}


def _statements_for(dialect: str) -> _Statements:
    stmts = _statements.get(dialect)
    if stmts is None:
        stmts = _statements[dialect] = _Statements(dialect)
    return stmts


def record(
    conn: Connection,
    target: AliasTarget,
    event: dict,
    outcome: AppliedVerdict,
    verdict: attribution.Attribution,
    at: dt.datetime,
    stale_summaries: set[tuple[int, str]] | None = None,
) -> None:
    """Store what the verdict found: a new known sender, or leak evidence (quoting the
    mail event's already cleaned ``envelope_sender``, ``from_domain`` and ``subject``).
    The site's leak summary is recomputed now, or, given ``stale_summaries``, named
    there for the caller to recompute once before its commit (a batch of messages)."""
    if verdict.sender is None:
        return

    def summary_changed() -> None:
        if stale_summaries is None:
            leaks.refresh_summary(conn, target.owner_id, target.report_site)
        else:
            stale_summaries.add((target.owner_id, target.report_site))

    stmts = _statements_for(conn.dialect.name)
    key = {"b_owner": target.owner_id, "b_site": target.report_site, "b_domain": verdict.sender}
    if verdict.related and verdict.learn:
        added = conn.execute(stmts.known_sender, {**key, "b_source": verdict.learn, "b_at": at})
        if added.rowcount:  # its earlier evidence, if any, stops counting
            summary_changed()
    elif not verdict.related:
        conn.execute(
            stmts.leak,
            {
                **key,
                "b_at": at,
                "b_spam": int(outcome.is_spam),
                "b_env": event["envelope_sender"],
                "b_from": event["from_domain"],
                "b_subject": event["subject"],
                "b_score": outcome.score,
                "b_is_spam": outcome.is_spam,
                "b_why": verdict.why[:500],
            },
        )
        summary_changed()

