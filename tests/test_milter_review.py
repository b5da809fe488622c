"""Defects found in review of the mail path, on SQLite and PostgreSQL with the real
bundled scanner."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from aliasd.core import aliases as core
from aliasd.core import events
from aliasd.core.decision import Decision
from aliasd.core.replica import Replica
from aliasd.milter.processing import Envelope, MailPath
from aliasd.models import BlockRule, MailEvent
from aliasd.postfix import header_checks as hc

MESSAGE_HEADERS = [
    (b"From", b"Shop <news@shop.example>"),
    (b"To", b"info+shop@example.net"),
    (b"Subject", b"Offers"),
    (b"Date", b"Wed, 25 Nov 2026 10:00:00 +0000"),
    (b"Message-ID", b"<1@shop.example>"),
]


def test_milter_attributes_mail_to_the_alias_postfix_delivered_to(database, settings):
    """An alias whose address contains the delimiter (imported from a Postfix virtual
    file: ``info+shop@…``) is what lookupd answers for that exact address; the milter must
    record the mail against that alias and its owner, not against ``info@…`` of someone
    else."""
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "info@example.net", alice)
        core.create_alias(s, "info+shop@example.net", bob, site="shop.example")
    replica = Replica(database)
    replica.sync()
    assert replica.decide("info+shop@example.net") == Decision.found("bob@real.example")

    path = MailPath(settings, database)
    try:
        verdict = path.process(
            Envelope(
                sender="news@shop.example",
                recipients=["Info+Shop@example.net"],
                client_addr="192.0.2.1",
                helo="mail.shop.example",
                queue_id="QID7",
                headers=[(n.decode(), v) for n, v in MESSAGE_HEADERS],
                body=bytearray(b"Hello\r\n"),
                size=200,
            )
        )
    finally:
        path.close()
    assert verdict.header("X-Aliasd-Alias") == ["info+shop@example.net (site shop.example)"]
    with database.session() as s:
        [event] = s.scalars(select(MailEvent)).all()
        assert (event.alias_address, event.owner_id) == ("info+shop@example.net", bob.id)


def test_concurrent_auto_blocks_add_one_rule_per_domain(database, settings):
    """Several milter threads/processes reach the auto-block threshold for one sender
    domain at the same moment: one rule, not one per writer (duplicates would each need
    disabling and fill header_checks)."""
    st = settings.with_overrides(autoblock_threshold=3, blocklist_reload_command="")
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    with database.session() as s:
        targets = events.find_aliases(s, ["shop.example@example.net"], "+")
    facts = events.MessageFacts(envelope_sender="x@massnews.gr", subject="pills")
    outcome = events.Outcome(score=9.0, action="add header", is_spam=True)
    ids: list[int] = []
    for _ in range(8):
        with database.session() as s:
            ids += events.record_message(s, targets, facts, outcome)
    barrier = threading.Barrier(len(ids))

    def hook(event_id: int) -> None:
        barrier.wait()
        events.run_spam_hook(database, st, [event_id])

    threads = [threading.Thread(target=hook, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(BlockRule)) == 1
    hc.wait_for_sync(st)


def test_auto_block_never_blocks_another_users_mailbox_domain(database, settings):
    """A block is server-wide. Spam forging ``From: …@bobcorp.example`` to alice's aliases
    must not cut off bob's own mail domain (his mail to his aliases, and his mail through
    this server), just as alice's own mailbox domain is protected."""
    st = settings.with_overrides(autoblock_threshold=3, blocklist_reload_command="")
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_user(s, "bob", "bob@bobcorp.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    with database.session() as s:
        targets = events.find_aliases(s, ["shop.example@example.net"], "+")
    facts = events.MessageFacts(
        envelope_sender="x@spam.example", from_domain="bobcorp.example", subject="pills"
    )
    outcome = events.Outcome(score=9.0, action="add header", is_spam=True)
    for _ in range(4):
        events.record_and_notify(database, st, targets, facts, outcome)
    hc.wait_for_sync(st)
    with database.session() as s:
        assert s.scalars(select(BlockRule.value)).all() == ["spam.example"]


def test_alias_header_is_not_shown_to_recipients_that_are_not_aliases(database, settings):
    """One message reaches every recipient with the same headers. Mail to alice's alias
    (perhaps as Bcc) and to a mailbox that is not an alias must not tell that mailbox
    which alias of alice's it was sent to; mail to her aliases only still names them."""
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop.example@example.net", alice, site="shop.example")
    path = MailPath(settings, database)

    def run(rcpts: list[str]):
        return path.process(
            Envelope(
                sender="news@shop.example", recipients=rcpts, client_addr="192.0.2.1",
                helo="mail.shop.example", queue_id="Q",
                headers=[(n.decode(), v) for n, v in MESSAGE_HEADERS],
                body=bytearray(b"Hello\r\n"), size=200,
            )
        )  # fmt: skip

    try:
        mixed = run(["carol@other.example", "shop.example+x@example.net"])
        only = run(["Shop.Example@example.net", "shop.example+y@example.net"])
    finally:
        path.close()
    assert mixed.header("X-Aliasd-Alias") == []
    assert mixed.scanned and mixed.header("X-Spamd-Result")  # still scanned and recorded
    assert only.header("X-Aliasd-Alias") == ["shop.example@example.net (site shop.example)"]
    with database.session() as s:
        assert len(s.scalars(select(MailEvent)).all()) == 2
