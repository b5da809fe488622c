"""Answers from the database remembered for a few seconds in one milter process.

Lock-free: a dict read or write is atomic under the interpreter lock, and two threads
that both miss simply both read. Nothing is ever stale for longer than ``ttl``."""

from __future__ import annotations

import time
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

MAX_ENTRIES = 4096  # remembered at most; past it the memory starts over


class Recent(Generic[K, V]):
    def __init__(self, ttl: float, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._kept: dict[K, tuple[V, float]] = {}

    def get(self, key: K, default: V | None = None) -> V | None:
        """The value put for ``key`` less than ``ttl`` seconds ago, else ``default``
        (a value that may itself be None is told apart with a sentinel default)."""
        kept = self._kept.get(key)
        if kept is None or time.monotonic() - kept[1] >= self.ttl:
            return default
        return kept[0]

    def put(self, key: K, value: V, read_at: float) -> None:
        """Remember ``value``, read from the database at ``read_at`` (time.monotonic():
        its age counts from before the read)."""
        if self.ttl <= 0:
            return
        if len(self._kept) >= self.max_entries:
            self._kept = {}
        self._kept[key] = (value, read_at)

    def forget(self) -> None:
        self._kept = {}
