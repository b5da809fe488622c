"""Defects found in review of the mail path, on SQLite and PostgreSQL with the real
bundled scanner."""

from __future__ import annotations

from sqlalchemy import select

from aliasd.core import aliases as core
from aliasd.core.decision import Decision
from aliasd.core.replica import Replica
from aliasd.milter.processing import Envelope, MailPath
from aliasd.models import MailEvent

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
