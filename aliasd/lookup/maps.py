"""The interface every map served by lookupd implements. The server routes a socketmap
request ``name key`` to the map registered under ``name``; a tcp_table listener is bound to
one map. Maps return a Decision and never raise for bad keys (malformed → NOTFOUND);
an infrastructure failure (database down) must become Decision.temp(...)."""

from __future__ import annotations

from typing import Protocol

from aliasd.core.decision import Decision


class LookupMap(Protocol):
    name: str

    async def lookup(self, key: str) -> Decision: ...
