"""The baseline of ordinary header lines no enabled REJECT rule may match.

A rule that matches ``Received: from ...`` or ``Content-Type: text/plain`` refuses
nearly every message: the block list must never hold one. The lines ship with the
package (ordinary_headers.txt); the header_checks writer asks Postfix itself
(aliasd.postfix.ordinary_check); this module answers the same question in Python for
the core policy, which may not run postmap. The patterns aliasd builds from domains
are plain enough that Python's ``re`` and PCRE read them alike."""

from __future__ import annotations

import functools
import re
from importlib import resources

from aliasd.core.pcre_syntax import python_flags, split_rule_pattern


@functools.cache
def ordinary_headers() -> tuple[str, ...]:
    """The shipped header lines, one per line of the data file (comments dropped)."""
    text = resources.files("aliasd.core").joinpath("ordinary_headers.txt").read_text("utf-8")
    return tuple(
        line for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def ordinary_header_matched(pattern: str) -> str | None:
    """The first ordinary header line ``/body/flags`` matches (Python's reading), or
    None. A pattern Python cannot compile is left to Postfix's check."""
    body, flags = split_rule_pattern(pattern)
    try:
        rx = re.compile(body, python_flags(flags))
    except (re.error, OverflowError, RecursionError):
        return None
    return next((h for h in ordinary_headers() if rx.search(h)), None)


def why_too_broad(pattern: str, header: str) -> str:
    """The one sentence every path uses to refuse such a rule."""
    shown = header if len(header) <= 100 else header[:97] + "..."
    return (
        f"{pattern} matches the ordinary header line {shown!r}, so it would refuse "
        "ordinary mail"
    )
