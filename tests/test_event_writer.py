"""The milter's event writer: events are committed in batches off the SMTP answer, on
SQLite and PostgreSQL. What a user relies on: every message's events arrive (flush,
close), counters match, the auto-block hook still judges spam after the commit, and a
database that is down costs statistics only, never an exception in the mail path."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import func, select

from aliasd.core import aliases as core
from aliasd.core import events
from aliasd.db import Database
from aliasd.milter import event_writer
from aliasd.milter.event_writer import EventWriter, Record
from aliasd.milter.processing import MailPath
from aliasd.models import Alias, BlockRule, MailEvent
from tests.harness.net import free_port


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "github.com@example.net", alice, site="github.com")
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    return database


def targets(db, *rcpts):
    with db.session() as s:
        return tuple(events.find_aliases(s, rcpts, "+"))


def record(db, subject: str, *, spam: bool = False, sender: str = "news@bulk.example",
           rcpts=("github.com@example.net",)) -> Record:
    outcome = events.AppliedVerdict(score=9.0 if spam else 0.5,
                                    action="add header" if spam else "no action", is_spam=spam)
    facts = events.MessageFacts(envelope_sender=sender, subject=subject,
                                from_domain=sender.rpartition("@")[2])
    return Record(parts=((targets(db, *rcpts), outcome),), facts=facts, queue_id=subject)


def count(db, **where) -> int:
    with db.session() as s:
        query = select(func.count()).select_from(MailEvent)
        for key, value in where.items():
            query = query.where(getattr(MailEvent, key) == value)
        return s.scalar(query)


def test_every_queued_message_is_committed_after_flush(world, settings):
    writer = EventWriter(world, settings)
    records = [record(world, f"m{i}", rcpts=("github.com@example.net",
                                             "shop.example@example.net")) for i in range(50)]
    for r in records:
        assert writer.submit(r)
    assert writer.flush(10)
    assert count(world) == 100
    with world.session() as s:
        alias = s.scalar(select(Alias).where(Alias.address == "github.com@example.net"))
        assert alias.forwarded_count == 50
    writer.close()


def test_each_forwarded_copy_counts_for_its_contact(world, settings):
    import dataclasses

    from aliasd.core import reverse_aliases
    from aliasd.models import ReverseAlias

    with world.session() as s:
        alias = core.get_alias(s, "github.com@example.net")
        first = reverse_aliases.for_correspondent(s, alias, "a@news.example").id
        second = reverse_aliases.for_correspondent(s, alias, "b@news.example").id
    batch = [dataclasses.replace(record(world, f"m{i}"), forwarded_reverse_id=rid)
             for i, rid in enumerate([first, second, first, first, None])]
    event_writer.write_records(world, settings, batch)  # one transaction for all five
    with world.session() as s:
        counts = {r.id: r.forwarded_count for r in s.scalars(select(ReverseAlias))}
        assert counts == {first: 3, second: 1}
        assert all(r.last_used_at is not None for r in s.scalars(select(ReverseAlias)))


def test_a_batch_of_leak_evidence_leaves_the_sites_summary_as_its_evidence_says(world, settings):
    from aliasd.core import leaks

    # a site given to one alias, then spam from three senders unrelated to it, one batch
    batch = [record(world, f"spam {i}", spam=True, sender=f"x@pills{i}.example")
             for i in range(3)]
    event_writer.write_records(world, settings, batch)
    with world.session() as s:
        owner = s.scalar(select(Alias.owner_id).limit(1))
        full = leaks.site_status(s, owner, "github.com", 3)
        summary = leaks.statuses(s, [(owner, "github.com")], 3)[(owner, "github.com")]
    assert full.status == "leaked" and full.senders == 3
    assert (summary.status, summary.reason, summary.since, summary.senders) == (
        full.status, full.reason, full.since, full.senders)


def test_messages_submitted_together_share_transactions(world, settings, monkeypatch):
    """Batches: many messages queued while the writer is busy go in far fewer commits."""
    commits = []
    real = event_writer.write_records
    gate = threading.Event()

    def counting(database, st, batch, **kw):
        gate.wait(5)  # hold the first batch so the rest pile up
        commits.append(len(batch))
        return real(database, st, batch, **kw)

    monkeypatch.setattr(event_writer, "write_records", counting)
    writer = EventWriter(world, settings)
    for i in range(40):
        writer.submit(record(world, f"b{i}"))
    gate.set()
    assert writer.flush(10)
    assert sum(commits) == 40 and len(commits) <= 3, commits
    assert count(world) == 40
    writer.close()


def test_close_writes_what_is_queued(world, settings):
    writer = EventWriter(world, settings)
    for i in range(20):
        writer.submit(record(world, f"c{i}"))
    writer.close()
    assert count(world) == 20
    assert not writer.submit(record(world, "late"))  # closed: refused, never raises


def test_the_autoblock_hook_judges_spam_after_the_commit(world, settings):
    st = settings.with_overrides(autoblock_threshold=3, autoblock_period_hours=24,
                                 blocklist_reload_command="")
    writer = EventWriter(world, st)
    for i in range(3):
        writer.submit(record(world, f"spam{i}", spam=True, sender=f"x{i}@massmail.example"))
    writer.flush(10)
    with world.session() as s:
        rule = s.scalar(select(BlockRule).where(BlockRule.value == "massmail.example"))
    assert rule is not None and rule.source == "auto"
    writer.close()


def test_a_database_that_is_down_loses_statistics_only(settings):
    down = Database(f"postgresql+psycopg://aliasd@127.0.0.1:{free_port()}/aliasd", timeout=1)
    lost = []
    writer = EventWriter(down, settings, on_lost=lost.append)
    facts = events.MessageFacts(envelope_sender="a@b.example", subject="x")
    target = events.AliasTarget(1, "github.com@example.net", 1, None, "active")
    outcome = events.AppliedVerdict(score=0.0, action="no action", is_spam=False)
    started = time.monotonic()
    assert writer.submit(Record(parts=(((target,), outcome),), facts=facts))
    assert time.monotonic() - started < 0.5  # the caller never waits for the database
    assert writer.flush(30)
    assert sum(lost) == 1
    writer.close()


def test_a_full_queue_drops_new_records_without_blocking(world, settings, monkeypatch):
    gate, writing = threading.Event(), threading.Event()
    real = event_writer.write_records

    def slow_database(*a, **kw):
        writing.set()
        gate.wait(10)
        return real(*a, **kw)

    monkeypatch.setattr(event_writer, "write_records", slow_database)
    lost = []
    writer = EventWriter(world, settings, max_queue=5, on_lost=lost.append)
    assert writer.submit(record(world, "first"))
    assert writing.wait(10)  # the writer is stuck on the database with the first record
    started = time.monotonic()
    accepted = [writer.submit(record(world, f"q{i}")) for i in range(20)]
    assert time.monotonic() - started < 1.0  # the milter's threads never wait
    assert accepted.count(True) == 5 and sum(lost) == 15  # the queue's bound, the rest dropped
    gate.set()
    writer.close()
    assert count(world) == 1 + accepted.count(True)


def test_the_milter_path_answers_before_the_commit_and_flushes_on_close(world, settings):
    from tests.test_milter_processing import envelope

    path = MailPath(settings, world, background_events=True)
    verdict = path.process(envelope())
    assert verdict.status == "accept" and verdict.events_recorded == 1
    assert path.flush_events(10)
    assert count(world, alias_address="github.com@example.net") == 1
    path.process(envelope())
    path.close()  # SIGTERM in the milter ends here: the queue is written first
    assert count(world, alias_address="github.com@example.net") == 2


def test_worker_count_defaults_to_one_per_cpu_and_rejects_negatives(settings):
    import os

    from aliasd.config import SettingsError
    from aliasd.milter.server import worker_count

    assert worker_count(settings) == len(os.sched_getaffinity(0))
    assert worker_count(settings.with_overrides(milter_workers=3)) == 3
    assert worker_count(settings, 1) == 1
    with pytest.raises(SettingsError):
        settings.with_overrides(milter_workers=-1).validate()
