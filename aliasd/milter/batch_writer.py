"""A writer thread that commits queued items in batches, off the SMTP answer.

Items queued by the milter's threads gather for ``gather`` seconds after the first one
arrives (waking the writer for every message would cost a GIL hand-off each time) and
are written together, at most ``max_batch`` per call of ``write``. The queue is bounded
(``max_queue``): a stalled database cannot make it grow without end; past the bound new
items are dropped and reported to ``on_lost``. A failing batch is retried item by item,
so one bad item never takes the others with it. ``flush`` waits until everything queued
so far is written; ``close`` flushes, then stops the thread."""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class _Flush:
    done: threading.Event = field(default_factory=threading.Event)


_STOP = object()


class BatchWriter(Generic[T]):
    """One writer thread; ``write`` gets a non-empty list and raises on failure."""

    def __init__(self, write: Callable[[list[T]], object], *, name: str, max_queue: int,
                 max_batch: int, gather: float,
                 on_lost: Callable[[Sequence[T], str], None] | None = None) -> None:
        self.write = write
        self.max_batch = max_batch
        self.gather = gather
        self.on_lost = on_lost  # (items never written, why: "database", "queue full", ...)
        self._hurry = threading.Event()  # a flush or close is waiting: no gathering
        self._queue: queue.Queue = queue.Queue(max_queue)
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; never blocks. False when it was dropped (queue full, closed)."""
        if self._closed:
            self._lost([item], "writer closed")
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._lost([item], "writer behind (queue full)")
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued before this call is written (or given up)."""
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
            self._queue.put(_STOP, timeout=1.0)
        self._hurry.set()
        self._thread.join(timeout)

    # --- the thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if (item is not _STOP and not isinstance(item, _Flush) and self.gather > 0
                    and self._queue.qsize() < self.max_batch):
                self._hurry.wait(self.gather)
            self._hurry.clear()
            batch: list[T] = []
            markers: list[_Flush] = []
            stop = False
            while True:  # take all that is waiting, up to a batch
                if item is _STOP:
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

    def _write(self, batch: list[T]) -> None:
        try:
            self.write(batch)
            return
        except Exception as exc:  # noqa: BLE001 - judged below, item by item
            if len(batch) == 1:
                log.warning("%s: could not write an item: %s", self._thread.name, exc)
                self._lost(batch, "database")
                return
            log.warning("%s: could not write a batch of %d (%s); trying each alone",
                        self._thread.name, len(batch), exc)
        for item in batch:
            try:
                self.write([item])
            except Exception as exc:  # noqa: BLE001 - only this item is lost
                log.warning("%s: could not write an item: %s", self._thread.name, exc)
                self._lost([item], "database")

    def _lost(self, items: Sequence[T], why: str) -> None:
        if self.on_lost is None:
            return
        try:
            self.on_lost(items, why)
        except Exception:  # noqa: BLE001 - a metrics hook never stops the writer
            log.exception("loss hook of %s failed", self._thread.name)
