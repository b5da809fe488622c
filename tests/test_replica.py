"""The in-memory alias replica and the virtual map on top of it, on SQLite and PostgreSQL:
what each key answers, following the change feed (out-of-order commits included),
staleness → TEMP, and catch-all creation."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import threading

import pytest
from sqlalchemy import delete, func, select, update

from aliasd.core import aliases as core
from aliasd.core.decision import Decision, LookupOutcome
from aliasd.core.replica import CatchAllRequest, Replica
from aliasd.db import Database
from aliasd.lookup.virtual_map import VirtualMap
from aliasd.models import Alias, AliasChange, AliasOrigin, utcnow

DOWN_URL = "postgresql+psycopg://nobody@127.0.0.1:9/nothing"  # nothing listens on port 9


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def populated(database: Database) -> Database:
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "d.example", bob)
        core.create_domain(
            s, "c.example", bob, catch_all="create", catch_all_regex=r"[a-z0-9-]+(\.[a-z0-9-]+)+"
        )
        core.create_domain(s, "bücher.example", bob)
        core.create_alias(s, "github.com@d.example", bob, site="github.com")
        core.create_alias(
            s, "multi@d.example", bob, destinations=["one@real.example", "two@real.example"]
        )
        for address, state in (("off@d.example", "disabled"), ("gone@d.example", "burned"),
                               ("del@d.example", "deleted"), ("old.shop@c.example", "burned")):
            core.set_state(s, core.create_alias(s, address, bob), state)
        core.create_alias(s, "shop@bücher.example", bob)
    return database


def found(value: str) -> Decision:
    return Decision.found(value)


def test_decide_answers(populated):
    clock = FakeClock()
    replica = Replica(populated, clock=clock, managed_reply="aliasd")
    assert replica.decide("github.com@d.example").outcome is LookupOutcome.TEMP  # never loaded
    replica.sync()
    bob = found("bob@real.example")
    assert replica.decide("github.com@d.example") == bob
    assert replica.decide("GitHub.COM@D.Example") == bob
    assert replica.decide("github.com+news@d.example") == bob
    assert replica.decide("GitHub.com+Deals@D.example") == bob
    assert replica.decide("multi@d.example") == found("one@real.example,two@real.example")
    assert replica.decide("shop@bücher.example") == bob  # IDN → xn--
    assert replica.decide("shop@xn--bcher-kva.example") == bob
    for domain in ("d.example", "D.Example", "bücher.example", "c.example"):
        assert replica.decide(domain) == found("aliasd"), domain
    for key in (
        "other.example", "off@d.example", "gone@d.example", "del@d.example",
        "nobody@d.example", "bob@real.example", "one@real.example", "", "@", "a@@d.example",
        "bad key@d.example", "a,b@d.example", "x\x00@d.example", "no-at-sign",
        "\"quoted\"@d.example", "old.shop@c.example", "srs0=hash=tt=x.example=u@c.example",
        "SRS1=h=x.example==u@c.example", "plainword@c.example",
    ):  # fmt: skip
        assert replica.decide(key).outcome is LookupOutcome.NOTFOUND, key
    assert replica.decide("News.Site.example+x@C.example") == CatchAllRequest(
        "c.example", "news.site.example", "news.site.example@c.example"
    )
    # Not synced for longer than max_staleness: TEMP, never NOTFOUND.
    clock.now += replica.max_staleness + 0.1
    assert replica.decide("github.com@d.example").outcome is LookupOutcome.TEMP
    assert replica.decide("nobody@d.example").outcome is LookupOutcome.TEMP
    # the reason says how old the copy is, not a guess at why (a stopped process too)
    assert replica.decide("nobody@d.example").value == "alias data is stale: last read from the database 5 s ago"
    replica.sync()
    assert replica.decide("github.com@d.example") == bob


def test_follows_the_change_feed(populated):
    replica = Replica(populated)
    replica.sync()
    with populated.session() as s:
        bob = core.get_user(s, "bob")
        core.create_alias(s, "new@d.example", bob)
        core.set_state(s, core.get_alias(s, "github.com@d.example"), "burned")
        core.set_state(s, core.get_alias(s, "off@d.example"), "active")
        core.set_destinations(s, core.get_alias(s, "multi@d.example"), ["three@real.example"])
        core.forget(s, core.get_alias(s, "gone@d.example"))
    stats = replica.sync()
    assert stats.changes == 5 and not stats.reloaded
    assert replica.decide("new@d.example") == found("bob@real.example")
    assert replica.decide("github.com@d.example").outcome is LookupOutcome.NOTFOUND
    assert replica.decide("off@d.example") == found("bob@real.example")
    assert replica.decide("multi@d.example") == found("three@real.example")
    assert "gone@d.example" not in replica.aliases
    assert replica.sync().changes == 0  # nothing new: nothing re-applied

    # A NULL change (domain added or changed) reloads everything.
    with populated.session() as s:
        core.create_domain(s, "e.example", core.get_user(s, "bob"))
    assert replica.sync().reloaded
    assert replica.decide("e.example") == found("managed")


def test_out_of_order_commits_are_not_lost(populated):
    clock = FakeClock()
    replica = Replica(populated, clock=clock, gap_ttl=30)
    replica.sync()
    if not populated.is_sqlite:  # SQLite has one writer: commits cannot overtake there
        _real_concurrent_commits(populated, replica)
    base = replica.seq
    with populated.session() as s:
        bob = core.get_user(s, "bob")
        # Two aliases whose feed rows commit in the wrong order, as concurrent
        # PostgreSQL transactions do: seq base+2 becomes visible before base+1.
        for address in ("early@d.example", "late@d.example"):
            s.add(Alias(address=address, domain_id=1, owner_id=bob.id,
                        destinations="bob@real.example"))  # fmt: skip
        s.add(AliasChange(seq=base + 2, address="early@d.example"))
    replica.sync()
    assert replica.decide("early@d.example") == found("bob@real.example")
    assert replica.decide("late@d.example").outcome is LookupOutcome.NOTFOUND
    assert base + 1 in replica.gaps
    with populated.session() as s:
        s.add(AliasChange(seq=base + 1, address="late@d.example"))
    clock.now += 10
    assert replica.sync().changes == 1
    assert replica.decide("late@d.example") == found("bob@real.example")
    assert not replica.gaps

    # A gap that never fills (rolled-back transaction) is given up after gap_ttl.
    with populated.session() as s:
        s.add(AliasChange(seq=base + 5, address="early@d.example"))
    replica.sync()
    assert set(replica.gaps) == {base + 3, base + 4}
    clock.now += 31
    replica.sync()
    assert not replica.gaps


def _real_concurrent_commits(database: Database, replica: Replica) -> None:
    """PostgreSQL: transaction A takes a seq first but commits last."""
    slow = database.sessionmaker()
    try:
        core.create_alias(slow, "slowtxn@d.example", core.get_user(slow, "bob"))
        slow.flush()  # seq allocated, not committed
        with database.session() as s:
            core.create_alias(s, "fasttxn@d.example", core.get_user(s, "bob"))
        replica.sync()
        assert replica.decide("fasttxn@d.example") == found("bob@real.example")
        assert replica.decide("slowtxn@d.example").outcome is LookupOutcome.NOTFOUND
        slow.commit()
    finally:
        slow.close()
    replica.sync()
    assert replica.decide("slowtxn@d.example") == found("bob@real.example")


def test_feed_reset_triggers_reload(populated):
    replica = Replica(populated)
    replica.sync()
    with populated.session() as s:
        s.execute(delete(AliasChange))
    with populated.session() as s:
        core.create_alias(s, "after.reset@d.example", core.get_user(s, "bob"))
    replica.sync()
    assert replica.decide("after.reset@d.example") == found("bob@real.example")


def test_feed_pruned_empty_needs_no_reload_and_big_jumps_are_not_gaps(populated):
    replica = Replica(populated)
    replica.sync()
    with populated.session() as s:
        s.execute(delete(AliasChange))
    stats = replica.sync()
    assert not stats.reloaded and replica.seq == 0
    with populated.session() as s:
        core.create_alias(s, "after.prune@d.example", core.get_user(s, "bob"))
    assert not replica.sync().reloaded
    assert replica.decide("after.prune@d.example") == found("bob@real.example")
    before = replica.seq
    with populated.session() as s:
        s.add(AliasChange(seq=before + 1_000_000, address="after.prune@d.example"))
    replica.sync()
    # Only the span a transaction still in flight could be in, not a million numbers.
    assert len([g for g in replica.gaps if g > before]) == 1000


def test_database_down_means_temp_then_recovers(populated):
    clock = FakeClock()
    replica = Replica(populated, clock=clock, max_staleness=2)
    replica.sync()
    replica.database = Database(DOWN_URL, timeout=1)
    clock.now += 1
    with pytest.raises(Exception):  # noqa: B017 - any driver error: the caller logs it
        replica.sync()
    assert replica.decide("github.com@d.example") == found("bob@real.example")  # still fresh
    clock.now += 1.5
    with pytest.raises(Exception):  # noqa: B017
        replica.sync()
    assert replica.decide("github.com@d.example").outcome is LookupOutcome.TEMP
    assert replica.decide("nobody@d.example").outcome is LookupOutcome.TEMP
    assert replica.decide("d.example").outcome is LookupOutcome.TEMP
    replica.database.dispose()
    replica.database = populated
    replica.sync()
    assert replica.decide("github.com@d.example") == found("bob@real.example")


# --- the virtual map: catch-all ---------------------------------------------------------
def _map(database: Database) -> VirtualMap:
    replica = Replica(database)
    replica.sync()
    return VirtualMap(replica, database)


def test_catch_all_creates_once_and_respects_rules(populated):
    vmap = _map(populated)

    async def scenario():
        # Five concurrent first mails to one new address: one alias, five answers.
        results = await asyncio.gather(
            *(vmap.lookup("News.Site.example+x@c.example") for _ in range(5))
        )
        assert set(results) == {found("bob@real.example")}
        assert vmap.lookup_fast("news.site.example@c.example") == found("bob@real.example")
        # The first asker hangs up mid-write: the others still get their answer.
        first = asyncio.ensure_future(vmap.lookup("hangup.example@c.example"))
        second = asyncio.ensure_future(vmap.lookup("hangup.example@c.example"))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == found("bob@real.example")
        assert first.cancelled()
        assert (await vmap.lookup("old.shop@c.example")).outcome is LookupOutcome.NOTFOUND  # burned
        assert (await vmap.lookup("plainword@c.example")).outcome is LookupOutcome.NOTFOUND  # regex gate
        assert (await vmap.lookup("srs0=a=b=x.example=u@c.example")).outcome is LookupOutcome.NOTFOUND
        assert (await vmap.lookup("unknown@d.example")).outcome is LookupOutcome.NOTFOUND  # reject policy

    asyncio.run(scenario())
    with populated.session() as s:
        alias = s.scalar(select(Alias).where(Alias.address == "news.site.example@c.example"))
        assert alias.origin == AliasOrigin.CATCH_ALL and alias.site == "news.site.example"
        assert alias.destinations == "bob@real.example"
        assert s.scalar(select(Alias).where(Alias.address == "plainword@c.example")) is None


def test_catch_all_cap_database_errors_and_stale_burns(populated):
    with populated.session() as s:
        core.update_domain(s, core.get_domain(s, "c.example"), catch_all_max_per_hour=2)
    vmap = _map(populated)

    async def scenario():
        assert await vmap.lookup("a.example@c.example") == found("bob@real.example")
        # Burned by another process after our last sync: the database still says no.
        with populated.session() as s:
            core.set_state(s, core.get_alias(s, "a.example@c.example"), "burned")
            core.create_alias(s, "b.example@c.example", core.get_user(s, "bob"))
            core.set_state(s, core.get_alias(s, "b.example@c.example"), "burned")
        assert (await vmap.lookup("b.example@c.example")).outcome is LookupOutcome.NOTFOUND
        assert await vmap.lookup("c.example@c.example") == found("bob@real.example")
        capped = await vmap.lookup("d.example@c.example")  # third catch-all this hour
        assert capped.outcome is LookupOutcome.TEMP and "cap" in capped.value
        # Database unreachable while creating: TEMP, and nothing is remembered.
        vmap.database = Database(DOWN_URL, timeout=1)
        down = await vmap.lookup("e.example@c.example")
        assert down.outcome is LookupOutcome.TEMP
        vmap.database.dispose()

    asyncio.run(scenario())
    with populated.session() as s:
        assert s.scalar(select(Alias).where(Alias.address == "d.example@c.example")) is None


def test_old_feed_rows_are_pruned_and_sync_goes_on(populated):
    vmap = _map(populated)
    with populated.session() as s:
        s.execute(update(AliasChange).values(changed_at=utcnow() - dt.timedelta(days=2)))
        core.create_alias(s, "recent@d.example", core.get_user(s, "bob"))
    vmap._prune()
    with populated.session() as s:
        assert s.scalars(select(AliasChange.address)).all() == ["recent@d.example"]
    vmap.replica.sync()
    assert vmap.lookup_fast("recent@d.example") == found("bob@real.example")
    with populated.session() as s:
        core.set_state(s, core.get_alias(s, "recent@d.example"), "disabled")
    vmap.replica.sync()
    assert vmap.lookup_fast("recent@d.example").outcome is LookupOutcome.NOTFOUND


def test_garbage_keys_are_not_found_never_errors(populated):
    replica = Replica(populated)
    replica.sync()
    rng = random.Random(7)
    alphabet = "aZ.@+-_=%\x00 \t,\"'<>\udcff日ß" + "".join(chr(c) for c in range(0x20, 0x7f))
    for _ in range(3000):
        key = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))
        decision = replica.decide(key)
        assert isinstance(decision, (Decision, CatchAllRequest)), key
        assert not isinstance(decision, Decision) or decision.outcome is not LookupOutcome.TEMP, key


def test_a_users_mailbox_on_a_create_domain_is_never_minted(database):
    """Postfix looks every destination up again in virtual_alias_maps. When the owner's
    mailbox is on a managed catch-all domain, that recursive query must not create an
    alias for the mailbox itself (it would pollute the list, use up the hourly cap, and
    shadow any later map that routes the mailbox)."""
    with database.session() as s:
        ann = core.create_user(s, "ann", "ann@own.example")
        core.create_user(s, "joe", "joe+inbox@own.example")
        core.create_domain(s, "own.example", ann, catch_all="create")
        core.create_alias(s, "shop.example@own.example", ann)
    vmap = _map(database)
    assert vmap.lookup_fast("shop.example@own.example") == Decision.found("ann@own.example")

    async def scenario():
        for key in ("ann@own.example", "ANN@own.example.", "joe+inbox@own.example"):
            assert (await vmap.lookup(key)).outcome is LookupOutcome.NOTFOUND, key
        # Other new addresses on the domain are still created as before.
        assert await vmap.lookup("news.example@own.example") == Decision.found("ann@own.example")

    asyncio.run(scenario())
    with database.session() as s:
        assert s.scalars(select(Alias.address).order_by(Alias.address)).all() == [
            "news.example@own.example",
            "shop.example@own.example",
        ]
        # The core rule holds too (a mailbox changed after the replica loaded).
        domain = core.get_domain(s, "own.example")
        core.get_user(s, "joe").mailbox = "joe@own.example"
        s.flush()
        assert core.catch_all_create(s, domain, "joe") is None


def test_catch_all_cap_holds_under_concurrent_creation(database):
    """Several lookupd workers (threads here, processes or hosts in production) creating
    different first-mail aliases at once must not get past the hourly cap together."""
    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "cap.example", bob, catch_all="create", catch_all_max_per_hour=2)
    workers = 8
    barrier = threading.Barrier(workers)
    outcomes: list[str] = []

    def attempt(n: int) -> None:
        barrier.wait()
        try:
            with database.session() as s:
                domain = core.get_domain(s, "cap.example")
                created = core.catch_all_create(s, domain, f"site{n}.example")
                outcomes.append("created" if created is not None else "refused")
        except core.CatchAllDeferred:
            outcomes.append("deferred")
        except Exception as exc:  # a busy database: Postfix is told TEMP and retries
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with database.session() as s:
        made = s.scalar(
            select(func.count()).select_from(Alias).where(Alias.origin == AliasOrigin.CATCH_ALL)
        )
    assert made <= 2, outcomes
    assert outcomes.count("created") == made, outcomes


def test_replica_out_of_touch_longer_than_the_feed_is_kept_reloads(database):
    """A lookupd cut off from the database for longer than the change feed is kept (one
    day; another host prunes it) must not resume from its old position: the changes it
    never read are gone from the feed, so it has to read everything again."""
    class Clock:
        now = 1000.0

        def __call__(self) -> float:
            return self.now

    with database.session() as s:
        bob = core.create_user(s, "bob", "bob@real.example")
        core.create_domain(s, "d.example", bob)
        core.create_alias(s, "old.example@d.example", bob)
    clock = Clock()
    replica = Replica(database, clock=clock)
    replica.sync()
    # While this host is cut off: an alias is created and one burned, a day passes, and
    # another host's lookupd prunes the feed; then something else changes.
    with database.session() as s:
        bob = core.get_user(s, "bob")
        core.create_alias(s, "new.example@d.example", bob)
        core.set_state(s, core.get_alias(s, "old.example@d.example"), "burned")
        s.flush()
        s.execute(update(AliasChange).values(changed_at=utcnow() - dt.timedelta(days=2)))
    with database.session() as s:
        core.create_alias(s, "later.example@d.example", core.get_user(s, "bob"))
        assert core.prune_changes(s) >= 2
    clock.now += 2 * 86400
    replica.sync()
    assert replica.decide("later.example@d.example") == Decision.found("bob@real.example")
    assert replica.decide("new.example@d.example") == Decision.found("bob@real.example")
    assert replica.decide("old.example@d.example").outcome is LookupOutcome.NOTFOUND
