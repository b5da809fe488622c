"""The one publisher of the header_checks table: everything that changes what Postfix
refuses goes through ``publish``.

Trigger: a session listener registered once, here, at import. A transaction that adds,
removes, enables, disables or re-words a block rule marks its session; after the commit
the table is published in a background thread (a rolled-back rule never reaches
Postfix, and the mail path never waits for postmap and the reload). Sessions learn
their settings from ``Database.bind_settings`` (``get_database`` binds them). Callers
that must report the outcome (the CLI, the web pages) wait for it with
``wait_for_publish``; ``aliasd blocklist write``, ``aliasd up`` and lookupd's refresh
(rules changed by another host) call ``publish`` or ``request_publish`` directly.

Publishing: the enabled rules are rendered; any that matches an ordinary header line
(aliasd.core.ordinary_mail) is left out and reported, whatever path it came through;
the file is checked by postmap beside the live one, renamed into place, and the reload
command runs. A failed check keeps the old file; a failed reload is reported with
Postfix's own words, never swallowed."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core.ordinary_mail import why_too_broad
from aliasd.db import SESSION_DATABASE, SESSION_SETTINGS, Database, get_database
from aliasd.models import BlockRule
from aliasd.postfix.ordinary_check import rules_matching_ordinary_mail
from aliasd.postfix.postmap import postfix_client_config_dir
from aliasd.postfix.table import enabled_rules, render_table, rule_line
from aliasd.postfix.table_file import HeaderChecksError, WriteResult, write_table

__all__ = [
    "HeaderChecksError", "RefusedRule", "WriteResult", "hold_publishing", "last_results",
    "publish", "publish_requested", "request_publish", "wait_for_publish",
]  # fmt: skip

log = logging.getLogger("aliasd.blocklist")

_CHANGED = "aliasd.block_rules_changed"
_HOLD = "aliasd.block_rules_hold"
_REQUESTED = "aliasd.block_rules_published"
_TABLE_ATTRS = ("pattern", "reject_text", "enabled")  # what the table shows of a rule


@dataclass(frozen=True)
class RefusedRule:
    """An enabled rule left out of the table: it matches an ordinary header line."""

    rule_id: int
    pattern: str
    header: str

    @property
    def reason(self) -> str:
        return f"rule {self.rule_id} not published: {why_too_broad(self.pattern, self.header)}"


@dataclass
class PublishResult(WriteResult):
    refused: list[RefusedRule] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reload_error is None and not self.refused


# --- publishing ------------------------------------------------------------------------
def publish(
    settings: Settings, database: Database | None = None, *, force_reload: bool = False
) -> PublishResult:
    """Write the enabled rules to settings' header_checks file (minus any that would
    refuse ordinary mail), validated and atomic, and run the reload command when the
    file changed. Raises HeaderChecksError when Postfix refuses the table (the live file
    is kept); a refused rule or failed reload is in the result."""
    db = database or get_database(settings)
    path = Path(settings.effective_blocklist_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    config_dir = postfix_client_config_dir(settings.data_dir)
    # The milter, web workers, lookupd and the CLI all publish: one at a time, each
    # reading the rules inside the lock, so an older read never lands after a newer one.
    with _publish_lock, open(path.parent / f".{path.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with db.session() as session:
            rules = enabled_rules(session)
        broad = rules_matching_ordinary_mail([p for _id, p, _t in rules], config_dir)
        refused = [RefusedRule(rules[i][0], rules[i][1], header) for i, header in broad.items()]
        kept = [r for i, r in enumerate(rules) if i not in broad]
        content = render_table((rid, rule_line(p, text)) for rid, p, text in kept)
        written = write_table(
            str(path), content, config_dir=config_dir,
            reload_command=settings.blocklist_reload_command, force_reload=force_reload,
        )  # fmt: skip
    for rule in refused:
        log.error("%s", rule.reason)
    return PublishResult(**vars(written), refused=sorted(refused, key=lambda r: r.rule_id))


_publish_lock = threading.RLock()
_pending: dict[str, tuple[Settings, Database | None] | None] = {}
_pending_lock = threading.Lock()
last_results: dict[str, PublishResult | Exception] = {}  # per file: what the last run did


def request_publish(settings: Settings, database: Database | None = None) -> None:
    """Publish soon in a background thread; requests arriving while one runs are folded
    into one more run. Outcomes are logged (a refused table, rule or failed reload is an
    error in the log, never silent) and kept in ``last_results``."""
    key = settings.effective_blocklist_file
    with _pending_lock:
        already = key in _pending
        _pending[key] = (settings, database)
        if already:
            return
    threading.Thread(target=_worker, args=(key,), name="aliasd-publish", daemon=True).start()


def _worker(key: str) -> None:
    while True:
        with _pending_lock:
            job = _pending.get(key)
            if job is None:
                _pending.pop(key, None)
                return
            _pending[key] = None  # later requests set it again
        settings, database = job
        try:
            result = publish(settings, database)
            last_results[key] = result
            if result.reload_error:
                log.error("blocklist written to %s but %s", key, result.reload_error)
            elif result.changed:
                log.info("blocklist written to %s (%d rules)", key, result.rules)
        except Exception as exc:  # logged: the milter and lookupd must keep running
            last_results[key] = exc
            problems = getattr(exc, "problems", [])
            log.error("blocklist not written to %s: %s %s", key, exc, "; ".join(problems))


def wait_for_publish(
    settings: Settings, timeout: float = 60.0
) -> PublishResult | Exception | None:
    """Block until no publishing is pending for settings' file; its last outcome."""
    key = settings.effective_blocklist_file
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with _pending_lock:
            if key not in _pending:
                return last_results.get(key)
        time.sleep(0.02)
    raise TimeoutError(f"publishing {key} still pending after {timeout} s")


# --- the trigger: rules changed in a transaction → publish after its commit ---------------
def _changes_table(obj: object, session: Session) -> bool:
    if not isinstance(obj, BlockRule):
        return False
    if obj in session.new or obj in session.deleted:
        return True
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in _TABLE_ATTRS)


@event.listens_for(Session, "before_flush")
def _note_rule_changes(session: Session, _context, _instances) -> None:
    if any(_changes_table(o, session) for o in chain(session.new, session.dirty, session.deleted)):
        session.info[_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _publish_after_commit(session: Session) -> None:
    if not session.info.pop(_CHANGED, False) or session.info.get(_HOLD):
        return
    settings = session.info.get(SESSION_SETTINGS)
    if settings is None:  # a session of no configured process; lookupd catches up
        log.debug("block rules changed in a session without settings; not published")
        return
    request_publish(settings, session.info.get(SESSION_DATABASE))
    session.info[_REQUESTED] = True


@event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_CHANGED, None)


def publish_requested(session: Session) -> bool:
    """Whether a commit of this session started publishing (once per call)."""
    return bool(session.info.pop(_REQUESTED, False))


def hold_publishing(session: Session) -> None:
    """What this session commits from now on is not published (``--no-write``)."""
    session.info[_HOLD] = True
