"""Upgrading a database at 0007 (before mail authentication, reverse aliases and
quarantine) keeps every user, domain, alias and mail event, on SQLite (whose batch
migrations rebuild tables) and PostgreSQL; the new columns start empty."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import text

from aliasd.core.quarantine import held_count
from tests.test_migration_leak_evidence import old_database  # noqa: F401 - the fixture

T0 = dt.datetime(2026, 2, 1, 9, 0, tzinfo=dt.UTC)


def _alice_with_a_shop_alias(c, *, forwarded: int, spam: int, rejected: int) -> None:
    """User alice, her domain example.net and alias shop@example.net (id 1 each)."""
    c.execute(text(
        "INSERT INTO users (id, username, mailbox, is_admin, auth_source, created_at) "
        "VALUES (1, 'alice', 'alice@mailbox.example', false, 'local', :t)"), {"t": T0})
    c.execute(text(
        "INSERT INTO domains (id, name, owner_id, catch_all, created_at) "
        "VALUES (1, 'example.net', 1, 'reject', :t)"), {"t": T0})
    c.execute(text(
        "INSERT INTO aliases (id, address, domain_id, owner_id, site, destinations, "
        "state, origin, created_at, updated_at, forwarded_count, spam_count, "
        "rejected_count) VALUES (1, 'shop@example.net', 1, 1, 'shop.example', "
        "'alice@mailbox.example', 'active', 'web', :t, :t, :f, :s, :r)"),
        {"t": T0, "f": forwarded, "s": spam, "r": rejected})


def test_upgrade_from_0007_keeps_every_row_and_the_new_columns_start_empty(old_database):  # noqa: F811
    db = old_database
    db.upgrade("0007_user_display_name")
    with db.engine.begin() as c:
        _alice_with_a_shop_alias(c, forwarded=3, spam=2, rejected=0)
        c.execute(text(
            "INSERT INTO mail_events (at, alias_id, owner_id, alias_address, envelope_sender, "
            "sender_domain, from_domain, subject, score, action, is_spam, symbols, size, "
            "related_sender) VALUES (:t, 1, 1, 'shop@example.net', 'n@shop.example', "
            "'shop.example', 'shop.example', 'Welcome', 0.1, 'no action', false, '', 100, "
            "true)"), {"t": T0})
    db.upgrade()
    with db.engine.connect() as c:
        assert c.execute(text("SELECT username, quarantine_score FROM users")).all() == [
            ("alice", None)]
        assert c.execute(text("SELECT name, reply_mode FROM domains")).all() == [
            ("example.net", None)]
        assert c.execute(text(
            "SELECT address, forwarded_count, reply_mode, reply_name FROM aliases")).all() == [
            ("shop@example.net", 3, None, None)]
        assert c.execute(text("SELECT subject, auth FROM mail_events")).all() == [
            ("Welcome", None)]
        assert c.execute(text("SELECT count(*) FROM reverse_aliases")).scalar() == 0
    with db.session() as session:
        assert held_count(session) == 0


def test_upgrade_moves_messages_still_held_from_rejected_to_held(old_database):  # noqa: F811
    """Before aliases counted held mail apart, a held message counted as rejected: those
    still held move to the held count; decided ones keep their history."""
    db = old_database
    db.upgrade("0010_quarantine")
    with db.engine.begin() as c:
        _alice_with_a_shop_alias(c, forwarded=3, spam=4, rejected=4)
        for queue_id, state in (("AAA1", "held"), ("AAA2", "held"), ("AAA3", "released")):
            c.execute(text(
                "INSERT INTO quarantined_messages (held_at, queue_id, owner_id, alias_id, "
                "alias_address, envelope_sender, score, symbols, preview, state) VALUES "
                "(:t, :q, 1, 1, 'shop@example.net', 'x@spam.example', 9.5, '', '', :s)"),
                {"t": T0, "q": queue_id, "s": state})
    db.upgrade()
    with db.engine.connect() as c:
        assert c.execute(text(
            "SELECT forwarded_count, rejected_count, held_count FROM aliases")).one() == (3, 2, 2)


def test_upgrade_from_0012_keeps_users_and_held_mail_and_the_next_digest_lists_only_the_last_day(
        old_database):  # noqa: F811
    """0013 adds the directory re-check's columns, empty; 0014 marks messages held more than
    a day before the upgrade as already listed (the old digest covered the last 24 hours),
    so the first digest after it lists what the old one would have listed next."""
    db = old_database
    db.upgrade("0012_quarantine_state_index")
    now = dt.datetime.now(dt.UTC)
    with db.engine.begin() as c:
        _alice_with_a_shop_alias(c, forwarded=1, spam=2, rejected=0)
        for queue_id, held_at in (("OLD1", now - dt.timedelta(days=2)),
                                  ("NEW1", now - dt.timedelta(hours=1))):
            c.execute(text(
                "INSERT INTO quarantined_messages (held_at, queue_id, owner_id, alias_id, "
                "alias_address, envelope_sender, score, symbols, preview, state) VALUES "
                "(:t, :q, 1, 1, 'shop@example.net', 'x@spam.example', 9.5, '', '', 'held')"),
                {"t": held_at, "q": queue_id})
    db.upgrade()
    with db.engine.connect() as c:
        assert c.execute(text(
            "SELECT username, directory_checked_at, directory_missing_since FROM users"
        )).all() == [("alice", None, None)]
        rows = dict(c.execute(text(
            "SELECT queue_id, digested_at FROM quarantined_messages")).all())
    assert set(rows) == {"OLD1", "NEW1"}
    assert rows["OLD1"] is not None and rows["NEW1"] is None
    with db.session() as session:
        assert held_count(session) == 2
