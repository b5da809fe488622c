"""Tables of the quarantine and of learning from recent mail (imported by
``aliasd.models`` so they share its metadata)."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from aliasd.models import Base, User, UTCDateTime, utcnow


class HoldState(enum.StrEnum):
    HELD = "held"  # in Postfix's hold queue, waiting for a decision
    RELEASED = "released"
    DELETED = "deleted"
    PURGED = "purged"  # deleted by the retention job


class MessageSample(Base):
    """A recent message as the milter scanned it (capped), kept for a few days so its
    owner can say "this was spam" / "this was not spam" and the Bayes filter learns
    from the very bytes it judged."""

    __tablename__ = "message_samples"
    __table_args__ = (
        Index("ix_message_samples_alias_at", "alias_id", "at"),
        Index("ix_message_samples_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    alias_id: Mapped[int | None] = mapped_column(ForeignKey("aliases.id", ondelete="SET NULL"))
    alias_address: Mapped[str] = mapped_column(String(320))
    queue_id: Mapped[str | None] = mapped_column(String(64))
    envelope_sender: Mapped[str] = mapped_column(String(320), default="")
    from_header: Mapped[str | None] = mapped_column(String(500))
    subject: Mapped[str | None] = mapped_column(String(500))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    symbols: Mapped[str] = mapped_column(Text, default="")
    raw: Mapped[bytes | None] = mapped_column(LargeBinary)  # None once purged
    learned_as: Mapped[str | None] = mapped_column(String(8))  # spam | ham


class QuarantinedMessage(Base):
    """A message the milter put in Postfix's hold queue. Postfix keeps the message;
    this row says whose it is and why it was held."""

    __tablename__ = "quarantined_messages"
    # ix_quarantined_state: the cap counts held rows among the released and deleted ones.
    __table_args__ = (Index("ix_quarantined_owner_state", "owner_id", "state"),
                      Index("ix_quarantined_state", "state"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    held_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    queue_id: Mapped[str] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    alias_id: Mapped[int | None] = mapped_column(ForeignKey("aliases.id", ondelete="SET NULL"))
    alias_address: Mapped[str] = mapped_column(String(320))
    envelope_sender: Mapped[str] = mapped_column(String(320), default="")
    from_header: Mapped[str | None] = mapped_column(String(500))
    subject: Mapped[str | None] = mapped_column(String(500))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    symbols: Mapped[str] = mapped_column(Text, default="")
    preview: Mapped[str] = mapped_column(Text, default="")  # plain text, sanitised
    sample_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_samples.id", ondelete="SET NULL"))
    state: Mapped[str] = mapped_column(String(16), default=HoldState.HELD.value)
    # Asked for on the web, carried out by `aliasd quarantine apply` (as root):
    # "release", "release+learn", "delete" or "delete+learn".
    requested: Mapped[str | None] = mapped_column(String(16))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    decided_by: Mapped[str | None] = mapped_column(String(255))
    # when the owner's quarantine digest listed it (each held message is listed once)
    digested_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User] = relationship()


class UserBayesToken(Base):
    """A user's own Bayes token counts (``bayes_per_user``): added to the global counts
    when that user's mail is classified, never seen for anyone else's."""

    __tablename__ = "user_bayes_tokens"

    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                          primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)


class UserBayesLearned(Base):
    """Which messages a user taught (by digest), so a repeat is a duplicate and the
    other verdict moves the counts."""

    __tablename__ = "user_bayes_learned"

    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                          primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    is_spam: Mapped[bool] = mapped_column(Boolean)
    learned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
