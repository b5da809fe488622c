"""File descriptors for a server with many clients: the connection cap the process's
limit allows, raising the soft limit at start, and rate-limited logging of exhaustion."""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import time

log = logging.getLogger("aliasd.lookup")

# Descriptors kept back from the connection cap: listeners, database connections, logs.
RESERVED_DESCRIPTORS = 64


DESCRIPTOR_ERRORS = {errno.EMFILE, errno.ENFILE}


def default_max_connections() -> int:
    """What the process's descriptor limit allows, less the ones kept back."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft - RESERVED_DESCRIPTORS)


def raise_descriptor_limit() -> int:
    """Raise the soft descriptor limit to the hard one (what daemons do at start);
    returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class RateLimitedLog:
    """At most one log line per ``interval`` seconds; the rest are counted in the next."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.last = -interval
        self.suppressed = 0

    def _emit(self, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.last < self.interval:
            self.suppressed += 1
            return
        if self.suppressed:
            message += " (%d similar events not logged)"
            args = (*args, self.suppressed)
        self.last, self.suppressed = now, 0
        log.log(level, message, *args)

    def warning(self, message: str, *args: object) -> None:
        self._emit(logging.WARNING, message, *args)

    def error(self, message: str, *args: object) -> None:
        self._emit(logging.ERROR, message, *args)
