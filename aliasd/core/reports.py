"""The spam-source report: which sites leaked their address, ranked by spam received.

Everything here reads the aggregates the mail path keeps current (``site_days`` per
owner/site/UTC day, ``site_senders`` per owner/site/sender domain, the alias counters and
the leak evidence of ``site_leaks``), never the ``mail_events`` table per page view. The one exception is
the per-site "sample subjects": at most ``SAMPLE_SUBJECTS`` rows of one site's aliases,
read through the (alias_id, at) index.

A "site" is the alias's site, or its address when the alias was never tied to a site
(the same key the mail path aggregates under)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import and_, case, func, or_, select, text, true, tuple_
from sqlalchemy.orm import Session

from aliasd.core import leaks
from aliasd.core.block_decision import Sender, blocked_for, load_blocklist
from aliasd.core.report_site import report_site_of
from aliasd.models import Alias, AliasState, SiteDay, SiteSender, User

SAMPLE_SUBJECTS = 10
MAX_SENDERS = 200
PERIODS = {"7d": 7, "30d": 30, "90d": 90, "365d": 365, "all": None}


@dataclass
class SiteRow:
    owner_id: int
    owner: str
    site: str
    spam: int
    total: int
    share: float  # of all spam in the report
    spam_ratio: float  # of this site's mail
    first_spam: dt.date | None
    last_spam: dt.date | None
    sender_domains: int  # distinct sender domains seen in the period
    spam_sender_domains: int
    blocked_sender_domains: int  # of the spam sender domains, how many are blocked
    leaked: bool  # the evidence says leaked (not merely shared with a partner)
    # A leaked site's first unrelated mail still counted as evidence; None unless leaked.
    leaked_at: dt.datetime | None
    status: str = leaks.CLEAN  # clean | shared | leaked
    reason: str = ""  # why, in one line
    alias_states: list[str] = field(default_factory=list)
    # The first unrelated mail still counted as evidence, leaked or shared: the date a
    # shared site's partner first wrote, which leaked_at leaves empty.
    unrelated_since: dt.datetime | None = None

    @property
    def burned(self) -> bool:
        return bool(self.alias_states) and all(
            s in (AliasState.BURNED.value, AliasState.DISABLED.value, AliasState.DELETED.value)
            for s in self.alias_states
        )

    @property
    def blocked(self) -> bool:
        """The source is cut off: its aliases refuse mail, or every domain that sent it
        spam is blocked."""
        if self.burned:
            return True
        return self.spam_sender_domains > 0 and (
            self.blocked_sender_domains >= self.spam_sender_domains
        )

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["blocked"] = self.blocked
        data["burned"] = self.burned
        for key in ("first_spam", "last_spam", "leaked_at", "unrelated_since"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["share"] = round(self.share, 4)
        data["spam_ratio"] = round(self.spam_ratio, 4)
        return data


@dataclass
class Report:
    rows: list[SiteRow]
    period: str
    since: dt.date | None
    total_spam: int
    total_mail: int
    sites: int  # sites with mail in the period (rows may be limited)


def period_start(period: str, today: dt.date | None = None) -> dt.date | None:
    """First UTC day of a named period ("7d", "30d", ..., "all" → None)."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r}; choose one of {', '.join(PERIODS)}")
    days = PERIODS[period]
    if days is None:
        return None
    today = today or dt.datetime.now(dt.UTC).date()
    return today - dt.timedelta(days=days - 1)


def _site_filter(query, owner_id: int | None, since: dt.date | None, model=SiteDay):
    if owner_id is not None:
        query = query.where(model.owner_id == owner_id)
    if since is not None:
        query = query.where(model.day >= since)
    return query


def ranking(
    session: Session,
    *,
    owner_id: int | None,
    period: str = "30d",
    limit: int = 100,
    today: dt.date | None = None,
    leak_senders: int = 4,
) -> Report:
    """Sites ranked by spam in the period. ``owner_id`` None means every user's sites
    (admins); otherwise only that user's."""
    since = period_start(period, today)
    groups = _groups_all_time(session, owner_id) if since is None else _groups_in_period(
        session, owner_id, since
    )
    total_spam = sum(g.spam for g in groups)
    total_mail = sum(g.total for g in groups)
    site_count = len(groups)
    # At most a few thousand groups: sorting them here saves a second grouped query.
    groups.sort(key=lambda g: (-g.spam, -g.total, g.site))
    rows = groups[:limit]
    if not rows:
        return Report([], period, since, total_spam, total_mail, site_count)

    keys = [(r.owner_id, r.site) for r in rows]
    owners = {r.owner_id for r in rows}
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(owners))).all())

    # Sender-domain counts of the listed sites, grouped in the database (a leaked site
    # can have hundreds of sender domains).
    in_keys = tuple_(SiteSender.owner_id, SiteSender.site).in_(keys)
    period_cond = (
        SiteSender.last_at >= dt.datetime.combine(since, dt.time(), dt.UTC)
        if since is not None
        else None
    )
    count_query = (
        select(
            SiteSender.owner_id,
            SiteSender.site,
            func.count(),
            func.sum(case((SiteSender.spam > 0, 1), else_=0)),
            func.min(SiteSender.first_spam_at),
            func.max(SiteSender.last_spam_at),
        )
        .where(in_keys)
        .group_by(SiteSender.owner_id, SiteSender.site)
    )
    if period_cond is not None:
        count_query = count_query.where(period_cond)
    sender_counts: dict[tuple[int, str], tuple[int, int]] = {}
    spam_span: dict[tuple[int, str], list[Any]] = {}
    for o, site, n, n_spam, first, last in session.execute(count_query):
        sender_counts[(o, site)] = (int(n), int(n_spam or 0))
        if first is not None:
            spam_span[(o, site)] = [_as_utc(first), _as_utc(last or first)]
    # Which of their spam sender domains are blocked (for everyone or by the owner):
    # only candidate rows are read (the blocked domains and their subdomains), not every
    # sender; the block decision then judges each.
    blocklist = load_blocklist(session)
    candidates = blocklist.domains_of()
    for owner in {o for o, _site in keys}:
        candidates |= blocklist.domains_of(owner)
    blocked_counts: dict[tuple[int, str], int] = {}
    if candidates:
        blocked_names = sorted(candidates)
        cond = (
            or_(
                SiteSender.sender_domain.in_(blocked_names),
                *[SiteSender.sender_domain.like("%." + d) for d in blocked_names],
            )
            if len(blocked_names) <= 200
            else true()  # a long list: read the spam senders and check them here
        )
        blocked_query = select(SiteSender.owner_id, SiteSender.site, SiteSender.sender_domain).where(
            in_keys, SiteSender.spam > 0, cond
        )
        if period_cond is not None:
            blocked_query = blocked_query.where(period_cond)
        for o, site, domain in session.execute(blocked_query):
            if blocked_for(blocklist, Sender.of_domain(domain), owner_id=o) is not None:
                blocked_counts[(o, site)] = blocked_counts.get((o, site), 0) + 1

    statuses = leaks.statuses(session, keys, leak_senders)
    # Alias states per site (aliases of the listed sites only).
    alias_query = select(Alias.owner_id, Alias.site, Alias.address, Alias.state).where(
        # Exact (owner, site) pairs: the same site name under many users must not
        # multiply the rows read.
        or_(
            tuple_(Alias.owner_id, Alias.site).in_(keys),
            and_(Alias.site.is_(None), tuple_(Alias.owner_id, Alias.address).in_(keys)),
        ),
    )
    aliases: dict[tuple[int, str], list[str]] = {}
    for r in session.execute(alias_query):
        aliases.setdefault((r.owner_id, report_site_of(r.site, r.address)), []).append(r.state)

    out: list[SiteRow] = []
    for r, key in zip(rows, keys, strict=True):
        n_senders, n_spam_senders = sender_counts.get(key, (0, 0))
        site_aliases = aliases.get(key, [])
        status = statuses.get(key) or leaks.LeakStatus(leaks.CLEAN, "", None, 0)
        spam, total = int(r.spam or 0), int(r.total or 0)
        out.append(
            SiteRow(
                owner_id=r.owner_id,
                owner=names.get(r.owner_id, "?"),
                site=r.site,
                spam=spam,
                total=total,
                share=spam / total_spam if total_spam else 0.0,
                spam_ratio=spam / total if total else 0.0,
                first_spam=_as_date(r.first_spam) if since else _span_day(spam_span, key, 0),
                last_spam=_as_date(r.last_spam) if since else _span_day(spam_span, key, 1),
                sender_domains=n_senders,
                spam_sender_domains=n_spam_senders,
                blocked_sender_domains=blocked_counts.get(key, 0),
                leaked=status.leaked,
                leaked_at=status.since if status.leaked else None,
                status=status.status,
                reason=status.reason,
                alias_states=sorted(set(site_aliases)),
                unrelated_since=status.since,
            )
        )
    return Report(out, period, since, total_spam, total_mail, site_count)


@dataclass
class _Group:
    owner_id: int
    site: str
    spam: int
    total: int
    unrelated: int
    first_spam: Any = None
    last_spam: Any = None


def _groups_in_period(session: Session, owner_id: int | None, since: dt.date) -> list[_Group]:
    """Per (owner, site) sums of the period's site_days rows: a range on the owner's
    unique (owner_id, site, day) index, or on ix_site_days_day for everyone."""
    query = _site_filter(
        select(
            SiteDay.owner_id,
            SiteDay.site,
            func.sum(SiteDay.spam),
            func.sum(SiteDay.total),
            func.sum(SiteDay.unrelated),
            func.min(case((SiteDay.spam > 0, SiteDay.day))),
            func.max(case((SiteDay.spam > 0, SiteDay.day))),
        ).group_by(SiteDay.owner_id, SiteDay.site),
        owner_id,
        since,
    )
    if owner_id is None and session.get_bind().dialect.name == "sqlite":
        # SQLite's planner prefers walking the unique index to skip the GROUP BY sort;
        # the covering day index reads only the period (measured 78 → 13 ms at 1M
        # events). SQLAlchemy renders no index hints for SQLite, hence the text.
        query = text(
            "SELECT owner_id, site, SUM(spam), SUM(total), SUM(unrelated), "
            "MIN(CASE WHEN spam > 0 THEN day END), MAX(CASE WHEN spam > 0 THEN day END) "
            "FROM site_days INDEXED BY ix_site_days_day WHERE day >= :since "
            "GROUP BY owner_id, site"
        ).bindparams(since=since.isoformat())
    return [
        _Group(o, site, int(sp or 0), int(t or 0), int(u or 0), first, last)
        for o, site, sp, t, u, first, last in session.execute(query)
    ]


def _groups_all_time(session: Session, owner_id: int | None) -> list[_Group]:
    """All-time sums come from the alias counters (one row per alias) instead of every
    day of every site: the mail path updates both in the same transaction."""
    key = func.coalesce(Alias.site, Alias.address)
    query = (
        select(
            Alias.owner_id,
            key,
            func.sum(Alias.spam_count),
            func.sum(Alias.forwarded_count + Alias.rejected_count),
            func.count(Alias.id),
        )
        .group_by(Alias.owner_id, key)
        .having(func.sum(Alias.forwarded_count + Alias.rejected_count) > 0)
    )
    if owner_id is not None:
        query = query.where(Alias.owner_id == owner_id)
    return [
        _Group(o, site, int(sp or 0), int(t or 0), int(u or 0))
        for o, site, sp, t, u in session.execute(query)
    ]


def _as_utc(value: Any) -> dt.datetime:
    """MIN/MAX of a datetime column comes back as text on SQLite."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _span_day(spans: dict, key: tuple[int, str], index: int) -> dt.date | None:
    span = spans.get(key)
    return span[index].astimezone(dt.UTC).date() if span else None


def _as_date(value: Any) -> dt.date | None:
    if value is None or isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value)[:10])  # SQLite returns MIN(day) as text
