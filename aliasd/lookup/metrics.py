"""lookupd's Prometheus metrics. Maps are wrapped (:class:`MeasuredMap`), so the server
and the maps themselves stay unaware of them."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from aliasd.core.decision import Decision
from aliasd.lookup.maps import LookupMap

QUERIES = Counter(
    "aliasd_lookup_queries", "Lookups answered, by map and result (found, notfound, temp, perm).",
    ["map", "result"],
)
TEMP = Counter(
    "aliasd_lookup_temp_answers", "TEMP answers (Postfix defers the mail with 451), by map.",
    ["map"],
)
# In-memory answers take microseconds; a catch-all creation waits for the database.
LATENCY = Histogram(
    "aliasd_lookup_seconds", "Time to decide one lookup, by map.", ["map"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5, 5.0),
)


class MeasuredMap:
    """A LookupMap that counts and times the decisions of the map it wraps."""

    def __init__(self, inner: LookupMap) -> None:
        self.inner = inner
        self.name = inner.name
        self._children = {
            outcome: QUERIES.labels(self.name, outcome)
            for outcome in ("found", "notfound", "temp", "perm")
        }
        self._temp = TEMP.labels(self.name)
        self._latency = LATENCY.labels(self.name)
        if getattr(inner, "lookup_fast", None) is None:
            self.lookup_fast = None  # type: ignore[assignment]  # the server checks for None

    def _record(self, decision: Decision, started: float) -> Decision:
        self._latency.observe(time.perf_counter() - started)
        outcome = decision.outcome.value
        self._children[outcome].inc()
        if outcome == "temp":
            self._temp.inc()
        return decision

    def lookup_fast(self, key: str) -> Decision | None:
        started = time.perf_counter()
        decision = self.inner.lookup_fast(key)  # type: ignore[attr-defined]
        return None if decision is None else self._record(decision, started)

    async def lookup(self, key: str) -> Decision:
        started = time.perf_counter()
        try:
            decision = await self.inner.lookup(key)
        except Exception:
            self._record(Decision.temp("lookup failed"), started)  # the server answers TEMP
            raise
        return self._record(decision, started)

    async def start(self) -> None:
        start = getattr(self.inner, "start", None)
        if start is not None:
            await start()

    async def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            await close()

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


class SyncAgeCollector(Collector):
    """Seconds since each replica-backed map last knew its data current (the database
    sync); past lookup_max_staleness the map answers TEMP."""

    def __init__(self, maps: Mapping[str, LookupMap]) -> None:
        self.replicas = {
            name: m.replica for name, m in maps.items() if getattr(m, "replica", None) is not None
        }

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "aliasd_lookup_sync_age_seconds",
            "Seconds since the map's in-memory copy was last known current "
            "(+Inf before the first load).", labels=["map"],
        )
        for name, replica in self.replicas.items():
            family.add_metric([name], replica.clock() - replica.last_sync)
        yield family


def measured(maps: Mapping[str, LookupMap]) -> dict[str, LookupMap]:
    """Wrap every map and register the sync-age gauge (once per process)."""
    wrapped: dict[str, LookupMap] = {name: MeasuredMap(m) for name, m in maps.items()}
    REGISTRY.register(SyncAgeCollector(maps))
    return wrapped
