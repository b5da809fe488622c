"""Postfix's own verdict on which rules match ordinary mail.

Each rule goes into a probe table with a numbered action; the shipped ordinary header
lines (aliasd.core.ordinary_mail) are looked up with ``postmap -q -``. Postfix answers
with the first rule that matches a line, so matched rules are taken out and the lines
asked again until none matches: every offending rule is found, each with a header line
it matches."""

from __future__ import annotations

import os
from collections.abc import Sequence

from aliasd.core.ordinary_mail import ordinary_headers
from aliasd.postfix.postmap import query_keys, write_temp_table

_PROBE = "REJECT aliasd-probe-"


def rules_matching_ordinary_mail(patterns: Sequence[str], config_dir: str) -> dict[int, str]:
    """Index into ``patterns`` (each ``/body/flags``) → an ordinary header line it
    matches, for every pattern that matches one."""
    remaining = dict(enumerate(patterns))
    matched: dict[int, str] = {}
    headers = ordinary_headers()
    while remaining:
        tmp = write_temp_table([f"{p} {_PROBE}{i}" for i, p in remaining.items()])
        try:
            found = query_keys(tmp, headers, config_dir)
        finally:
            os.unlink(tmp)
        hits = {}
        for header, value in found.items():
            if value.startswith(_PROBE):
                hits.setdefault(int(value[len(_PROBE):]), header)
        if not hits:
            break
        for index, header in hits.items():
            matched[index] = header
            remaining.pop(index, None)
    return matched
