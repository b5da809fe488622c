"""Debian's SpamAssassin itself (``spamassassin -L -t``, local tests only): the rules it
reports on a message, to compare aliasd's reading of its rule files with."""

from __future__ import annotations

import re
import subprocess

_RULE_LINE = re.compile(r"^\s*-?\d+(?:\.\d+)?\s+([A-Z][A-Z0-9_]{2,})\b", re.M)


def spamassassin_hits(raw: bytes) -> set[str]:
    """The names of the rules SpamAssassin's report lists for ``raw``."""
    out = subprocess.run(["spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=120, check=True)
    report = out.stdout.decode("latin-1").rpartition("Content analysis details")[2]
    return set(_RULE_LINE.findall(report))
