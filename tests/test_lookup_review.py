"""Defects found in review of the lookup path (replica, virtual map, catch-all), each
shown on SQLite and PostgreSQL with the real components."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

from sqlalchemy import func, select, update

from aliasd.core import aliases as core
from aliasd.core.decision import Decision, Outcome
from aliasd.core.replica import Replica
from aliasd.db import Database
from aliasd.lookup.virtual_map import VirtualMap
from aliasd.models import Alias, AliasChange, AliasOrigin, utcnow


def _map(database: Database) -> VirtualMap:
    replica = Replica(database)
    replica.sync()
    return VirtualMap(replica, database)


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
            assert (await vmap.lookup(key)).outcome is Outcome.NOTFOUND, key
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
    assert replica.decide("old.example@d.example").outcome is Outcome.NOTFOUND


def test_rules_added_on_another_host_reach_this_hosts_header_checks(database, settings, tmp_path):
    """Two hosts share the database; each has its own Postfix and header_checks file. A
    rule added on host A (its web app or milter writes A's file) must reach host B's file
    too, through B's running lookupd, which follows the block list anyway."""
    from pathlib import Path

    from aliasd.core import blocking
    from aliasd.lookup.access_map import SenderAccessMap
    from aliasd.postfix import header_checks as hc

    host_a = settings.with_overrides(blocklist_file=str(tmp_path / "a" / "header_checks"))
    host_b = settings.with_overrides(blocklist_file=str(tmp_path / "b" / "header_checks"))
    with database.session() as s:
        blocking.block_domain(s, host_a, "first.example")
    b_map = SenderAccessMap(database, settings=host_b)
    b_map.refresh()
    with database.session() as s:
        rule = blocking.block_domain(s, host_a, "massnews.gr")
    hc.sync_blocklist(host_a, database)
    b_map.refresh()  # host B's lookupd, next background step
    result = hc.wait_for_sync(host_b)
    assert isinstance(result, hc.WriteResult), result
    b_file = Path(host_b.effective_blocklist_file).read_text()
    assert f"{rule.pattern} REJECT" in b_file and "first\\.example" in b_file
    assert b_file == Path(host_a.effective_blocklist_file).read_text()
