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

import dataclasses
import logging
import time
from collections.abc import Callable

from sqlalchemy import select

from aliasd.config import Settings
from aliasd.core.decision import Decision
from aliasd.core.srs import SrsConfig, SrsRewriter, is_srs_local_part
from aliasd.db import Database
from aliasd.lookup.background import BackgroundRefresh
from aliasd.mailauth import srs_secret
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
        self.primary: str | None = None  # the first domain added: the default SRS domain
        self.loaded_at = float("-inf")

    def refresh(self) -> None:
        """Blocking: read the domain names (raises on database errors, keeping the old)."""
        started = self.clock()
        with self.database.engine.connect() as conn:
            ordered = list(conn.scalars(select(Domain.name).order_by(Domain.id)))
        self.primary = ordered[0] if ordered else None
        self.names = frozenset(ordered)
        self.loaded_at = started

    def current(self) -> frozenset[str] | None:
        if self.names is None or self.clock() - self.loaded_at > self.max_staleness:
            return None
        return self.names


class DomainRewriters:
    """SRS with no ``srs_domain`` configured: each managed domain is an SRS domain (a
    bounce address at any of them reverses), and forwarded mail is rewritten into the
    first managed domain (Postfix's canonical maps see the sender only, not which alias
    the message is for)."""

    def __init__(self, config: SrsConfig) -> None:
        self.config = config
        self._by_domain: dict[str, SrsRewriter] = {}

    def __call__(self, domain: str) -> SrsRewriter:
        rewriter = self._by_domain.get(domain)
        if rewriter is None:
            rewriter = SrsRewriter(dataclasses.replace(self.config, domain=domain))
            self._by_domain[domain] = rewriter
        return rewriter


class SrsForwardMap:
    name = "srs_forward"

    def __init__(
        self,
        rewriter: SrsRewriter | None,
        domains: ManagedDomains,
        *,
        sync_interval: float = 0.25,
        per_domain: DomainRewriters | None = None,
    ) -> None:
        self.rewriter = rewriter
        self.per_domain = per_domain
        self.domains = domains
        self.sync_interval = sync_interval
        self._refresher = BackgroundRefresh(
            domains.refresh, interval=sync_interval,
            what="read managed domains for SRS", log=log,
        )

    def lookup_fast(self, key: str) -> Decision:
        if self.rewriter is None:
            return self._lookup_default_domain(key)
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

    def _lookup_default_domain(self, key: str) -> Decision:
        assert self.per_domain is not None
        managed = self.domains.current()
        if managed is None:
            return Decision.temp("managed domains unknown: database unreachable")
        if self.domains.primary is None:
            return Decision.notfound()  # no domain yet: nothing is forwarded
        return self.per_domain(self.domains.primary).forward_decision(key, managed)

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

    def __init__(self, rewriter: SrsRewriter | None, *,
                 per_domain: DomainRewriters | None = None) -> None:  # fmt: skip
        self.rewriter = rewriter
        self.per_domain = per_domain

    def lookup_fast(self, key: str) -> Decision:
        rewriter = self.rewriter
        if rewriter is None:
            assert self.per_domain is not None
            # Only SRS local parts are reversed, and only with a hash signed by our
            # secret, so any domain of ours can be asked without a domain list.
            domain = key.rpartition("@")[2].strip().rstrip(">").lower()
            if not domain or not is_srs_local_part(key.strip().lstrip("<")):
                return Decision.notfound()
            rewriter = self.per_domain(domain)
        decision, refused = rewriter.reverse_decision(key)
        if refused:
            log.info("SRS bounce address refused: %s", refused)
        return decision

    async def lookup(self, key: str) -> Decision:
        return self.lookup_fast(key)


def _rewriters(settings: Settings) -> tuple[SrsRewriter | None, DomainRewriters | None]:
    """(a rewriter for the configured ``srs_domain``, or per-domain rewriters), both
    None when SRS is switched off."""
    if not settings.srs_enabled:
        return None, None
    secrets = srs_secret.read_secrets(settings)
    if not secrets:
        srs_secret.ensure_secret(settings)
        secrets = srs_secret.read_secrets(settings)
    config = SrsConfig.from_settings(settings, secrets=secrets)
    if config.domain:
        return SrsRewriter(config), None
    return None, DomainRewriters(config)


def build_forward(settings: Settings, database: Database) -> SrsForwardMap | None:
    """The srs_forward map, or None when SRS is off (``srs_enabled = false``)."""
    rewriter, per_domain = _rewriters(settings)
    if rewriter is None and per_domain is None:
        return None
    domains = ManagedDomains(database, max_staleness=settings.lookup_max_staleness)
    return SrsForwardMap(rewriter, domains, sync_interval=settings.lookup_sync_interval,
                         per_domain=per_domain)  # fmt: skip


def build_reverse(settings: Settings, database: Database) -> SrsReverseMap | None:
    """The srs_reverse map, or None when SRS is off (``srs_enabled = false``)."""
    rewriter, per_domain = _rewriters(settings)
    if rewriter is None and per_domain is None:
        return None
    return SrsReverseMap(rewriter, per_domain=per_domain)
