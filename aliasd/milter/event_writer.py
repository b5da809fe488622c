"""Recording mail events off the SMTP answer: the milter queues what a message did and a
writer thread commits the queue in batches, one transaction per batch.

What a crash can lose: the events still in the queue, never mail (the verdict was given
and applied before the events were queued). The writer wakes when a record arrives, lets
more gather for ``GATHER_SECONDS`` (50 ms) and commits them together, so the queue holds
about the last 50 ms of messages plus one transaction's time; it is bounded (``MAX_QUEUE``
messages): past the bound new records are dropped, counted and logged (the thread and its
queue: :class:`aliasd.milter.batch_writer.BatchWriter`). ``close`` flushes (the milter
calls it on SIGTERM).

After a batch is committed, the auto-block hook judges its spam events, each in its own
transaction as before (a failing policy never loses the events)."""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import OperationalError

from aliasd.config import Settings
from aliasd.core import attribution_store, events, leaks, reverse_aliases, sender_blocks
from aliasd.db import Database
from aliasd.milter.batch_writer import BatchWriter

log = logging.getLogger(__name__)

MAX_QUEUE = 2000  # messages waiting; past it new records are dropped (and counted)
MAX_BATCH = 200  # messages per transaction
# How long the writer lets records gather before a commit: waking it for every message
# costs the milter's threads a GIL hand-off each time, and a bigger batch is cheaper.
GATHER_SECONDS = 0.05


@dataclass(frozen=True)
class Record:
    """What one message leaves in the database: events for some aliases with one outcome
    (a message can carry several, e.g. aliases whose owner blocked the sender), and the
    personal blocks it hit."""

    parts: tuple[tuple[tuple[events.AliasTarget, ...], events.AppliedVerdict], ...]
    facts: events.MessageFacts
    block_hits: tuple[int, ...] = ()
    queue_id: str | None = None
    forwarded_reverse_id: int | None = None  # the reverse alias put in the forwarded copy

    @property
    def event_count(self) -> int:
        return sum(len(targets) for targets, _ in self.parts)


def write_records(database: Database, settings: Settings, records: Sequence[Record],
                  *, attempts: int = 3) -> list[int]:
    """Write ``records`` in one transaction (retried when SQLite is busy or PostgreSQL
    reports a deadlock), then run the auto-block hook on the spam events. Returns the
    new event ids."""
    policy = attribution_store.AttributionPolicy.from_settings(settings)
    for attempt in range(1, attempts + 1):
        try:
            spam_ids: list[int] = []
            ids: list[int] = []
            with database.session() as session:
                stale_summaries: set[tuple[int, str]] = set()
                for record in records:
                    for targets, outcome in record.parts:
                        new = events.record_message(session, targets, record.facts, outcome,
                                                    policy, stale_summaries)
                        ids += new
                        if outcome.is_spam:
                            spam_ids += new
                    if record.block_hits:
                        sender_blocks.record_hits(session, list(record.block_hits))
                forwarded = collections.Counter(r.forwarded_reverse_id for r in records
                                                if r.forwarded_reverse_id is not None)
                for reverse_id in sorted(forwarded):  # a fixed order of row locks
                    reverse_aliases.record_forwarded(session, reverse_id, forwarded[reverse_id])
                for owner_id, site in sorted(stale_summaries):  # once per site and batch
                    leaks.refresh_summary(session.connection(), owner_id, site)
            break
        except OperationalError:
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    if spam_ids:
        events.run_spam_hook(database, settings, spam_ids)
    return ids


class EventWriter(BatchWriter[Record]):
    """The event writer thread of one milter process."""

    def __init__(self, database: Database, settings: Settings, *, max_queue: int = MAX_QUEUE,
                 max_batch: int = MAX_BATCH, gather: float = GATHER_SECONDS,
                 on_lost: Callable[[int], None] | None = None) -> None:
        self.database = database
        self.settings = settings
        self.on_events_lost = on_lost  # called with the number of events never written
        super().__init__(self._write_records, name="aliasd-events", max_queue=max_queue,
                         max_batch=max_batch, gather=gather, on_lost=self._records_lost)

    def _write_records(self, records: list[Record]) -> None:
        write_records(self.database, self.settings, records)

    def _records_lost(self, records: Sequence[Record], why: str) -> None:
        count = sum(r.event_count for r in records)
        queue_ids = ", ".join(str(r.queue_id) for r in records[:5])
        log.warning("%d mail event(s) not recorded (queue id %s): %s", count, queue_ids, why)
        if self.on_events_lost is not None and count:
            self.on_events_lost(count)
