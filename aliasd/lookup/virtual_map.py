"""The ``virtual`` map: Postfix's virtual_alias_maps (and virtual_alias_domains) answered
from the in-memory replica, with catch-all creation as the only database write.

A background task keeps the replica in sync with the database; the replica itself says
TEMP when it could not sync for too long, so a database outage defers mail (451) instead
of bouncing it."""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from aliasd.config import Settings
from aliasd.core import aliases as core
from aliasd.core.decision import Decision, LookupOutcome
from aliasd.core.learn_mailbox import learn_address
from aliasd.core.replica import CatchAllRequest, Replica
from aliasd.db import Database
from aliasd.lookup.background import BackgroundRefresh
from aliasd.models import Domain

log = logging.getLogger("aliasd.lookup.virtual")

PRUNE_INTERVAL = 3600.0  # seconds between deletions of change-feed rows older than a day


class VirtualMap:
    name = "virtual"

    def __init__(self, replica: Replica, database: Database, *, sync_interval: float = 0.25):
        self.replica = replica
        self.database = database
        self.sync_interval = sync_interval
        self._inflight: dict[str, asyncio.Future[Decision]] = {}
        self._next_prune = time.monotonic() + 60
        self._refresher = BackgroundRefresh(
            self._sync, interval=sync_interval, what="sync aliases from the database", log=log
        )

    # --- LookupMap --------------------------------------------------------------------
    def _decide(self, key: str) -> Decision | CatchAllRequest:
        decision = self.replica.decide(key)
        if isinstance(decision, Decision) and decision.outcome != LookupOutcome.NOTFOUND:
            return decision
        # spam@ / ham@ of a managed domain reach the milter, which learns or refuses;
        # the address maps to itself, which ends Postfix's alias expansion.
        learn = learn_address(key)
        if learn is not None:
            domain = self.replica.decide(learn.domain)
            if isinstance(domain, Decision) and domain.outcome == LookupOutcome.FOUND:
                return Decision.found(key.lower())
        return decision

    def lookup_fast(self, key: str) -> Decision | None:
        decision = self._decide(key)
        return decision if isinstance(decision, Decision) else None

    async def lookup(self, key: str) -> Decision:
        decision = self._decide(key)
        if isinstance(decision, Decision):
            return decision
        # Concurrent first mails to one new address share one database write. The write
        # runs in its own task, so a client hanging up cannot cancel it for the others.
        task = self._inflight.get(decision.address)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._catch_all, decision))
            self._inflight[decision.address] = task
            task.add_done_callback(
                lambda done, address=decision.address: self._catch_all_done(address, done)
            )
        return await asyncio.shield(task)

    def _catch_all_done(self, address: str, task: asyncio.Future[Decision]) -> None:
        self._inflight.pop(address, None)
        if not task.cancelled():
            task.exception()  # retrieved: waiters may all be gone

    def _catch_all(self, request: CatchAllRequest) -> Decision:
        """Runs in a worker thread: create the alias (or learn why not) in the database."""
        for attempt in range(2):
            try:
                with self.database.session() as session:
                    domain = session.scalar(select(Domain).where(Domain.name == request.domain))
                    if domain is None:
                        return Decision.notfound()
                    alias = core.catch_all_create(session, domain, request.local)
                    if alias is None:
                        return Decision.notfound()
                    address, dests, state = alias.address, alias.destinations, alias.state
            except core.CatchAllDeferred as exc:
                return Decision.temp(str(exc))
            except core.AlreadyExists:
                if attempt == 0:
                    continue  # lost a race with another lookupd: read the winner's row
                return Decision.temp("catch-all alias is being created, try again")
            except core.AliasdError:
                return Decision.notfound()  # retired or otherwise refused by the rules
            except (SQLAlchemyError, OSError) as exc:
                log.warning("catch-all for %s failed: %s", request.address, exc)
                return Decision.temp("database unavailable")
            self.replica.apply_alias(address, dests, state)
            log.info("catch-all created %s -> %s", address, dests)
            return self.replica.decision_for(dests, state)
        return Decision.temp("catch-all failed")

    # --- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        await self._refresher.start()

    async def close(self) -> None:
        await self._refresher.close()

    async def wait_loaded(self, timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while not self.replica.loaded and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.replica.loaded

    def _sync(self) -> None:
        """One background step (in a worker thread): apply the change feed, and now and
        then prune it; the feed only needs to outlive the slowest reader."""
        stats = self.replica.sync()
        if stats.reloaded:
            log.info("replica loaded: %s", self.replica.stats())
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_INTERVAL
            self._prune()

    def _prune(self) -> None:
        with self.database.session() as session:
            removed = core.prune_changes(session)
        if removed:
            log.info("pruned %d old change-feed rows", removed)


def build(settings: Settings, database: Database) -> VirtualMap:
    replica = Replica(
        database,
        delimiter=settings.recipient_delimiter,
        max_staleness=settings.lookup_max_staleness,
        managed_reply=settings.lookup_managed_domain_reply,
        reply_domain=settings.reply_domain,
    )
    return VirtualMap(replica, database, sync_interval=settings.lookup_sync_interval)
