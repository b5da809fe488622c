"""Mail events, alias counters, leak detection and site aggregates, on SQLite and
PostgreSQL (the ``database`` fixture)."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.core import events, leaks
from aliasd.models import Alias, MailEvent, SiteDay, SiteSender

T0 = dt.datetime(2026, 3, 1, 10, 0, tzinfo=dt.UTC)


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_domain(s, "bob.example", bob)
        core.create_alias(s, "github.com@example.net", alice, site="https://github.com")
        core.create_alias(s, "nosite@example.net", alice)
        core.create_alias(s, "shop.example@bob.example", bob, site="shop.example")
    return database


def targets(db, *recipients, delimiter="+"):
    with db.session() as s:
        return events.find_aliases(s, recipients, delimiter)


def leak(db, address) -> leaks.LeakStatus:
    """The leak status of the alias's site (its report key)."""
    with db.session() as s:
        a = s.scalar(select(Alias).where(Alias.address == address))
        return leaks.site_status(s, a.owner_id, a.site or a.address, 3)


def alias(db, address) -> Alias:
    with db.session() as s:
        return s.scalar(select(Alias).where(Alias.address == address))


def test_find_aliases_normalises_recipients(world):
    found = targets(
        world,
        "GitHub.com+News@Example.NET",
        "github.com@example.net",  # duplicate after normalising
        "unknown@example.net",
        "not an address",
        "\udcff@junk",
        "nosite@example.net",
    )
    assert [t.address for t in found] == ["github.com@example.net", "nosite@example.net"]
    assert found[0].site == "github.com"
    assert found[1].report_site == "nosite@example.net"
    # Without a delimiter the extension is part of the address: no alias.
    assert targets(world, "github.com+news@example.net", delimiter="") == []


def test_clean_related_message_counts_as_forwarded(world, settings):
    facts = events.MessageFacts(
        envelope_sender="bounce@mail.github.com",
        client_addr="192.0.2.7",
        helo="out.github.com",
        from_domain="github.com",
        subject="Your pull request",
        queue_id="4ABCDEF",
        size=1234,
        at=T0,
    )
    outcome = events.AppliedVerdict(score=1.5, action="no action", is_spam=False, symbols="MIME_GOOD(-0.10)[]")
    ids = events.record_and_notify(
        world, settings, targets(world, "github.com@example.net"), facts, outcome
    )
    assert len(ids) == 1
    with world.session() as s:
        ev = s.get(MailEvent, ids[0])
        assert (ev.alias_address, ev.site, ev.client_addr, ev.helo) == (
            "github.com@example.net", "github.com", "192.0.2.7", "out.github.com",
        )  # fmt: skip
        assert (ev.envelope_sender, ev.sender_domain, ev.from_domain) == (
            "bounce@mail.github.com", "mail.github.com", "github.com",
        )  # fmt: skip
        assert (ev.subject, ev.score, ev.action, ev.is_spam) == ("Your pull request", 1.5, "no action", False)
        assert (ev.queue_id, ev.size, ev.related_sender, ev.at) == ("4ABCDEF", 1234, True, T0)
        assert ev.symbols == "MIME_GOOD(-0.10)[]"
        day = s.scalars(select(SiteDay)).one()
        assert (day.site, day.day, day.total, day.spam, day.unrelated) == (
            "github.com", T0.date(), 1, 0, 0,
        )  # fmt: skip
        sender = s.scalars(select(SiteSender)).one()
        assert (sender.sender_domain, sender.total, sender.spam, sender.first_spam_at) == (
            "github.com", 1, 0, None,
        )  # fmt: skip
    a = alias(world, "github.com@example.net")
    assert (a.forwarded_count, a.spam_count, a.rejected_count) == (1, 0, 0)
    assert a.last_mail_at == T0
    assert leak(world, "github.com@example.net").status == "clean"


def test_spam_from_unrelated_sender_marks_leak_once(world, settings):
    tgt = targets(world, "github.com@example.net")
    spam = events.AppliedVerdict(score=9.0, action="add header", is_spam=True)
    for i in range(3):
        facts = events.MessageFacts(
            envelope_sender=f"x{i}@spammer.example",
            from_domain="pills.example" if i < 2 else None,
            at=T0 + dt.timedelta(hours=i),
        )
        events.record_and_notify(world, settings, tgt, facts, spam)
    rejected = events.AppliedVerdict(score=20.0, action="reject", is_spam=True, rejected=True)
    events.record_and_notify(
        world,
        settings,
        tgt,
        events.MessageFacts(envelope_sender="", from_domain="pills.example", at=T0 + dt.timedelta(days=1)),
        rejected,
    )
    a = alias(world, "github.com@example.net")
    assert (a.forwarded_count, a.spam_count, a.rejected_count) == (3, 4, 1)
    status = leak(world, "github.com@example.net")
    assert status.status == "leaked" and status.since == T0  # the first, not the latest
    assert status.evidence.sender_domain == "pills.example"
    assert (status.evidence.total, status.evidence.spam) == (3, 3)
    assert status.evidence.evidence_at == T0 and status.evidence.evidence_score == 9.0
    assert a.last_mail_at == T0 + dt.timedelta(days=1)
    with world.session() as s:
        days = {(d.day, d.total, d.spam, d.unrelated) for d in s.scalars(select(SiteDay))}
        assert days == {(T0.date(), 3, 3, 3), ((T0 + dt.timedelta(days=1)).date(), 1, 1, 1)}
        senders = {x.sender_domain: x for x in s.scalars(select(SiteSender))}
        assert set(senders) == {"pills.example", "spammer.example"}
        pills = senders["pills.example"]
        assert (pills.total, pills.spam) == (3, 3)
        assert pills.first_at == T0 and pills.first_spam_at == T0
        assert pills.last_at == pills.last_spam_at == T0 + dt.timedelta(days=1)
        assert s.scalar(select(MailEvent.related_sender).limit(1)) is False


def test_related_by_envelope_or_from_and_unknown_is_not_a_leak(world, settings):
    tgt = targets(world, "github.com@example.net", "nosite@example.net")
    ham = events.AppliedVerdict(score=0.0, action="no action", is_spam=False)
    # ESP envelope, the site's From: related.
    events.record_and_notify(
        world, settings, tgt, events.MessageFacts("b@sendgrid.example", from_domain="github.com"), ham
    )
    # Null sender, no From: nothing known, no evidence.
    events.record_and_notify(world, settings, tgt, events.MessageFacts(""), ham)
    assert leak(world, "github.com@example.net").status == "clean"
    # An alias without a site never counts as leaked; its report key is the address.
    events.record_and_notify(
        world, settings, tgt, events.MessageFacts("a@elsewhere.example"), ham
    )
    assert leak(world, "nosite@example.net").status == "clean"
    # one clean unrelated sender: shared with a partner, not leaked
    shared = leak(world, "github.com@example.net")
    assert shared.status == "shared" and shared.evidence.sender_domain == "elsewhere.example"
    with world.session() as s:
        sites = {d.site: d.total for d in s.scalars(select(SiteDay))}
    assert sites == {"github.com": 3, "nosite@example.net": 3}


def test_one_event_per_alias_and_owner(world, settings):
    tgt = targets(world, "github.com@example.net", "shop.example@bob.example")
    ids = events.record_and_notify(
        world,
        settings,
        tgt,
        # at T0, long before the aliases were made: not their learning window
        events.MessageFacts("n@shop.example", from_domain="shop.example", subject="x" * 900, at=T0),
        events.AppliedVerdict(score=0.0, action="no action", is_spam=False),
    )
    with world.session() as s:
        evs = s.scalars(select(MailEvent).where(MailEvent.id.in_(ids))).all()
        assert sorted((e.alias_address, e.related_sender) for e in evs) == [
            ("github.com@example.net", False),
            ("shop.example@bob.example", True),
        ]
        assert {len(e.subject) for e in evs} == {500}
        owners = {(d.owner_id, d.site) for d in s.scalars(select(SiteDay))}
    assert len(owners) == 2


def test_concurrent_writers_lose_no_updates(world, settings):
    """Several milter threads at once: counters and aggregates stay exact."""
    tgt = targets(world, "github.com@example.net", "shop.example@bob.example")
    spam = events.AppliedVerdict(score=7.0, action="add header", is_spam=True)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(8):
                facts = events.MessageFacts(f"s{n}.{i}@spam.example", from_domain="spam.example", at=T0)
                events.record_and_notify(world, settings, tgt, facts, spam, attempts=10)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    a = alias(world, "github.com@example.net")
    assert (a.forwarded_count, a.spam_count) == (32, 32)
    with world.session() as s:
        assert s.scalar(select(SiteDay.total).where(SiteDay.site == "github.com")) == 32
        assert s.scalar(
            select(SiteSender.spam).where(SiteSender.site == "shop.example")
        ) == 32
        assert len(s.scalars(select(MailEvent)).all()) == 64


def test_auto_block_policy_runs_after_commit_and_its_failure_keeps_the_event(world, settings, monkeypatch):
    seen: list[tuple[str, bool]] = []

    def hook(session, hook_settings, event):
        assert hook_settings is settings
        seen.append((event.alias_address, event.is_spam))
        raise RuntimeError("policy exploded")

    monkeypatch.setattr(events.blocking, "after_spam_event", hook)
    tgt = targets(world, "github.com@example.net")
    ham = events.AppliedVerdict(score=0.0, action="no action", is_spam=False)
    events.record_and_notify(world, settings, tgt, events.MessageFacts("a@github.com"), ham)
    assert seen == []  # only spam goes to the auto-block policy
    spam = events.AppliedVerdict(score=8.0, action="add header", is_spam=True)
    ids = events.record_and_notify(world, settings, tgt, events.MessageFacts("a@x.example"), spam)
    assert seen == [("github.com@example.net", True)]
    with world.session() as s:
        assert s.get(MailEvent, ids[0]) is not None
    assert alias(world, "github.com@example.net").spam_count == 1


def test_junk_text_is_stored_safely(world, settings):
    tgt = targets(world, "github.com@example.net")
    facts = events.MessageFacts(
        envelope_sender="\udcffodd\x00@x.example",
        helo="h\x00\udce9",
        subject="bad \udcff\x01 bytes",
        client_addr="::ffff:192.0.2.1",
    )
    ids = events.record_and_notify(
        world, settings, tgt, facts, events.AppliedVerdict(score=0.0, action="skipped", is_spam=False)
    )
    with world.session() as s:
        ev = s.get(MailEvent, ids[0])
        assert "\x00" not in ev.helo and "\x01" not in ev.subject
        assert ev.action == "skipped"
