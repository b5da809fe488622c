"""What every scanner backend offers the milter and the CLI."""

from __future__ import annotations

import enum
from typing import Protocol, runtime_checkable

from aliasd.scanner.result import ScanRequest, ScanResult


class ScannerError(RuntimeError):
    """The scanner itself failed (database down, rspamd unreachable, ...). The milter
    lets the message pass unscanned; a bad *message* never raises this."""


class LearnOutcome(enum.StrEnum):
    LEARNED = "learned"
    DUPLICATE = "duplicate"  # already learned as this class: nothing changed
    RELEARNED = "relearned"  # was learned as the other class: its counts moved
    FAILED = "failed"  # not learnable (empty) or the backend failed


@runtime_checkable
class Scanner(Protocol):
    """Synchronous and thread-safe."""

    def scan(self, request: ScanRequest) -> ScanResult: ...

    def learn(self, message: bytes, is_spam: bool) -> LearnOutcome: ...
