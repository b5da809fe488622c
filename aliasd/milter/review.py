"""The mail path's steps for review: decide whether a message is held in Postfix's
hold queue (quarantine), add the one-click headers, and keep recent messages for
"this was spam / not spam". Called by :class:`aliasd.milter.processing.MailPath`;
no milter protocol here either.

Nothing is lost: a message that should be held but cannot be recorded (database
down, quarantine full, no queue id) is deferred with 451, so the sender retries."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aliasd.core import quarantine
from aliasd.core.preview import text_preview
from aliasd.milter import oneclick_headers
from aliasd.milter.batch_writer import BatchWriter

if TYPE_CHECKING:
    from aliasd.core.events import AliasTarget
    from aliasd.db import Database
    from aliasd.milter.processing import Envelope, MailPath, Verdict

log = logging.getLogger(__name__)

QUARANTINE = "quarantine"  # Verdict.status of a message to hold
GATHER_SECONDS = 0.05  # learning copies gather this long before one transaction
SAMPLE_QUEUE = 256  # learning copies waiting to be written; past it new ones are dropped
TEMPFAIL_REPLY = ("451", "4.3.0", "Message could not be kept for review; try again later")
# A user's quarantine_score is remembered this long per milter process (like the block
# list's 2 s): a change on the web or CLI applies to mail within it. 0: read every time.
THRESHOLD_TTL = 2.0
THRESHOLD_OWNERS = 4096  # owners remembered at most; past it the memory starts over


def before_record(path: MailPath, verdict: Verdict, envelope: Envelope,
                  targets: list[AliasTarget]) -> None:
    """Between scan and record: the hold decision and the one-click headers."""
    owners = {t.owner_id for t in targets}
    if (verdict.status == "accept" and verdict.result is not None and not verdict.blocks
            and len(owners) == 1 and path.settings.action_reject > verdict.result.score):
        _decide_hold(path, verdict, owners.pop())
    if verdict.status == "accept" and len({t.owner_id for t in targets}) == 1:
        verdict.add_headers.extend(oneclick_headers.headers_for(path.settings, envelope, targets))


def _decide_hold(path: MailPath, verdict: Verdict, owner_id: int) -> None:
    assert verdict.result is not None
    try:
        user_score = _thresholds(path).get(path.database, owner_id)
    except Exception as exc:  # a guess never holds mail: it goes on as scanned
        log.warning("quarantine threshold unavailable: %s", exc)
        return
    if quarantine.holds(path.settings, verdict.result.score, user_score):
        verdict.status = QUARANTINE
        verdict.new_subject = None  # a released message keeps its own Subject


def after_record(path: MailPath, verdict: Verdict, envelope: Envelope,
                 targets: list[AliasTarget], raw: bytes | None = None) -> None:
    """Keep the message for review or learning; defer it if it must be held but can't.
    ``raw``: the message as :meth:`Envelope.raw_message` gives it, when made already."""
    settings = path.settings
    held = verdict.status == QUARANTINE
    if not held and (settings.learn_keep_days <= 0 or verdict.status != "accept"
                     or verdict.result is None):
        return
    seen = _seen(envelope, targets[0], verdict, raw)
    if not held:
        # Off the SMTP answer's path: a copy for learning may be lost (queue full,
        # crash, database down); only the chance to learn from that message goes.
        _writer(path).submit(seen)
        return
    try:
        with path.database.session() as session:
            held_id = quarantine.record_hold(session, settings, seen, text_preview(seen.raw))
            log.info("queue id %s held for review as quarantine id %s (score %.2f)",
                     envelope.queue_id, held_id, seen.score)
    except quarantine.QuarantineFull as exc:
        log.error("ALARM: %s; deferring queue id %s", exc, envelope.queue_id)
        _defer(verdict)
    except Exception as exc:
        log.warning("could not record held message %s: %s", envelope.queue_id, exc)
        _defer(verdict)


class ThresholdCache:
    """Remembers :func:`quarantine.owners_scores`' answer per owner for ``ttl`` seconds;
    the decision stays :func:`quarantine.holds`'. A read that fails is not remembered
    and raises, as an uncached one would."""

    def __init__(self, ttl: float = THRESHOLD_TTL, max_owners: int = THRESHOLD_OWNERS
                 ) -> None:
        self.ttl = ttl
        self.max_owners = max_owners
        self._scores: dict[int, tuple[float | None, float]] = {}
        self._lock = threading.Lock()

    def get(self, database: Database, owner_id: int) -> float | None:
        now = time.monotonic()
        known = self._scores.get(owner_id)
        if known is not None and now - known[1] < self.ttl:
            return known[0]
        with database.session() as session:
            score = quarantine.owners_scores(session, [owner_id]).get(owner_id)
        if self.ttl > 0:
            with self._lock:
                if len(self._scores) >= self.max_owners:
                    self._scores.clear()
                self._scores[owner_id] = (score, now)  # aged from before the read
        return score


def _keep_samples(path: MailPath, batch: list[quarantine.SeenMessage]) -> None:
    with path.database.session() as session:
        quarantine.keep_samples(session, path.settings, batch)


def _samples_lost(batch: Sequence[quarantine.SeenMessage], why: str) -> None:
    log.info("%d learning cop%s not kept (%s): %s", len(batch),
             "y" if len(batch) == 1 else "ies", batch[0].queue_id, why)


def _writer(path: MailPath) -> BatchWriter[quarantine.SeenMessage]:
    """Learning copies are written in a thread of their own, in the order they came."""
    return path.per_process("learning copies", lambda: BatchWriter(
        lambda batch: _keep_samples(path, batch), name="aliasd-samples",
        max_queue=SAMPLE_QUEUE, max_batch=SAMPLE_QUEUE, gather=GATHER_SECONDS,
        on_lost=_samples_lost))


def _thresholds(path: MailPath) -> ThresholdCache:
    return path.per_process("quarantine thresholds", lambda: ThresholdCache(THRESHOLD_TTL))


def _defer(verdict: Verdict) -> None:
    verdict.status = "tempfail"
    verdict.reply = TEMPFAIL_REPLY


def _seen(envelope: Envelope, target: AliasTarget, verdict: Verdict,
          raw: bytes | None = None) -> quarantine.SeenMessage:
    from aliasd.milter.processing import decode_header_text

    result = verdict.result
    return quarantine.SeenMessage(
        owner_id=target.owner_id,
        alias_id=target.id,
        alias_address=target.address,
        queue_id=envelope.queue_id,
        envelope_sender=envelope.sender,
        from_header=decode_header_text(envelope.first_header("From")),
        subject=decode_header_text(envelope.first_header("Subject")),
        score=result.score if result else 0.0,
        symbols=result.spamd_result_header().partition("; ")[2] if result else "",
        raw=raw if raw is not None else envelope.raw_message(),
    )
