"""The ``srs_forward`` and ``srs_reverse`` maps (Sender Rewriting Scheme, the way postsrsd
does it), for these main.cf lines::

    sender_canonical_maps = socketmap:inet:HOST:PORT:srs_forward
    sender_canonical_classes = envelope_sender
    recipient_canonical_maps = socketmap:inet:HOST:PORT:srs_reverse
    recipient_canonical_classes = envelope_recipient, header_recipient

``srs_forward`` sees every envelope sender cleanup handles and answers the SRS address
for foreign senders; senders in the SRS domain, the managed alias domains and
``srs_exclude_domains`` get NOTFOUND (Postfix keeps them). The managed domains come from
a small in-memory copy of the ``domains`` table refreshed in the background; when it is
older than ``lookup_max_staleness`` the map answers TEMP, so cleanup defers the message
instead of rewriting (or not) on a guess.

``srs_reverse`` sees every recipient. It answers NOTFOUND at once for anything that is not
``SRS0=``/``SRS1=`` at the SRS domain, the original sender for a valid SRS address, and
NOTFOUND for a forged, altered or expired one: smtpd then finds the address in neither
canonical nor virtual_alias_maps and rejects it with 550 at RCPT. It needs no database.

The policy lives in :mod:`aliasd.core.srs`; these classes only adapt it to lookupd."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from aliasd.config import Settings
from aliasd.core.decision import Decision
from aliasd.core.srs import SrsConfig, SrsRewriter
from aliasd.db import Database
from aliasd.lookup.background import BackgroundRefresh
from aliasd.models import Domain

log = logging.getLogger("aliasd.lookup.srs")


class ManagedDomains:
    """The names of the managed alias domains, refreshed from the database. ``current()``
    returns them, or None when they are not known or too old to trust."""

    def __init__(
        self,
        database: Database,
        *,
        max_staleness: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.max_staleness = max_staleness
        self.clock = clock
        self.names: frozenset[str] | None = None
        self.loaded_at = float("-inf")

    def refresh(self) -> None:
        """Blocking: read the domain names (raises on database errors, keeping the old)."""
        started = self.clock()
        with self.database.engine.connect() as conn:
            names = frozenset(conn.scalars(select(Domain.name)))
        self.names = names
        self.loaded_at = started

    def current(self) -> frozenset[str] | None:
        if self.names is None or self.clock() - self.loaded_at > self.max_staleness:
            return None
        return self.names


class SrsForwardMap:
    name = "srs_forward"

    def __init__(
        self,
        rewriter: SrsRewriter,
        domains: ManagedDomains,
        *,
        sync_interval: float = 0.25,
    ) -> None:
        self.rewriter = rewriter
        self.domains = domains
        self.sync_interval = sync_interval
        self._refresher = BackgroundRefresh(
            domains.refresh, interval=sync_interval,
            what="read managed domains for SRS", log=log,
        )

    def lookup_fast(self, key: str) -> Decision:
        domain = self.rewriter.sender_domain(key)
        if domain is None:
            return Decision.notfound()
        # Decided by settings alone: no need for the domain list (nor a fresh one).
        if self.rewriter.is_local_sender_domain(domain, ()):
            return Decision.notfound()
        managed = self.domains.current()
        if managed is None:
            return Decision.temp("managed domains unknown: database unreachable")
        return self.rewriter.forward_decision(key, managed)

    async def lookup(self, key: str) -> Decision:
        return self.lookup_fast(key)

    async def start(self) -> None:
        await self._refresher.start()

    async def close(self) -> None:
        await self._refresher.close()

    async def refresh(self) -> None:
        """Read the managed domains now (tests and start-up)."""
        await self._refresher.run_once()


class SrsReverseMap:
    name = "srs_reverse"

    def __init__(self, rewriter: SrsRewriter) -> None:
        self.rewriter = rewriter

    def lookup_fast(self, key: str) -> Decision:
        decision, refused = self.rewriter.reverse_decision(key)
        if refused:
            log.info("SRS bounce address refused: %s", refused)
        return decision

    async def lookup(self, key: str) -> Decision:
        return self.lookup_fast(key)


def _rewriter(settings: Settings) -> SrsRewriter | None:
    config = SrsConfig.from_settings(settings)
    return SrsRewriter(config) if config is not None else None


def build_forward(settings: Settings, database: Database) -> SrsForwardMap | None:
    """The srs_forward map, or None when SRS is off (no ``srs_domain``)."""
    rewriter = _rewriter(settings)
    if rewriter is None:
        return None
    domains = ManagedDomains(database, max_staleness=settings.lookup_max_staleness)
    return SrsForwardMap(rewriter, domains, sync_interval=settings.lookup_sync_interval)


def build_reverse(settings: Settings, database: Database) -> SrsReverseMap | None:
    """The srs_reverse map, or None when SRS is off (no ``srs_domain``)."""
    rewriter = _rewriter(settings)
    return SrsReverseMap(rewriter) if rewriter is not None else None
