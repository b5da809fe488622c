"""Reverse aliases: one stable, unguessable address per (alias, correspondent), answered
by the virtual map while live and refused once disabled, deleted, or their alias is
dead; on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest

from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.decision import Decision, LookupOutcome
from aliasd.core.replica import Replica


@pytest.fixture
def alias_db(database):
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@mailbox.example")
        core.create_domain(s, "example.net", bob, catch_all="create")
        core.create_alias(s, "shop@example.net", bob)
    return database


def _alias(s):
    return core.get_alias(s, "shop@example.net")


def test_one_stable_unguessable_address_per_correspondent(alias_db):
    with alias_db.session() as s:
        first = ra.for_correspondent(s, _alias(s), "Support@Shop.Example", name="Shop Support")
        again = ra.for_correspondent(s, _alias(s), "support@shop.example")
        other = ra.for_correspondent(s, _alias(s), "news@shop.example")
        assert first.id == again.id
        assert other.address != first.address
        assert re.fullmatch(r"ra-[0-9a-f]{26}@example\.net", first.address)
        assert first.correspondent == "support@shop.example"
        assert first.correspondent_name == "Shop Support"


def test_reply_domain_holds_the_reverse_aliases(alias_db):
    with alias_db.session() as s:
        row = ra.for_correspondent(s, _alias(s), "a@shop.example", reply_domain="Reply.Example")
        assert row.address.endswith("@reply.example")
    replica = Replica(alias_db, reply_domain="reply.example")
    replica.sync()
    assert replica.decide("reply.example").outcome is LookupOutcome.FOUND
    assert replica.decide(row.address) == Decision.found("bob@mailbox.example")


@pytest.mark.parametrize("correspondent", ["other@example.net", "x@reply.example", "not an address"])
def test_correspondents_on_own_domains_or_malformed_are_refused(alias_db, correspondent):
    with alias_db.session() as s, pytest.raises(ra.ReverseAliasRefused):
        ra.for_correspondent(s, _alias(s), correspondent, reply_domain="reply.example")


def test_lookup_follows_disable_delete_and_the_alias_state(alias_db):
    with alias_db.session() as s:
        address = ra.for_correspondent(s, _alias(s), "a@shop.example").address
    replica = Replica(alias_db)
    replica.sync()
    assert replica.decide(address) == Decision.found("bob@mailbox.example")
    assert replica.decide(address.upper()) == Decision.found("bob@mailbox.example")

    with alias_db.session() as s:
        ra.set_enabled(s, s.get(ra.ReverseAlias, ra.resolve(s, address).id), False)
    replica.sync()
    assert replica.decide(address).outcome is LookupOutcome.NOTFOUND

    with alias_db.session() as s:
        ra.set_enabled(s, s.get(ra.ReverseAlias, ra.resolve(s, address).id), True)
        core.set_state(s, _alias(s), "disabled")
    replica.sync()
    assert replica.decide(address).outcome is LookupOutcome.NOTFOUND  # its alias is off

    with alias_db.session() as s:
        core.set_state(s, _alias(s), "active")
    replica.sync()
    assert replica.decide(address).outcome is LookupOutcome.FOUND

    with alias_db.session() as s:
        ra.delete(s, s.get(ra.ReverseAlias, ra.resolve(s, address).id))
    replica.sync()
    assert replica.decide(address).outcome is LookupOutcome.NOTFOUND
    with alias_db.session() as s:
        assert ra.resolve(s, address) is None
        # A new one replaces it; the deleted address is never handed out again.
        assert ra.for_correspondent(s, _alias(s), "a@shop.example").address != address


def test_unknown_reverse_addresses_are_never_minted_by_the_catch_all(alias_db):
    replica = Replica(alias_db)
    replica.sync()
    assert replica.decide("ra-0123456789abcdef0123456789@example.net").outcome \
        is LookupOutcome.NOTFOUND
    assert replica.decide("ra-@example.net").outcome is LookupOutcome.NOTFOUND


def test_write_to_refuses_a_dead_alias(alias_db):
    with alias_db.session() as s:
        core.set_state(s, _alias(s), "burned")
    with alias_db.session() as s, pytest.raises(ra.ReverseAliasRefused, match="burned"):
        ra.write_to(s, _alias(s), "a@shop.example")


def test_reply_mode_alias_over_domain_over_default():
    assert ra.effective_reply_mode(None, None, "preserve") == "preserve"
    assert ra.effective_reply_mode(None, "rewrite", "preserve") == "rewrite"
    assert ra.effective_reply_mode("preserve", "rewrite", "rewrite") == "preserve"
