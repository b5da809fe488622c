"""Forwarded mail picks up what the owner changed on the web (SQLite and PostgreSQL): a
contact disabled, enabled or deleted through the JSON API, the alias's reply mode, its
destinations, and a correspondent's domain becoming one of aliasd's own. At once where
nothing is remembered; the milter remembers a known contact as long as its alias
lookups (2 s). ReplyPath.forwarded in-process, the web app through Flask's test client."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import event

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.events import AliasTarget
from aliasd.milter.processing import Envelope
from aliasd.milter.replies import ReplyPath, transformed_envelope
from tests.harness.webapp import add_user, make_app
from tests.test_web_api import auth, new_token

ALIAS = "shop@alice.example"
CORRESPONDENT = "support@shop.example"


@pytest.fixture
def world(settings, database):
    add_user(database, "alice", domain="alice.example")
    with database.session() as s:
        alias = core.create_alias(s, ALIAS, core.get_user(s, "alice"))
        s.flush()
        target = AliasTarget(alias.id, alias.address, alias.owner_id, None, "active")
    app = make_app(settings)
    return app.test_client(), auth(new_token(app, "alice")), ReplyPath(settings, database), target


def mail(sender: str = CORRESPONDENT, name: str = "Shop Support") -> Envelope:
    return Envelope(
        sender=sender, recipients=[ALIAS], client_addr="192.0.2.1", helo="mx.shop.example",
        headers=[("From", f"{name} <{sender}>".encode()), ("To", ALIAS.encode()),
                 ("Subject", b"order 7"), ("Message-ID", b"<o7@shop.example>")],
        body=bytearray(b"Your order shipped.\r\n"), size=200,
    )  # fmt: skip


def header(envelope: Envelope, transform, name: str) -> str | None:
    for n, v in transformed_envelope(envelope, transform).headers:
        if n.lower() == name.lower():
            return v.decode()
    return None


def reverse_in(envelope: Envelope, transform) -> str | None:
    """The reverse alias the delivered message names (Reply-To: or From:), or None."""
    if transform is None:
        return None
    for name in ("Reply-To", "From"):
        value = header(envelope, transform, name) or ""
        if "ra-" in value:
            return value.rpartition("<")[2].rstrip(">")
    return None


def test_a_contact_disabled_enabled_or_deleted_on_the_web_applies_to_the_next_message(world):
    client, headers, replies, target = world
    first = reverse_in(mail(), replies.forwarded(mail(), target, None))
    assert first is not None and first.startswith("ra-")
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == first  # stable
    [contact] = client.get(f"/api/aliases/{target.id}/contacts",
                           headers=headers).get_json()["contacts"]
    url = f"/api/aliases/{target.id}/contacts/{contact['id']}"

    assert client.post(url + "/disable", headers=headers).status_code == 200
    # Still named: answering it is refused, rather than going out from the owner's mailbox.
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == first

    assert client.post(url + "/enable", headers=headers).status_code == 200
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == first

    assert client.delete(url, headers=headers).status_code == 204
    again = reverse_in(mail(), replies.forwarded(mail(), target, None))
    assert again is not None and again != first  # a deleted address is never handed out


def test_the_alias_reply_mode_set_on_the_web_applies_to_the_next_message(world):
    client, headers, replies, target = world
    envelope = mail()
    preserve = replies.forwarded(envelope, target, None)
    reverse = reverse_in(envelope, preserve)
    assert reverse in header(envelope, preserve, "Reply-To")
    assert header(envelope, preserve, "From") == f"Shop Support <{CORRESPONDENT}>"

    assert client.post(f"/api/aliases/{target.id}/reply-settings", headers=headers,
                       json={"reply_mode": "rewrite"}).status_code == 200
    rewrite = replies.forwarded(envelope, target, None)
    assert reverse in header(envelope, rewrite, "From")
    assert header(envelope, rewrite, "Reply-To") is None

    assert client.post(f"/api/aliases/{target.id}/reply-settings", headers=headers,
                       json={"reply_mode": ""}).status_code == 200  # back to the domain's
    assert header(envelope, replies.forwarded(envelope, target, None), "From") == \
        f"Shop Support <{CORRESPONDENT}>"


def test_a_correspondent_who_becomes_a_destination_gets_no_reverse_alias(world, database):
    _, _, replies, target = world
    assert replies.forwarded(mail(), target, None) is not None
    with database.session() as s:
        core.set_destinations(s, core.get_alias(s, ALIAS), [CORRESPONDENT])
    assert replies.forwarded(mail(), target, None) is None  # the owner writing: nobody to hide


def test_a_correspondent_whose_domain_becomes_ours_gets_no_reverse_alias(world, database):
    _, _, replies, target = world
    assert replies.forwarded(mail(), target, None) is not None
    with database.session() as s:
        core.create_domain(s, "shop.example", core.get_user(s, "alice"))
    assert replies.forwarded(mail(), target, None) is None  # replies would loop


def test_a_contact_made_without_a_name_is_named_by_the_first_mail(world, database):
    _, _, replies, target = world
    with database.session() as s:
        made = ra.for_correspondent(s, core.get_alias(s, ALIAS), CORRESPONDENT).address
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == made
    with database.session() as s:
        assert ra.resolve(s, made).correspondent_name == "Shop Support"


def test_the_milter_remembers_a_known_contact_briefly_and_then_sees_it_deleted(
        world, settings, database):
    client, headers, _, target = world
    replies = ReplyPath(settings, database, facts_ttl=2.0)
    first = reverse_in(mail(), replies.forwarded(mail(), target, None))  # made and named
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == first

    statements: list[str] = []
    event.listen(database.engine, "before_cursor_execute",
                 lambda *args: statements.append(args[2]))
    assert reverse_in(mail(), replies.forwarded(mail(), target, None)) == first
    assert statements == []  # remembered: no query for a correspondent seen just now

    [contact] = client.get(f"/api/aliases/{target.id}/contacts",
                           headers=headers).get_json()["contacts"]
    url = f"/api/aliases/{target.id}/contacts/{contact['id']}"
    assert client.delete(url, headers=headers).status_code == 204
    time.sleep(2.1)
    again = reverse_in(mail(), replies.forwarded(mail(), target, None))
    assert again is not None and again != first  # the change, once ttl passed
    assert replies.forwarded(mail("other@shop.example"), target, None) is not None
