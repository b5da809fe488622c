"""Counting header_checks refusals in Postfix's mail log, per rule (cleanup logs the
rule's reject text, which carries its id; the sender_access map counts its own hits)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

from aliasd.config import Settings
from aliasd.core.blocking import list_rules, record_hits
from aliasd.db import Database, get_database
from aliasd.postfix.table import clean_text

# cleanup logs each refusal: "QID: reject: header From: x@y from host[ip]; from=<..> to=<..>
# proto=ESMTP helo=<..>: 5.7.1 "Plz stop sending SPAM id=1"" (the text after REJECT, as is).
_HEADER_REJECT = re.compile(r": reject: header .*: \d\.\d\.\d (?P<text>.*)$")


def count_log_hits(lines: Iterable[str], texts: dict[str, int]) -> dict[int, int]:
    """Rule id → refusals in ``lines``; ``texts`` maps each rule's logged text to its id."""
    hits: dict[int, int] = {}
    for line in lines:
        match = _HEADER_REJECT.search(line)
        if not match:
            continue
        rule_id = texts.get(match.group("text").strip())
        if rule_id is not None:
            hits[rule_id] = hits.get(rule_id, 0) + 1
    return hits


def collect_log_hits(
    settings: Settings, maillog: str, database: Database | None = None
) -> dict[int, int]:
    """Add the header_checks refusals logged in ``maillog`` since the last call to the
    rules' hit counters (the read position is kept in data_dir, and starts over when the
    log was rotated). Returns what was added."""
    db = database or get_database(settings)
    state_path = Path(settings.data_dir) / "maillog-hits.json"
    try:
        state = json.loads(state_path.read_text())
    except (FileNotFoundError, ValueError):
        state = {}
    with open(maillog, "rb") as fh:
        st = os.fstat(fh.fileno())
        head = fh.read(256)
        same = state.get("inode") == st.st_ino and state.get("head") == hashlib.sha256(
            head[: int(state.get("head_len", 0))]
        ).hexdigest()  # same inode may be a new file after rotation: compare its start
        offset = int(state.get("offset", 0)) if same else 0
        if offset > st.st_size:  # truncated in place
            offset = 0
        fh.seek(offset)
        data = fh.read()
    end = data.rfind(b"\n") + 1  # complete lines only; the rest is read next time
    lines = data[:end].decode("utf-8", "replace").splitlines()
    with db.session() as session:
        texts: dict[str, int] = {}
        for rule in list_rules(session):
            text = clean_text(rule.reject_text)
            texts[f'"{text}"'] = rule.id
            texts.setdefault(text, rule.id)
        hits = count_log_hits(lines, texts)
        if hits:
            record_hits(session, hits)
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps({
        "path": maillog, "inode": st.st_ino, "offset": offset + end,
        "head_len": len(head), "head": hashlib.sha256(head).hexdigest(),
    }))  # fmt: skip
    return hits
