"""The milter remembers each address's alias lookup for a couple of seconds (on both
engines, with the real scanner): within that an alias deleted, burned or created on
the web may still be seen as it was; past it, the next message sees the change."""

from __future__ import annotations

import time

import pytest

from aliasd.core import aliases as core
from aliasd.milter.alias_cache import ALIAS_TTL, AliasCache
from aliasd.milter.processing import HEADER_ALIAS, Envelope, MailPath
from aliasd.models import Alias

TTL = 1.0  # short, so the tests wait little; the milter's is ALIAS_TTL


@pytest.fixture
def world(database):
    with database.session() as s:
        alice = core.create_user(s, "alice", "alice@real.example")
        core.create_domain(s, "example.net", alice)
        core.create_alias(s, "shop@example.net", alice, site="shop.example")
    return database


@pytest.fixture
def path(world, settings):
    mailpath = MailPath(settings, world)
    mailpath.alias_ttl = TTL
    mailpath.scanner()  # built before the clock matters: it takes longer than TTL
    yield mailpath
    mailpath.close()


def _message(rcpt: str) -> Envelope:
    return Envelope(sender="news@shop.example", recipients=[rcpt], client_addr="192.0.2.1",
                    helo="mail.shop.example", queue_id="Q1",
                    headers=[("From", b"Shop <news@shop.example>"), ("To", rcpt.encode()),
                             ("Subject", b"News")],
                    body=bytearray(b"This week's news.\r\n"), size=120)  # fmt: skip


def _judged(path: MailPath, rcpt: str) -> bool:
    verdict = path.process(_message(rcpt))
    return verdict.scanned and verdict.header(HEADER_ALIAS) != []


def _change(database, address: str, how) -> None:
    with database.session() as s:
        alias = s.query(Alias).filter_by(address=address).one_or_none()
        how(s, alias)


def test_the_milter_keeps_lookups_at_most_two_seconds():
    assert 0 < ALIAS_TTL <= 2.0


def test_a_deleted_alias_is_no_longer_judged_once_the_ttl_has_passed(path, world):
    assert _judged(path, "shop+x@example.net")
    _change(world, "shop@example.net", core.forget)
    assert _judged(path, "shop+x@example.net")  # remembered: within the TTL
    time.sleep(TTL + 0.1)
    assert not _judged(path, "shop+x@example.net")


def test_a_new_alias_is_judged_once_the_ttl_has_passed(path, world):
    assert not _judged(path, "new@example.net")  # not an alias (yet): remembered too
    with world.session() as s:
        core.create_alias(s, "new@example.net", core.get_user(s, "alice"))
    time.sleep(TTL + 0.1)
    assert _judged(path, "new@example.net")


def test_a_burned_alias_is_seen_burned_once_the_ttl_has_passed(world, settings):
    cache = AliasCache(ttl=TTL)
    (before,) = cache.find(world, ["shop@example.net"], "+")
    _change(world, "shop@example.net", lambda s, a: core.set_state(s, a, "burned"))
    assert cache.find(world, ["shop@example.net"], "+") == [before]
    time.sleep(TTL + 0.1)
    (after,) = cache.find(world, ["shop@example.net"], "+")
    assert (before.state, after.state) == ("active", "burned")


def test_a_ttl_of_zero_reads_every_time(path, world):
    path.alias_ttl = 0.0
    assert _judged(path, "shop@example.net")
    _change(world, "shop@example.net", core.forget)
    assert not _judged(path, "shop@example.net")


def test_the_cache_answers_like_the_lookup_it_replaces(world):
    from aliasd.core import events

    recipients = ["Shop+a@Example.net", "nobody@example.net", "shop@example.net", "junk"]
    cache = AliasCache(ttl=TTL)
    with world.session() as s:
        expected = events.find_aliases(s, recipients, "+")
    assert [t.address for t in expected] == ["shop@example.net"]
    assert cache.find(world, recipients, "+") == expected
    assert cache.find(world, recipients, "+") == expected  # from memory
