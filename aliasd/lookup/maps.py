"""The interface every map served by lookupd implements. The server routes a socketmap
request ``name key`` to the map registered under ``name``; a tcp_table listener is bound to
one map. Maps return a Decision and never raise for bad keys (malformed → NOTFOUND);
an infrastructure failure (database down) must become Decision.temp(...).

Optional extras the server uses when a map has them:
- ``lookup_fast(key) -> Decision | None``: answer from memory without awaiting; None
  means "needs I/O", and the server then awaits ``lookup``. Saves a task per request.
- ``async start()`` / ``async close()``: called once when lookupd starts / stops (e.g.
  to begin and end a background sync)."""

from __future__ import annotations

from typing import Protocol

from aliasd.core.decision import Decision


class LookupMap(Protocol):
    name: str

    async def lookup(self, key: str) -> Decision: ...
