"""The spam-source report from the aggregates the mail path keeps, on SQLite and
PostgreSQL: ranking, share, first/last spam, sender domains, leak date, blocked state,
period filter, per-site days with gaps, senders and sample subjects, ownership scope,
and the SVG chart."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import event as sa_event

from aliasd.core import aliases as core
from aliasd.core import blocking, events, reports, site_report
from aliasd.models import AliasState
from aliasd.web.reports import chart

TODAY = dt.datetime.now(dt.UTC).date()


def at(days_ago: int, hour: int = 12) -> dt.datetime:
    day = TODAY - dt.timedelta(days=days_ago)
    return dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC)


def deliver(db, rcpt: str, sender: str, *, spam: bool, days_ago: int = 0,
            from_domain: str | None = None, subject: str = "hello") -> None:
    with db.session() as s:
        tgt = events.find_aliases(s, [rcpt], "+")
        assert tgt, rcpt
        facts = events.MessageFacts(envelope_sender=sender, from_domain=from_domain,
                                    subject=subject, at=at(days_ago))
        outcome = events.AppliedVerdict(score=9.0 if spam else 0.0,
                                 action="add header" if spam else "no action", is_spam=spam)
        events.record_message(s, tgt, facts, outcome)


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_domain(s, "bob.example", bob)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
        core.create_alias(s, "forum.example@example.net", alice, site="forum.example")
        core.create_alias(s, "quiet.example@example.net", alice, site="quiet.example")
        core.create_alias(s, "nosite@example.net", alice)
        core.create_alias(s, "bobshop@bob.example", bob, site="shop.example")
    db = database
    # shop.example: related mail, then a leak: spam from two unrelated domains.
    deliver(db, "shop.example@example.net", "news@shop.example", spam=False, days_ago=20)
    for d in (10, 3, 3, 1):
        deliver(db, "shop.example@example.net", "x@massnews.gr", spam=True, days_ago=d,
                subject=f"cheap pills day {d}")
    deliver(db, "shop.example@example.net", "y@bulk.example", spam=True, days_ago=2,
            from_domain="bulk.example", subject="<script>alert(1)</script>")
    # forum.example: old spam only (outside 30 days).
    for _ in range(6):
        deliver(db, "forum.example@example.net", "z@old.example", spam=True, days_ago=40)
    deliver(db, "forum.example@example.net", "a@forum.example", spam=False, days_ago=1)
    # nosite alias: grouped under its address.
    deliver(db, "nosite@example.net", "q@spam.example", spam=True, days_ago=0)
    # bob's alias for the same site: his, not alice's.
    for _ in range(3):
        deliver(db, "bobshop@bob.example", "x@massnews.gr", spam=True, days_ago=1)
    return db


def test_ranking_for_one_user_in_a_period(world):
    with world.session() as s:
        blocking.block_domain(s, blocking_settings(), "massnews.gr")
    with world.session() as s:
        alice_id = core.get_user(s, "alice").id
        report = reports.ranking(s, owner_id=alice_id, period="30d")
    assert [r.site for r in report.rows] == ["shop.example", "nosite@example.net", "forum.example"]
    assert (report.total_spam, report.total_mail, report.sites) == (6, 8, 3)
    shop = report.rows[0]
    assert (shop.spam, shop.total, shop.owner) == (5, 6, "alice")
    assert shop.share == pytest.approx(5 / 6)
    assert shop.first_spam == TODAY - dt.timedelta(days=10)
    assert shop.last_spam == TODAY - dt.timedelta(days=1)
    assert (shop.sender_domains, shop.spam_sender_domains) == (3, 2)
    assert shop.blocked_sender_domains == 1 and not shop.blocked  # bulk.example still open
    assert shop.leaked and shop.leaked_at.date() == TODAY - dt.timedelta(days=10)
    forum = report.rows[2]
    assert (forum.spam, forum.total, forum.first_spam) == (0, 1, None)
    # A leak is for ever: the period shows no unrelated mail, the address is still out.
    assert forum.leaked and forum.leaked_at.date() == TODAY - dt.timedelta(days=40)
    # The old spam shows over all time, and ranks the forum first.
    with world.session() as s:
        everything = reports.ranking(s, owner_id=alice_id, period="all")
    assert [r.site for r in everything.rows][:2] == ["forum.example", "shop.example"]
    assert everything.rows[0].spam == 6 and everything.rows[0].leaked
    # Blocking the other sender domain, or burning the alias, marks the source blocked.
    with world.session() as s:
        blocking.block_domain(s, blocking_settings(), "bulk.example")
    with world.session() as s:
        assert reports.ranking(s, owner_id=alice_id, period="30d").rows[0].blocked
        nosite = core.get_alias(s, "nosite@example.net")
        core.set_state(s, nosite, AliasState.BURNED.value)
    with world.session() as s:
        row = reports.ranking(s, owner_id=alice_id, period="30d").rows[1]
        assert row.site == "nosite@example.net" and row.burned and row.blocked
        assert row.as_dict()["blocked"] is True


def blocking_settings():
    from aliasd.config import load_settings

    return load_settings(environ={}, data_dir="/tmp/unused", blocklist_reload_command="")


def test_admin_scope_sees_every_user_and_users_only_their_own(world):
    with world.session() as s:
        everyone = reports.ranking(s, owner_id=None, period="30d")
        bob_id = core.get_user(s, "bob").id
        bobs = reports.ranking(s, owner_id=bob_id, period="30d")
    assert {(r.owner, r.site) for r in everyone.rows} == {
        ("alice", "shop.example"), ("alice", "forum.example"),
        ("alice", "nosite@example.net"), ("bob", "shop.example"),
    }
    assert [(r.owner, r.site, r.spam) for r in bobs.rows] == [("bob", "shop.example", 3)]
    assert bobs.rows[0].share == 1.0
    with world.session() as s:
        assert reports.ranking(s, owner_id=bob_id, period="7d", limit=1).sites == 1


def test_site_detail_days_senders_subjects(world):
    with world.session() as s:
        alice_id = core.get_user(s, "alice").id
        before = dt.datetime.now(dt.UTC).date()  # the run may cross midnight (UTC)
        detail = site_report.site_detail(s, alice_id, "shop.example", period="30d")
        after = dt.datetime.now(dt.UTC).date()
        assert site_report.site_detail(s, alice_id, "unknown.example") is None
    assert len(detail.days) == 30 and detail.days[-1][0] in (before, after)
    spam_by_day = {d: spam for d, spam, _t in detail.days}
    assert spam_by_day[TODAY - dt.timedelta(days=3)] == 2
    assert spam_by_day[TODAY - dt.timedelta(days=4)] == 0  # gaps filled
    assert (detail.spam, detail.total) == (5, 6)
    assert [(x.domain, x.spam, x.total) for x in detail.senders] == [
        ("massnews.gr", 4, 4), ("bulk.example", 1, 1), ("shop.example", 0, 1)
    ]
    assert [a.address for a in detail.aliases] == ["shop.example@example.net"]
    subjects = [subj for _at, subj, _d in detail.subjects]
    assert subjects[0] == "cheap pills day 1" and len(subjects) == 5
    assert "hello" not in subjects  # ham is not a spam sample


def test_sample_subjects_are_a_bounded_indexed_query(world):
    """The per-site page reads mail_events once, by alias id, with a LIMIT; the ranking
    never touches mail_events."""
    statements: list[str] = []

    def record(conn, cursor, statement, *args):
        statements.append(statement)

    engine = world.engine
    sa_event.listen(engine, "before_cursor_execute", record)
    try:
        with world.session() as s:
            reports.ranking(s, owner_id=None, period="all")
            ranking_sql = list(statements)
            site_report.site_detail(s, core.get_user(s, "alice").id, "shop.example")
    finally:
        sa_event.remove(engine, "before_cursor_execute", record)
    assert not any("mail_events" in q for q in ranking_sql)
    event_queries = [q for q in statements if "FROM mail_events" in q]
    assert len(event_queries) == 1
    assert "mail_events.alias_id IN" in event_queries[0] and "LIMIT" in event_queries[0]


def test_chart_svg_is_valid_accessible_and_escaped():
    days = [(TODAY - dt.timedelta(days=2), 0, 1), (TODAY - dt.timedelta(days=1), 3, 4),
            (TODAY, 1, 1)]
    svg = chart.spam_chart_svg(days, title="Spam per day for <evil>&co")
    root = ET.fromstring(svg)  # well-formed XML
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert root.get("role") == "img"
    assert root.find("s:title", ns).text == "Spam per day for <evil>&co"
    assert "4 spam messages over 3 days" in root.find("s:desc", ns).text
    groups = root.findall("s:g", ns)
    assert [g.get("data-spam") for g in groups] == ["0", "3", "1"]
    spam_bars = root.findall(".//s:rect[@class='spam']", ns)
    heights = [float(r.get("height")) for r in spam_bars]
    assert len(spam_bars) == 2 and heights[0] == pytest.approx(3 * heights[1])
    assert "style=" not in svg  # CSP-safe: presentation attributes only


def test_leaked_at_is_set_for_leaked_sites_only_and_unrelated_since_dates_shared_ones(world):
    from aliasd.web.reports import EXPORT_FIELDS

    # quiet.example passed its address to a partner: clean mail from an unrelated sender.
    deliver(world, "quiet.example@example.net", "hotel@partner.example", spam=False, days_ago=5)
    with world.session() as s:
        alice_id = core.get_user(s, "alice").id
        rows = {r.site: r.as_dict() for r in reports.ranking(s, owner_id=alice_id,
                                                             period="all").rows}
    quiet, shop = rows["quiet.example"], rows["shop.example"]
    assert (quiet["status"], quiet["leaked"], quiet["leaked_at"]) == ("shared", False, None)
    assert quiet["unrelated_since"][:10] == (TODAY - dt.timedelta(days=5)).isoformat()
    assert shop["leaked"] and shop["leaked_at"] == shop["unrelated_since"]
    assert rows["nosite@example.net"]["leaked_at"] == rows["nosite@example.net"]["unrelated_since"]
    # The export keeps its columns in place; the new one comes last.
    assert EXPORT_FIELDS.index("leaked_at") == 12 and EXPORT_FIELDS[-1] == "unrelated_since"
