"""The background refresh every in-memory map runs: a blocking step (a database read) in
a worker thread every ``interval`` seconds until closed. A failing step is logged at most
every 10 s and retried; the map's own staleness check turns a long outage into TEMP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

ERROR_LOG_INTERVAL = 10.0


class BackgroundRefresh:
    def __init__(
        self, step: Callable[[], object], *, interval: float, what: str, log: logging.Logger
    ) -> None:
        self.step = step
        self.interval = interval
        self.what = what  # "sync aliases from the database", for the warning
        self.log = log
        self._task: asyncio.Task | None = None
        self._last_error_log = float("-inf")

    async def run_once(self) -> None:
        await asyncio.to_thread(self.step)

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # database down or slow: keep trying, go stale
                now = time.monotonic()
                if now - self._last_error_log > ERROR_LOG_INTERVAL:
                    self._last_error_log = now
                    self.log.warning("cannot %s: %s", self.what, exc)
            await asyncio.sleep(self.interval)
