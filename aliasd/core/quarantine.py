"""The quarantine's rules: which score holds a message for whom, what is recorded
of a held message, who may see it, and what releasing, deleting and purging do.

Postfix keeps held messages in its hold queue (see ``aliasd.postfix.hold_queue``);
aliasd keeps a row saying whose message it is and why it was held, and a capped copy
of the scanned bytes (a :class:`MessageSample`) so a decision can teach the Bayes
filter."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session, object_session

from aliasd.config import Settings
from aliasd.core.errors import AliasdError, InvalidTransition, NotFound
from aliasd.db import Database
from aliasd.models import Alias, HoldState, MessageSample, QuarantinedMessage, User, utcnow

log = logging.getLogger(__name__)

# Teaches the filter: (raw message, is_spam) -> outcome text ("learned", ...)
Learner = Callable[[bytes, bool], str]


class QuarantineFull(AliasdError):
    """As many messages are held as ``quarantine_max_held`` allows."""


def effective_threshold(settings: Settings, user_score: float | None) -> float:
    """The score from which a user's mail is held; 0 means never."""
    score = settings.quarantine_score if user_score is None else user_score
    if score <= 0 or score >= settings.action_reject:
        return 0.0  # a threshold at or past reject would never hold anything
    return score


def set_user_threshold(session: Session, settings: Settings, user: User,
                       value: float | None) -> None:
    """A user's own quarantine score: None follows the server, 0 never holds."""
    # not (0 <= value < reject) also refuses NaN, which every comparison calls false
    if value is not None and not 0 <= value < settings.action_reject:
        raise AliasdError(f"the quarantine score must be 0 (never hold) or between 0 and the "
                          f"reject score {settings.action_reject:g}")
    user.quarantine_score = value


def holds(settings: Settings, score: float, user_score: float | None) -> bool:
    threshold = effective_threshold(settings, user_score)
    return bool(threshold) and threshold <= score < settings.action_reject


@dataclass(frozen=True)
class SeenMessage:
    """What the milter saw of one message to one alias (protocol-free)."""

    owner_id: int
    alias_id: int | None
    alias_address: str
    queue_id: str | None
    envelope_sender: str
    from_header: str | None
    subject: str | None
    score: float
    symbols: str
    raw: bytes


def keep_sample(session: Session, settings: Settings, seen: SeenMessage) -> MessageSample:
    sample = MessageSample(
        owner_id=seen.owner_id, alias_id=seen.alias_id, alias_address=seen.alias_address,
        queue_id=seen.queue_id, envelope_sender=seen.envelope_sender,
        from_header=_cut(seen.from_header), subject=_cut(seen.subject), score=seen.score,
        symbols=seen.symbols, raw=seen.raw[: settings.learn_sample_max_bytes],
    )  # fmt: skip
    session.add(sample)
    session.flush()
    return sample


def keep_samples(session: Session, settings: Settings, seen: Sequence[SeenMessage]) -> None:
    """:func:`keep_sample` of many messages in one statement (the learning-copy writer's
    batches): no ORM objects, whose bookkeeping cost more than the insert."""
    if not seen:
        return
    limit = settings.learn_sample_max_bytes
    session.execute(insert(MessageSample.__table__), [{
        "owner_id": m.owner_id, "alias_id": m.alias_id, "alias_address": m.alias_address,
        "queue_id": m.queue_id, "envelope_sender": m.envelope_sender,
        "from_header": _cut(m.from_header), "subject": _cut(m.subject), "score": m.score,
        "symbols": m.symbols, "raw": m.raw[:limit]} for m in seen])  # fmt: skip


def held_count(session: Session) -> int:
    """Messages in Postfix's hold queue waiting for a decision (what the cap counts)."""
    return session.scalar(select(func.count()).select_from(QuarantinedMessage)
                          .where(QuarantinedMessage.state == HoldState.HELD.value)) or 0


def record_hold(session: Session, settings: Settings, seen: SeenMessage, preview: str) -> int:
    """Record a message the milter is about to hold (its learning copy and the held row,
    with Core inserts: ORM objects cost more than the rows); the held row's id. Raises
    QuarantineFull at the cap."""
    if not seen.queue_id:
        raise AliasdError("no queue id: the message cannot be found again")
    held = held_count(session)
    if held >= settings.quarantine_max_held:
        raise QuarantineFull(f"quarantine full ({held} messages held)")
    facts = {"owner_id": seen.owner_id, "alias_id": seen.alias_id,
             "alias_address": seen.alias_address, "queue_id": seen.queue_id,
             "envelope_sender": seen.envelope_sender, "from_header": _cut(seen.from_header),
             "subject": _cut(seen.subject), "score": seen.score, "symbols": seen.symbols}
    sample = session.execute(insert(MessageSample.__table__), {
        **facts, "raw": seen.raw[: settings.learn_sample_max_bytes]})
    held_row = session.execute(insert(QuarantinedMessage.__table__), {
        **facts, "preview": preview, "sample_id": sample.inserted_primary_key[0],
        "state": HoldState.HELD.value})
    return held_row.inserted_primary_key[0]


def _cut(text: str | None, limit: int = 500) -> str | None:
    return text[:limit] if text is not None else None


# --- review ------------------------------------------------------------------------------
VISIBLE_AT_ONCE = 500


def _visible_to(query, user: User | None, state: str | None):
    if state:
        query = query.where(QuarantinedMessage.state == state)
    if user is not None and not user.is_admin:
        query = query.where(QuarantinedMessage.owner_id == user.id)
    return query


def visible(session: Session, user: User | None, *, state: str | None = HoldState.HELD.value,
            limit: int = VISIBLE_AT_ONCE) -> list[QuarantinedMessage]:
    """Held messages a user may review (all of them for an admin or ``user=None``), the
    newest ``limit``."""
    query = select(QuarantinedMessage).order_by(QuarantinedMessage.held_at.desc(),
                                                QuarantinedMessage.id.desc()).limit(limit)
    return list(session.scalars(_visible_to(query, user, state)))


def visible_count(session: Session, user: User | None, *,
                  state: str | None = HoldState.HELD.value) -> int:
    """How many :func:`visible` would list without its limit."""
    query = select(func.count()).select_from(QuarantinedMessage)
    return session.scalar(_visible_to(query, user, state)) or 0


def get_for(session: Session, message_id: int, user: User | None) -> QuarantinedMessage:
    """The held message, if ``user`` may see it (another user's is "not found")."""
    row = session.get(QuarantinedMessage, message_id)
    if row is None or (user is not None and not user.is_admin and row.owner_id != user.id):
        raise NotFound(f"no quarantined message {message_id}")
    return row


class HoldQueueLike(Protocol):
    """What release/delete need of aliasd.postfix.hold_queue.HoldQueue."""

    def release(self, queue_id: str) -> bool: ...
    def delete(self, queue_id: str) -> bool: ...


def _decide(row: QuarantinedMessage, state: HoldState, actor: str) -> None:
    row.state = state.value
    row.decided_at = utcnow()
    row.decided_by = actor[:255]
    _settle_alias_counters(row, delivered=state is HoldState.RELEASED)


def _settle_alias_counters(row: QuarantinedMessage, *, delivered: bool) -> None:
    """The alias no longer holds this message; a released one counts as forwarded."""
    session = object_session(row)
    if session is None or row.alias_id is None:
        return
    counts = Alias.__table__.c
    session.execute(update(Alias.__table__).where(counts.id == row.alias_id).values(
        held_count=case((counts.held_count > 0, counts.held_count - 1), else_=0),
        forwarded_count=counts.forwarded_count + (1 if delivered else 0),
        updated_at=counts.updated_at))


def _require_held(row: QuarantinedMessage) -> None:
    if row.state != HoldState.HELD.value:
        when = f" on {row.decided_at:%Y-%m-%d %H:%M} UTC" if row.decided_at else ""
        raise InvalidTransition(f"quarantined message {row.id} was already {row.state}{when}")


def release(session: Session, queue: HoldQueueLike, row: QuarantinedMessage, *,
            actor: str) -> None:
    """Deliver the held message (Postfix sends the file it accepted, unchanged)."""
    _require_held(row)
    if not queue.release(row.queue_id):
        raise InvalidTransition(
            f"quarantined message {row.id} (queue id {row.queue_id}) is no longer in "
            "Postfix's hold queue; nothing was delivered")
    _decide(row, HoldState.RELEASED, actor)


def mark_gone(session: Session, row: QuarantinedMessage) -> None:
    """Postfix no longer has the message (deleted outside aliasd): say so in the list."""
    if row.state == HoldState.HELD.value:
        _decide(row, HoldState.PURGED, "postfix")


def delete(session: Session, queue: HoldQueueLike, row: QuarantinedMessage, *,
           actor: str) -> None:
    """Delete the held message."""
    _require_held(row)
    queue.delete(row.queue_id)  # already gone from Postfix: deleted is what was asked
    _decide(row, HoldState.DELETED, actor)


REQUESTS = ("release", "release+learn", "delete", "delete+learn")


def request_decision(row: QuarantinedMessage, request: str, actor: str) -> None:
    """Record a decision for `aliasd quarantine apply` to carry out."""
    if request not in REQUESTS:
        raise AliasdError("choose release or delete")
    _require_held(row)
    row.requested = request
    row.decided_by = actor[:255]


def requested(session: Session) -> list[QuarantinedMessage]:
    return list(session.scalars(select(QuarantinedMessage).where(
        QuarantinedMessage.state == HoldState.HELD.value,
        QuarantinedMessage.requested.is_not(None)).order_by(QuarantinedMessage.id)))


def learn_from(database: Database, sample_id: int | None, learner: Learner, *,
               is_spam: bool) -> str:
    """Teach the filter from a kept message. Runs outside any open transaction of the
    caller: the learner writes through its own connection (SQLite allows one writer)."""
    with database.session() as session:
        sample = session.get(MessageSample, sample_id) if sample_id else None
        raw = sample.raw if sample is not None else None
    if raw is None:
        raise InvalidTransition("the message's copy for learning was already purged")
    outcome = str(learner(raw, is_spam))
    with database.session() as session:
        session.execute(update(MessageSample).where(MessageSample.id == sample_id)
                        .values(learned_as="spam" if is_spam else "ham"))
    return outcome


def recent_samples(session: Session, alias_id: int, limit: int = 20) -> list[MessageSample]:
    return list(session.scalars(
        select(MessageSample).where(MessageSample.alias_id == alias_id,
                                    MessageSample.raw.is_not(None))
        .order_by(MessageSample.at.desc(), MessageSample.id.desc()).limit(limit)))


def sample_for(session: Session, sample_id: int, user: User | None) -> MessageSample:
    sample = session.get(MessageSample, sample_id)
    if sample is None or (user is not None and not user.is_admin and sample.owner_id != user.id):
        raise NotFound(f"no recent message {sample_id}")
    return sample


# --- retention ---------------------------------------------------------------------------
@dataclass
class PurgeResult:
    held_deleted: int = 0
    samples_dropped: int = 0


def purge(session: Session, queue: HoldQueueLike, settings: Settings,
          now: dt.datetime | None = None) -> PurgeResult:
    """Delete held messages older than ``quarantine_keep_days`` (from Postfix too) and
    drop the bytes of samples older than ``learn_keep_days`` that no held message needs."""
    now = now or utcnow()
    result = PurgeResult()
    cutoff = now - dt.timedelta(days=settings.quarantine_keep_days)
    for row in session.scalars(select(QuarantinedMessage).where(
            QuarantinedMessage.state == HoldState.HELD.value,
            QuarantinedMessage.held_at < cutoff)):
        queue.delete(row.queue_id)
        _decide(row, HoldState.PURGED, "retention")
        result.held_deleted += 1
    session.flush()
    still_held = select(QuarantinedMessage.sample_id).where(
        QuarantinedMessage.state == HoldState.HELD.value,
        QuarantinedMessage.sample_id.is_not(None))
    sample_cutoff = now - dt.timedelta(days=settings.learn_keep_days)
    dropped = session.execute(
        update(MessageSample)
        .where(MessageSample.at < sample_cutoff, MessageSample.raw.is_not(None),
               MessageSample.id.not_in(still_held))
        .values(raw=None))
    result.samples_dropped = dropped.rowcount or 0
    return result


def owners_scores(session: Session, owner_ids: Sequence[int]) -> dict[int, float | None]:
    rows = session.execute(select(User.id, User.quarantine_score).where(User.id.in_(owner_ids)))
    return {uid: score for uid, score in rows}
