"""Spam scanners: the bundled one (rules + Bayes in the database) and a real rspamd.

``build_scanner(settings, database)`` picks the backend named by
``settings.scanner_backend``; both offer ``scan(ScanRequest) -> ScanResult`` and
``learn(bytes, is_spam) -> LearnOutcome``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aliasd.scanner.base import LearnOutcome, Scanner, ScannerError
from aliasd.scanner.result import Action, ScanRequest, ScanResult, Symbol

if TYPE_CHECKING:
    from aliasd.config import Settings
    from aliasd.db import Database


def build_scanner(settings: Settings, database: Database | None) -> Scanner:
    """The scanner selected by ``settings.scanner_backend`` ("bundled" or "rspamd")."""
    if settings.scanner_backend == "rspamd":
        from aliasd.scanner.rspamd import RspamdScanner

        return RspamdScanner(settings)
    from aliasd.scanner.bundled import BundledScanner

    if database is None:
        raise ScannerError("the bundled scanner needs the database")
    return BundledScanner(settings, database)


__all__ = [
    "Action",
    "LearnOutcome",
    "ScanRequest",
    "ScanResult",
    "Scanner",
    "ScannerError",
    "Symbol",
    "build_scanner",
]
