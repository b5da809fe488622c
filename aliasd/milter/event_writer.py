"""Recording mail events off the SMTP answer: the milter queues what a message did and a
writer thread commits the queue in batches, one transaction per batch.

What a crash can lose: the events still in the queue, never mail (the verdict was given
and applied before the events were queued). The writer wakes when a record arrives, lets
more gather for ``GATHER_SECONDS`` (50 ms) and commits them together, so the queue holds
about the last 50 ms of messages plus one transaction's time; it is bounded (``max_queue`` messages) so a stalled database
cannot make it grow without end: past the bound new records are dropped, counted and
logged. ``flush`` waits until everything queued so far is committed; ``close`` flushes
(the milter calls it on SIGTERM).

After a batch is committed, the auto-block hook judges its spam events, each in its own
transaction as before (a failing policy never loses the events)."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy.exc import OperationalError

from aliasd.config import Settings
from aliasd.core import attribution_store, events, reverse_aliases, sender_blocks
from aliasd.db import Database

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
                for record in records:
                    for targets, outcome in record.parts:
                        new = events.record_message(session, targets, record.facts, outcome,
                                                    policy)
                        ids += new
                        if outcome.is_spam:
                            spam_ids += new
                    if record.block_hits:
                        sender_blocks.record_hits(session, list(record.block_hits))
                    if record.forwarded_reverse_id is not None:
                        reverse_aliases.record_forwarded(session, record.forwarded_reverse_id)
            break
        except OperationalError:
            if attempt == attempts:
                raise
            time.sleep(0.05 * attempt)
    if spam_ids:
        events.run_spam_hook(database, settings, spam_ids)
    return ids


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


class EventWriter:
    """The writer thread of one milter process."""

    def __init__(self, database: Database, settings: Settings, *, max_queue: int = MAX_QUEUE,
                 max_batch: int = MAX_BATCH, gather: float = GATHER_SECONDS,
                 on_lost: Callable[[int], None] | None = None) -> None:
        self.database = database
        self.settings = settings
        self.max_batch = max_batch
        self.gather = gather
        self._hurry = threading.Event()  # a flush or close is waiting: no gathering
        self.on_lost = on_lost  # called with the number of events that never reached the db
        self._queue: queue.Queue[Record | _Flush | None] = queue.Queue(max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="aliasd-events", daemon=True)
        self._thread.start()

    def submit(self, record: Record) -> bool:
        """Queue ``record``; never blocks. False when it was dropped (queue full, closed)."""
        if self._closed:
            self._lost([record], "writer closed")
            return False
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._lost([record], "writer behind (queue full)")
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is committed (or given up)."""
        if not self._thread.is_alive():
            return self._queue.empty()
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        self._hurry.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=1.0)
        self._hurry.set()
        self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if (isinstance(item, Record) and self.gather > 0
                    and self._queue.qsize() < self.max_batch):
                self._hurry.wait(self.gather)
            self._hurry.clear()
            batch: list[Record] = []
            markers: list[_Flush] = []
            stop = False
            while True:  # take all that is waiting, up to a batch
                if item is None:
                    stop = True
                elif isinstance(item, _Flush):
                    markers.append(item)
                else:
                    batch.append(item)
                if len(batch) >= self.max_batch:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._write(batch)
            for marker in markers:
                marker.done.set()
            if stop:
                return

    def _write(self, batch: list[Record]) -> None:
        try:
            write_records(self.database, self.settings, batch)
            return
        except Exception as exc:  # noqa: BLE001 - judged below, record by record
            if len(batch) == 1:
                log.warning("could not record mail events for queue id %s: %s",
                            batch[0].queue_id, exc)
                self._lost(batch, "database")
                return
            log.warning("could not record a batch of %d messages (%s); trying each alone",
                        len(batch), exc)
        for record in batch:  # one bad record must not take the others with it
            try:
                write_records(self.database, self.settings, [record])
            except Exception as exc:  # noqa: BLE001 - the verdict stood; only statistics
                log.warning("could not record mail events for queue id %s: %s",
                            record.queue_id, exc)
                self._lost([record], "database")

    def _lost(self, records: Sequence[Record], why: str) -> None:
        count = sum(r.event_count for r in records)
        if why != "database":
            log.warning("%d mail event(s) not recorded: %s", count, why)
        if self.on_lost is not None and count:
            try:
                self.on_lost(count)
            except Exception:  # noqa: BLE001 - a metrics hook never stops the writer
                log.exception("event loss hook failed")
