"""The ``sender_access`` map: aliasd's sender blocks as an access(5) table for

    smtpd_sender_restrictions = check_sender_access socketmap:inet:HOST:PORT:sender_access

which refuses a blocked sender at MAIL FROM, before any data is sent (earlier and cheaper
than header_checks, which only sees the message after DATA).

Postfix asks a socketmap table for the full sender address only (no ``domain`` or ``user@``
partial keys, as for other pattern-like tables), so the map derives the domain itself and
checks it and its parent domains. Answers: ``REJECT <the rule's text>`` for a blocked
domain, NOTFOUND otherwise (also for ``<>`` and malformed keys), TEMP when the block list
cannot be read from the database fresh enough: smtpd then answers 451 and the sender
retries; nothing is lost and nothing blocked slips through on a guess.

The blocked domains live in memory, refreshed in the background every
``lookup_sync_interval``; hits are counted in memory and added to the rules on refresh."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from aliasd.config import Settings
from aliasd.core import blocking
from aliasd.core.addresses import AddressError, normalize_domain
from aliasd.core.block_decision import BlockList, Sender, blocked_for, load_blocklist
from aliasd.core.decision import Decision
from aliasd.db import Database
from aliasd.lookup.background import BackgroundRefresh
from aliasd.postfix.publisher import request_publish

log = logging.getLogger("aliasd.lookup.access")


class SenderAccessMap:
    name = "sender_access"

    def __init__(
        self,
        database: Database,
        *,
        sync_interval: float = 0.25,
        max_staleness: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        settings: Settings | None = None,
    ) -> None:
        self.database = database
        # With settings, a change of the enabled rules (made by any process or host)
        # rewrites this host's header_checks file: the file is per host, the rules shared.
        self.settings = settings
        self._rule_lines: tuple | None = None
        self.sync_interval = sync_interval
        self.max_staleness = max_staleness
        self.clock = clock
        # Server-wide rules only: at MAIL FROM there is no recipient yet, and per-user
        # blocks are the milter's to enforce for that user's mail alone.
        self.blocked: BlockList | None = None
        self.loaded_at = float("-inf")
        self._hits: dict[int, int] = {}
        self._hits_lock = threading.Lock()
        self._refresher = BackgroundRefresh(
            self.refresh, interval=sync_interval, what="read the block list", log=log
        )

    # --- the in-memory copy -------------------------------------------------------------
    def refresh(self) -> None:
        """Blocking: flush counted hits and reload the blocked domains (raises on database
        errors, keeping the old copy, which then goes stale)."""
        started = self.clock()
        with self._hits_lock:
            hits, self._hits = self._hits, {}
        try:
            with self.database.session() as session:
                if hits:
                    blocking.record_hits(session, hits)
                rules = blocking.list_rules(session, enabled_only=True)
                blocked = load_blocklist(session, server_only=True, rules=rules)
                lines = tuple(blocking.rule_lines(rules))
        except Exception:
            with self._hits_lock:  # count them next time
                for rule_id, count in hits.items():
                    self._hits[rule_id] = self._hits.get(rule_id, 0) + count
            raise
        self.blocked = blocked
        self.loaded_at = started
        if self.settings is not None and self._rule_lines not in (None, lines):
            # Rules changed by another process or host: this host's table follows.
            request_publish(self.settings, self.database)  # checked, atomic; logs failures
        self._rule_lines = lines

    def current(self) -> BlockList | None:
        if self.blocked is None or self.clock() - self.loaded_at > self.max_staleness:
            return None
        return self.blocked

    # --- lookups ------------------------------------------------------------------------
    @staticmethod
    def key_domain(key: str) -> str | None:
        """The domain of ``user@domain``, ``@domain``, ``<user@domain>`` or a bare domain;
        None for the null sender and anything malformed."""
        raw = key.strip()
        if raw.startswith("<") and raw.endswith(">"):
            raw = raw[1:-1]
        if not raw:
            return None
        domain = raw.rpartition("@")[2]
        if not domain or domain.startswith("["):  # address literals are not domains
            return None
        try:
            return normalize_domain(domain)
        except AddressError:
            return None

    def lookup_fast(self, key: str) -> Decision:
        domain = self.key_domain(key)
        if domain is None:
            return Decision.notfound()
        blocked = self.current()
        if blocked is None:
            return Decision.temp("block list unknown: database unreachable")
        hit = blocked_for(blocked, Sender.of_domain(domain))
        if hit is None:
            return Decision.notfound()
        with self._hits_lock:
            self._hits[hit.id] = self._hits.get(hit.id, 0) + 1
        return Decision.found(f"REJECT {hit.reject_text or f'blocked id={hit.id}'}")

    async def lookup(self, key: str) -> Decision:
        return self.lookup_fast(key)

    # --- lifecycle (called by the lookup server) ------------------------------------------
    async def start(self) -> None:
        with contextlib.suppress(Exception):
            await self._refresher.run_once()
        await self._refresher.start()

    async def close(self) -> None:
        await self._refresher.close()
        with contextlib.suppress(Exception):
            await self._refresher.run_once()  # keep the last hits


def build(settings: Settings, database: Database) -> SenderAccessMap:
    return SenderAccessMap(
        database,
        sync_interval=max(settings.lookup_sync_interval, 0.5),
        max_staleness=settings.lookup_max_staleness,
        settings=settings,
    )
