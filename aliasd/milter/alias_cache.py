"""The milter's alias lookup, remembered per address for a short while.

Each message looks its recipients up; a busy alias gets many messages a second, and
the query (with the connection around it) cost more than the rest of the lookup. An
address's answer, alias or not, is kept ``ttl`` seconds (2 s, like the block list and
the quarantine thresholds): an alias deleted, burned, moved to another owner or created
on the web or CLI applies to mail within that. Postfix's own lookup (lookupd) refuses a
deleted or burned alias at RCPT regardless; this only decides how the milter names and
records the message."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aliasd.core import events
from aliasd.db import Database
from aliasd.milter.recent import Recent

ALIAS_TTL = 2.0  # seconds an address's answer is remembered; 0: read every time
MAX_ADDRESSES = 4096  # addresses remembered at most; past it the memory starts over
_UNKNOWN = object()  # not remembered (None is remembered: "not an alias")


class AliasCache:
    """Thread-safe. A read that fails is not remembered and raises, as an uncached one
    would."""

    def __init__(self, ttl: float = ALIAS_TTL, max_addresses: int = MAX_ADDRESSES) -> None:
        self.ttl = ttl
        # address → its alias, or None when it is none
        self._known: Recent[str, events.AliasTarget | None] = Recent(ttl, max_addresses)

    def find(self, database: Database, recipients: Iterable[str],
             delimiter: str) -> list[events.AliasTarget]:  # fmt: skip
        """:func:`aliasd.core.events.find_aliases`, answered from memory when fresh."""
        candidates = events.alias_candidates(recipients, delimiter)
        if not candidates:
            return []
        found: dict[str, events.AliasTarget | None] = {}
        missing: list[str] = []
        for pair in candidates:
            for address in pair:
                known = self._known.get(address, _UNKNOWN)
                if known is not _UNKNOWN:
                    found[address] = known  # type: ignore[assignment]
                elif address not in found and address not in missing:
                    missing.append(address)
        if missing:
            read_at = time.monotonic()
            with database.reading() as connection:
                rows = events.alias_rows(connection, missing)
            for address in missing:
                found[address] = rows.get(address)
                self._known.put(address, found[address], read_at)
        return events.targets_for(candidates, found)

    def invalidate(self) -> None:
        self._known.forget()
