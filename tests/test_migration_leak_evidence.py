"""Upgrading a database that kept leaks as ``aliases.leaked_at`` (revision
0003_session_epoch) keeps every leak: each becomes evidence built from the alias's
unrelated mail events, on SQLite and PostgreSQL; downgrading gives the dates back."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from aliasd.core import leaks, reports
from aliasd.db import Database
from tests.harness.databases import PG_ADMIN_URL

OLD = "0003_session_epoch"
T0 = dt.datetime(2026, 2, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def old_database(engine_name, tmp_path):
    """A database at 0003, before leak evidence existed."""
    if engine_name == "sqlite":
        db = Database(f"sqlite:///{tmp_path}/old.db")
        db.upgrade(OLD)
        yield db
        db.dispose()
        return
    name = f"aliasd_mig_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    db = Database(PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name)
    db.upgrade(OLD)
    yield db
    db.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
    admin.dispose()


def _fill(db: Database) -> None:
    with db.engine.begin() as c:
        c.execute(text(
            "INSERT INTO users (id, username, mailbox, is_admin, auth_source, created_at) "
            "VALUES (1, 'alice', 'alice@mailbox.example', false, 'local', :t)"), {"t": T0})
        c.execute(text(
            "INSERT INTO domains (id, name, owner_id, catch_all, created_at) "
            "VALUES (1, 'example.net', 1, 'reject', :t)"), {"t": T0})
        for aid, address, site, leaked in [
            (1, "shop@example.net", "shop.example", T0 + dt.timedelta(days=2)),
            (2, "so@example.net", "stackoverflow.com", T0 + dt.timedelta(days=1)),
            (3, "old@example.net", "old.example", T0 + dt.timedelta(days=3)),
            (4, "quiet@example.net", "quiet.example", None),
        ]:
            c.execute(text(
                "INSERT INTO aliases (id, address, domain_id, owner_id, site, destinations, "
                "state, origin, created_at, updated_at, forwarded_count, spam_count, "
                "rejected_count, leaked_at) VALUES (:i, :a, 1, 1, :s, 'alice@mailbox.example', "
                "'active', 'web', :t, :t, 3, 2, 0, :l)"),
                {"i": aid, "a": address, "s": site, "t": T0, "l": leaked})
        events = [
            # shop.example: its own mail, then a clean partner, then spam from pills.example
            (1, T0 + dt.timedelta(days=1), "n@shop.example", "shop.example", "Welcome", 0.1, False, True),
            (1, T0 + dt.timedelta(days=2), "r@hotel.example", "hotel.example", "Your stay", 0.5, False, False),
            (1, T0 + dt.timedelta(days=4), "x@pills.example", "pills.example", "Cheap pills", 11.0, True, False),
            (1, T0 + dt.timedelta(days=5), "y@pills.example", "pills.example", "More pills", 12.0, True, False),
            # stackoverflow.email: a false leak of the old rule
            (2, T0 + dt.timedelta(days=1), "do-not-reply@stackoverflow.email", "stackoverflow.email",
             "Your question", 0.3, False, False),
        ]
        for aid, at, env, dom, subject, score, spam, related in events:
            c.execute(text(
                "INSERT INTO mail_events (at, alias_id, owner_id, alias_address, site, "
                "envelope_sender, sender_domain, from_domain, subject, score, action, is_spam, "
                "symbols, size, related_sender) VALUES (:at, :a, 1, 'x', NULL, :e, :d, :d, :s, "
                ":sc, 'no action', :sp, '', 100, :r)"),
                {"at": at, "a": aid, "e": env, "d": dom, "s": subject, "sc": score, "sp": spam,
                 "r": related})


def test_upgrade_keeps_every_leak_as_evidence_and_downgrade_restores_the_dates(old_database):
    db = old_database
    _fill(db)
    db.upgrade()
    db.require_current_schema()
    assert "leaked_at" not in {c["name"] for c in inspect(db.engine).get_columns("aliases")}
    with db.session() as s:
        shop = leaks.site_status(s, 1, "shop.example", 4)
        assert shop.status == "leaked"
        assert shop.evidence.sender_domain == "pills.example"
        assert (shop.evidence.total, shop.evidence.spam) == (2, 2)
        assert shop.evidence.evidence_subject == "Cheap pills"
        assert shop.evidence.evidence_score == 11.0
        assert shop.since == T0 + dt.timedelta(days=2)  # the hotel's clean mail, kept
        senders = {e.sender_domain for e in leaks.site_evidence(s, 1, "shop.example")}
        assert senders == {"hotel.example", "pills.example"}
        # the old rule's false leak is kept, but dismissed: the new rules know the sender
        so = leaks.site_evidence(s, 1, "stackoverflow.com")
        assert [(e.sender_domain, e.dismissed_at is not None) for e in so] == [
            ("stackoverflow.email", True)
        ]
        assert leaks.site_status(s, 1, "stackoverflow.com", 4).status == "clean"
        # a leak date whose events are gone stays a leak
        old = leaks.site_status(s, 1, "old.example", 4)
        assert old.status == "leaked" and old.since == T0 + dt.timedelta(days=3)
        assert "before aliasd kept the evidence" in old.reason
        assert leaks.site_status(s, 1, "quiet.example", 4).status == "clean"
        # the report reads the per-site summaries the migration wrote: the same statuses
        ranked = {r.site: r.status for r in reports.ranking(s, owner_id=1, period="all").rows}
        assert ranked == {"shop.example": "leaked", "stackoverflow.com": "clean",
                          "old.example": "leaked", "quiet.example": "clean"}

    command.downgrade(db.alembic_config(), OLD)
    with db.engine.connect() as c:
        dates = dict(c.execute(text("SELECT address, leaked_at FROM aliases")).all())
    as_utc = {k: _utc(v) for k, v in dates.items()}
    assert as_utc == {
        "shop@example.net": T0 + dt.timedelta(days=2),
        "so@example.net": None,  # dismissed on the way up: not a leak any more
        "old@example.net": T0 + dt.timedelta(days=3),
        "quiet@example.net": None,
    }


def _utc(value):
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value is not None and value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value
