"""An in-memory replica of domains and aliases, and the pure rules that answer Postfix's
``virtual_alias_maps`` queries from it.

Why a replica: Postfix asks for every recipient (and again for every destination); a
dict lookup answers in microseconds where a database round trip costs tens or hundreds.
The replica follows the ``alias_changes`` feed (one row per changed address, NULL meaning
"reload everything"), so a change made anywhere, by any host sharing the database, is
seen within one poll interval.

PostgreSQL hands out sequence values at insert time but transactions commit in any
order, so a row with a smaller ``seq`` can appear after a larger one was read. Numbers
missing below the highest seq seen are kept as *gaps* and re-checked for ``gap_ttl``
seconds (a gap that never fills was a rolled-back transaction). Applying a change means
re-reading the alias's current row, so seeing a change twice is harmless.

Memory: one dict entry per alias, address → shared Decision object (destinations are
interned: most aliases of one owner forward to the same mailbox), so a million aliases
cost a few hundred bytes each at most."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from aliasd.core import reverse_aliases
from aliasd.core.addresses import AddressError, normalize_domain, parse_address
from aliasd.core.aliases import is_reserved_local
from aliasd.core.catch_all_gate import Gate, compile_gate
from aliasd.core.decision import Decision, LookupOutcome
from aliasd.db import Database
from aliasd.models import Alias, AliasChange, AliasState, CatchAllPolicy, Domain, User

# NOTFOUND decisions that remember why (the reason is not sent to Postfix).
_INACTIVE = {
    AliasState.DISABLED.value: Decision(LookupOutcome.NOTFOUND, "disabled"),
    AliasState.BURNED.value: Decision(LookupOutcome.NOTFOUND, "burned"),
    AliasState.DELETED.value: Decision(LookupOutcome.NOTFOUND, "deleted"),
}
_NOTFOUND = Decision.notfound()
# SRS-rewritten bounces (the SRS feature answers them) and reverse aliases (in the table
# or refused): never minted by a catch-all.
_FETCH_CHUNK = 500
_MAX_GAP_SPAN = 1000
# Without a successful sync for this long, read everything again instead of following
# the feed: rows we never read may have been pruned meanwhile (kept for a day).
RELOAD_AFTER = 3600.0


@dataclass(frozen=True, slots=True)
class DomainInfo:
    id: int
    name: str
    catch_all: str
    gate: Gate | None  # the catch-all regex gate, when the domain has one
    max_per_hour: int | None
    owner_mailbox: str


@dataclass(frozen=True, slots=True)
class CatchAllRequest:
    """``decide`` cannot answer from memory: the domain's catch-all may create this alias
    (a database write). The caller runs :func:`aliasd.core.aliases.catch_all_create`."""

    domain: str
    local: str
    address: str


@dataclass
class SyncStats:
    changes: int = 0
    reloaded: bool = False


class Replica:
    def __init__(
        self,
        database: Database,
        *,
        delimiter: str = "+",
        max_staleness: float = 5.0,
        managed_reply: str = "managed",
        reply_domain: str = "",
        gap_ttl: float = 60.0,
        max_gaps: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.database = database
        self.delimiter = delimiter
        self.max_staleness = max_staleness
        self.managed = Decision.found(managed_reply or "managed")
        # Reverse aliases may live on a domain of their own, which no alias uses.
        self.reply_domain = normalize_domain(reply_domain) if reply_domain else ""
        self.gap_ttl = gap_ttl
        self.max_gaps = max_gaps
        self.clock = clock
        self.aliases: dict[str, Decision] = {}
        self.domains: dict[str, DomainInfo] = {}
        self.mailboxes: frozenset[str] = frozenset()  # users' own mailboxes: never minted
        self._pool: dict[str, Decision] = {}
        self.loaded = False
        self.last_sync = float("-inf")  # clock() when the data was last known current
        self.seq = 0  # highest change seq applied
        self.gaps: dict[int, float] = {}  # missing seq → give up re-checking after
        self._lock = threading.Lock()  # one sync at a time (loop thread vs. callers)

    # --- answering ------------------------------------------------------------------
    def fresh(self) -> bool:
        return self.loaded and self.clock() - self.last_sync <= self.max_staleness

    def decide(self, key: str) -> Decision | CatchAllRequest:
        """The answer for one ``virtual_alias_maps`` key, from memory."""
        if not self.loaded:
            return Decision.temp("alias data not loaded yet")
        age = self.clock() - self.last_sync
        if age > self.max_staleness:
            # The database may be down, or this process was not scheduled (stopped,
            # swapped out): either way the copy is too old to refuse anyone with.
            return Decision.temp(f"alias data is stale: last read from the database {age:.0f} s ago")
        lowered = key.lower()
        hit = self.aliases.get(lowered)  # exact address, the common case
        if hit is not None:
            return hit
        if "@" not in lowered:  # virtual_alias_domains asks for the bare domain
            domain = self.domains.get(lowered)
            if domain is None:
                try:
                    domain = self.domains.get(normalize_domain(key))
                except AddressError:
                    return _NOTFOUND
            if domain is not None or (self.reply_domain and lowered == self.reply_domain):
                return self.managed
            return _NOTFOUND
        try:
            parsed = parse_address(key, self.delimiter)
        except AddressError:
            return _NOTFOUND  # malformed keys are simply not ours
        domain = self.domains.get(parsed.domain)
        if domain is None:
            return _NOTFOUND  # destinations Postfix re-queries end here, fast
        address = f"{parsed.local}@{parsed.domain}"
        hit = self.aliases.get(address)
        if hit is not None:
            return hit
        if domain.catch_all != CatchAllPolicy.CREATE.value:
            return _NOTFOUND
        if is_reserved_local(parsed.local):
            return _NOTFOUND
        if address in self.mailboxes or (
            parsed.extension is not None
            and f"{parsed.local}{self.delimiter}{parsed.extension}@{parsed.domain}"
            in self.mailboxes
        ):
            # Postfix looks each destination up again: a user's mailbox on a catch-all
            # domain must not become an alias of itself (NOTFOUND lets later maps route it).
            return _NOTFOUND
        if domain.gate is not None and not domain.gate(parsed.local):
            return _NOTFOUND
        return CatchAllRequest(domain.name, parsed.local, address)

    def decision_for(self, destinations: str, state: str) -> Decision:
        if state == AliasState.ACTIVE.value:
            shared = self._pool.get(destinations)
            if shared is None:
                shared = self._pool[destinations] = Decision.found(destinations)
            return shared
        return _INACTIVE.get(state, _NOTFOUND)

    def apply_alias(self, address: str, destinations: str | None, state: str | None) -> None:
        """Record one alias's current row (None: the row is gone)."""
        if destinations is None or state is None:
            self.aliases.pop(address, None)
        else:
            self.aliases[address] = self.decision_for(destinations, state)

    # --- syncing ----------------------------------------------------------------------
    def sync(self) -> SyncStats:
        """Load everything the first time, then apply new changes. Blocking (database
        I/O); raises on database errors, leaving the replica as it was."""
        with self._lock:
            started = self.clock()
            if not self.loaded or started - self.last_sync > RELOAD_AFTER:
                self._reload()
                return SyncStats(reloaded=True)
            stats = self._apply_changes()
            if not stats.reloaded:
                self.last_sync = started
            return stats

    def reload(self) -> None:
        with self._lock:
            self._reload()

    def _apply_changes(self) -> SyncStats:
        now = self.clock()
        if not self.gaps:
            wanted = AliasChange.seq > self.seq
        elif len(self.gaps) <= 500:
            wanted = or_(AliasChange.seq > self.seq, AliasChange.seq.in_(list(self.gaps)))
        else:
            wanted = AliasChange.seq >= min(self.gaps)
        with self.database.engine.connect() as conn:
            top = conn.scalar(select(func.max(AliasChange.seq)))
            rows = conn.execute(
                select(AliasChange.seq, AliasChange.address).where(wanted).order_by(AliasChange.seq)
            ).all()
        if top is None:
            # Feed pruned empty: nothing new; SQLite will number the next row 1 again.
            self.seq = 0
            self.gaps.clear()
            return SyncStats()
        if top < self.seq:
            # The feed went backwards (emptied and refilled, sequence reset): start over.
            self._reload()
            return SyncStats(reloaded=True)
        addresses: set[str] = set()
        reload_all = False
        count = 0
        expected = self.seq + 1
        for seq, address in rows:
            if seq > self.seq:
                # Only numbers close below a new row can belong to transactions still in
                # flight; a big jump (sequence cache, feed reset) is not a gap.
                for missing in range(max(expected, seq - _MAX_GAP_SPAN), seq):
                    self.gaps[missing] = now + self.gap_ttl
                expected = seq + 1
                self.seq = seq
            elif self.gaps.pop(seq, None) is None:
                continue  # seen before
            count += 1
            if address is None:
                reload_all = True
            else:
                addresses.add(address)
        for seq, deadline in list(self.gaps.items()):
            if deadline < now:
                del self.gaps[seq]
        if len(self.gaps) > self.max_gaps:
            for seq in sorted(self.gaps)[: len(self.gaps) - self.max_gaps]:
                del self.gaps[seq]
        if reload_all:
            self._reload()
            return SyncStats(changes=count, reloaded=True)
        if addresses:
            self._refresh(addresses)
        return SyncStats(changes=count)

    def _refresh(self, addresses: Iterable[str]) -> None:
        pending = sorted(addresses)
        with self.database.engine.connect() as conn:
            for i in range(0, len(pending), _FETCH_CHUNK):
                chunk = pending[i : i + _FETCH_CHUNK]
                found = {
                    address: (dests, state)
                    for address, dests, state in conn.execute(
                        select(Alias.address, Alias.destinations, Alias.state).where(
                            Alias.address.in_(chunk)
                        )
                    )
                }
                # Reverse aliases at these addresses, and those of changed aliases
                # (an alias disabled or re-pointed takes its reverse aliases along).
                reverse = {
                    address: (dests, state)
                    for address, dests, state in reverse_aliases.lookup_rows(conn, chunk)
                }
                for address in chunk:
                    dests, state = found.get(address) or reverse.get(address) or (None, None)
                    self.apply_alias(address, dests, state)
                for address, (dests, state) in reverse.items():
                    self.apply_alias(address, dests, state)

    def _reload(self) -> None:
        """Read everything. The feed position is read first, so a change committed while
        we load is either in what we load or comes after that position (or in a gap)."""
        started = self.clock()
        with self.database.engine.connect() as conn:
            top = conn.scalar(select(func.max(AliasChange.seq))) or 0
            recent = set(
                conn.scalars(
                    select(AliasChange.seq).where(AliasChange.seq > top - _MAX_GAP_SPAN)
                )
            )
            domains: dict[str, DomainInfo] = {}
            for d_id, name, policy, regex, cap, mailbox in conn.execute(
                select(
                    Domain.id,
                    Domain.name,
                    Domain.catch_all,
                    Domain.catch_all_regex,
                    Domain.catch_all_max_per_hour,
                    User.mailbox,
                ).join(User, Domain.owner_id == User.id)
            ):
                gate = compile_gate(regex) if regex else None
                domains[name] = DomainInfo(d_id, name, policy, gate, cap, mailbox)
            mailboxes = frozenset(conn.scalars(select(User.mailbox)))
            aliases: dict[str, Decision] = {}
            pool: dict[str, Decision] = {}
            self._pool = pool
            result = conn.execution_options(stream_results=True, yield_per=20_000).execute(
                select(Alias.address, Alias.destinations, Alias.state)
            )
            value = self.decision_for
            for address, dests, state in reverse_aliases.lookup_rows(conn):
                aliases[address] = value(dests, state)
            for n, (address, dests, state) in enumerate(result, 1):
                aliases[address] = value(dests, state)
                if n % 50_000 == 0 and self.loaded:
                    # Streaming rows proves the database answers; keep serving the old
                    # data meanwhile instead of declaring it stale during a long reload.
                    self.last_sync = self.clock()
        now = self.clock()
        self.gaps = {
            seq: now + self.gap_ttl
            for seq in range(max(1, top - _MAX_GAP_SPAN + 1), top + 1)
            if seq not in recent
        }
        self.seq = top
        self.domains = domains
        self.mailboxes = mailboxes
        self.aliases = aliases
        self.loaded = True
        self.last_sync = started

    def stats(self) -> dict[str, int | float | bool]:
        return {
            "loaded": self.loaded,
            "aliases": len(self.aliases),
            "domains": len(self.domains),
            "seq": self.seq,
            "gaps": len(self.gaps),
            "age": self.clock() - self.last_sync if self.loaded else -1.0,
        }
