"""Typed SQLAlchemy 2 models. Address-bearing columns normalise on write
(lower case, stripped), so no caller can store ``GitHub.com@Example.NET``."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on both SQLite (which drops tzinfo) and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value


class LowerString(TypeDecorator):
    """A string stored stripped and lower-cased (addresses, domains, sites)."""

    impl = String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return value.strip().lower() if isinstance(value, str) else value


class Base(DeclarativeBase):
    pass


class AliasState(enum.StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # refused at RCPT, can be re-enabled
    BURNED = "burned"  # refused for ever, never re-created
    DELETED = "deleted"  # tombstone: hidden from lists, never re-created by catch-all


class AliasOrigin(enum.StrEnum):
    WEB = "web"
    API = "api"
    CATCH_ALL = "catch-all"
    IMPORT = "import"
    CLI = "cli"


class ReplyMode(enum.StrEnum):
    """How forwarded mail carries its reverse alias."""

    PRESERVE = "preserve"  # Reply-To: the reverse alias; From: and DKIM untouched
    REWRITE = "rewrite"  # From: the reverse alias, signed with aliasd's key


class CatchAllPolicy(enum.StrEnum):
    CREATE = "create"
    REJECT = "reject"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(255), unique=True)
    mailbox: Mapped[str] = mapped_column(LowerString(320))
    # How the web app greets the user; empty: the user name.
    display_name: Mapped[str | None] = mapped_column(String(100))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    password_hash: Mapped[str | None] = mapped_column(String(255))
    auth_source: Mapped[str] = mapped_column(String(16), default="local")  # local | ldap
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Web sessions are signed cookies carrying the epoch they were made in; bumping it
    # (sign out everywhere, password change) ends every session made before.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Directory (LDAP) users: when the directory was last asked whether the user still
    # exists and is admin (sign-in or the periodic re-check), and since when it has
    # said the entry is gone (None: present). A gone user's sessions and tokens are
    # refused; the mark clears when the directory has the entry again.
    directory_checked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    directory_missing_since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # Score from which this user's mail is held for review; None: the server's setting,
    # 0: never held.
    quarantine_score: Mapped[float | None] = mapped_column(Float)

    domains: Mapped[list[Domain]] = relationship(back_populates="owner")


class Domain(Base):
    __tablename__ = "domains"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(LowerString(253), unique=True)  # IDNA (xn--) form
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="RESTRICT"))
    catch_all: Mapped[str] = mapped_column(String(16), default=CatchAllPolicy.REJECT.value)
    catch_all_regex: Mapped[str | None] = mapped_column(String(500))
    catch_all_max_per_hour: Mapped[int | None] = mapped_column(Integer)
    reply_mode: Mapped[str | None] = mapped_column(String(16))  # None: preserve
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User] = relationship(back_populates="domains")


class Alias(Base):
    __tablename__ = "aliases"
    __table_args__ = (
        Index("ix_aliases_owner_created", "owner_id", "created_at"),
        Index("ix_aliases_domain_origin_created", "domain_id", "origin", "created_at"),
        Index("ix_aliases_owner_site", "owner_id", "site"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(LowerString(320), unique=True)
    domain_id: Mapped[int] = mapped_column(ForeignKey("domains.id", ondelete="CASCADE"))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str | None] = mapped_column(LowerString(253))
    # Comma-separated normalised destination addresses, in the order Postfix gets them.
    destinations: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), default=AliasState.ACTIVE.value)
    origin: Mapped[str] = mapped_column(String(16), default=AliasOrigin.CLI.value)
    note: Mapped[str | None] = mapped_column(Text)
    reply_mode: Mapped[str | None] = mapped_column(String(16))  # None: the domain's
    reply_name: Mapped[str | None] = mapped_column(String(100))  # display name of replies
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    # counters kept current by the mail path (never recomputed from events on page views)
    forwarded_count: Mapped[int] = mapped_column(Integer, default=0)
    spam_count: Mapped[int] = mapped_column(Integer, default=0)
    rejected_count: Mapped[int] = mapped_column(Integer, default=0)
    # held for review now (Postfix's hold queue): neither forwarded nor rejected until decided
    held_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_mail_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    owner: Mapped[User] = relationship()
    domain: Mapped[Domain] = relationship()

    @property
    def destination_list(self) -> list[str]:
        return [d for d in self.destinations.split(",") if d]


class AliasChange(Base):
    """Change feed read by every lookupd to keep its in-memory replica fresh.
    ``address`` NULL means "reload everything" (bulk import, domain change)."""

    __tablename__ = "alias_changes"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    address: Mapped[str | None] = mapped_column(String(320))
    changed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class ReverseAlias(Base):
    """The address behind which one outside correspondent of one alias hides: mail to it
    from the alias's owner goes out as the alias to the correspondent. Deleted ones stay
    as tombstones (``deleted_at``) so their address is never answered again."""

    __tablename__ = "reverse_aliases"
    __table_args__ = (Index("ix_reverse_aliases_alias_correspondent", "alias_id", "correspondent"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(LowerString(320), unique=True)
    alias_id: Mapped[int] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    correspondent: Mapped[str] = mapped_column(LowerString(320))
    correspondent_name: Mapped[str | None] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    forwarded_count: Mapped[int] = mapped_column(Integer, default=0)  # correspondent → owner
    sent_count: Mapped[int] = mapped_column(Integer, default=0)  # owner → correspondent
    refused_count: Mapped[int] = mapped_column(Integer, default=0)  # strangers refused
    last_refused_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_refused_sender: Mapped[str | None] = mapped_column(String(320))

    alias: Mapped[Alias] = relationship()


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)  # sha256 hex of the token
    prefix: Mapped[str] = mapped_column(String(16))  # shown to the user to tell tokens apart
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class LoginAttempt(Base):
    """Failed sign-ins, for rate limiting per user and per client address across workers."""

    __tablename__ = "login_attempts"
    __table_args__ = (Index("ix_login_attempts_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(300))  # "user:<name>" or "ip:<addr>"
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class MailEvent(Base):
    """One message delivered (or refused) to one alias, as the milter saw it."""

    __tablename__ = "mail_events"
    __table_args__ = (
        Index("ix_mail_events_alias_at", "alias_id", "at"),
        Index("ix_mail_events_owner_at", "owner_id", "at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True
    )
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    alias_id: Mapped[int | None] = mapped_column(ForeignKey("aliases.id", ondelete="SET NULL"))
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    alias_address: Mapped[str] = mapped_column(String(320))
    site: Mapped[str | None] = mapped_column(String(253))
    client_addr: Mapped[str | None] = mapped_column(String(64))
    helo: Mapped[str | None] = mapped_column(String(255))
    envelope_sender: Mapped[str | None] = mapped_column(String(320))
    sender_domain: Mapped[str | None] = mapped_column(String(253))  # of the envelope sender
    from_domain: Mapped[str | None] = mapped_column(String(253))  # of the From: header
    subject: Mapped[str | None] = mapped_column(String(500))
    score: Mapped[float] = mapped_column(Float, default=0.0)
    action: Mapped[str] = mapped_column(String(32))
    is_spam: Mapped[bool] = mapped_column(Boolean, default=False)
    symbols: Mapped[str] = mapped_column(Text, default="")  # "SYM(score)[opts]; ..." as in headers
    queue_id: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer, default=0)
    related_sender: Mapped[bool] = mapped_column(Boolean, default=True)  # sender matches the site
    auth: Mapped[str | None] = mapped_column(String(200))  # "spf=pass dkim=pass dmarc=... arc=..."


class SiteDay(Base):
    """Per owner, site and UTC day: totals the report reads instead of scanning events."""

    __tablename__ = "site_days"
    __table_args__ = (
        UniqueConstraint("owner_id", "site", "day"),
        # The report's period filter across all users: covering, so it is index-only.
        Index("ix_site_days_day", "day", "owner_id", "site", "spam", "total", "unrelated"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(253))
    day: Mapped[dt.date] = mapped_column()
    total: Mapped[int] = mapped_column(Integer, default=0)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    unrelated: Mapped[int] = mapped_column(Integer, default=0)


class SiteSender(Base):
    """Per owner, site and sender domain: counts and first/last seen."""

    __tablename__ = "site_senders"
    __table_args__ = (UniqueConstraint("owner_id", "site", "sender_domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(253))
    sender_domain: Mapped[str] = mapped_column(String(253))
    total: Mapped[int] = mapped_column(Integer, default=0)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    first_spam_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_spam_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SiteKnownSender(Base):
    """A registrable sender domain that belongs to one owner's site, and why
    (core.attribution's sources: learned, authenticated, name, affiliation, user)."""

    __tablename__ = "site_known_senders"
    __table_args__ = (UniqueConstraint("owner_id", "site", "domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(253))
    domain: Mapped[str] = mapped_column(String(253))
    source: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    note: Mapped[str | None] = mapped_column(String(500))


class SiteLeak(Base):
    """Leak evidence: per owner, site and unrelated registrable sender domain, the counts
    and the message that made it evidence (the first spam one, else the first one)."""

    __tablename__ = "site_leaks"
    __table_args__ = (UniqueConstraint("owner_id", "site", "sender_domain"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(253))
    sender_domain: Mapped[str] = mapped_column(String(253))  # registrable
    first_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    total: Mapped[int] = mapped_column(Integer, default=0)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    evidence_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    evidence_sender: Mapped[str | None] = mapped_column(String(320))  # envelope sender
    evidence_from_domain: Mapped[str | None] = mapped_column(String(253))
    evidence_subject: Mapped[str | None] = mapped_column(String(500))
    evidence_score: Mapped[float] = mapped_column(Float, default=0.0)
    evidence_spam: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence_why: Mapped[str] = mapped_column(String(500), default="")
    dismissed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # "not a leak"
    confirmed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)  # "a leak"


class SiteLeakSummary(Base):
    """Per owner and site, what the report needs of its leak evidence (counting neither
    dismissed rows nor senders known by now): kept current by whoever changes either,
    so report pages never read every evidence row of every listed site."""

    __tablename__ = "site_leak_summaries"
    __table_args__ = (UniqueConstraint("owner_id", "site"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    site: Mapped[str] = mapped_column(String(253))
    senders: Mapped[int] = mapped_column(Integer, default=0)  # unrelated senders counted
    since: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    evidence_id: Mapped[int | None] = mapped_column(Integer)  # the SiteLeak a status quotes


class BlockRule(Base):
    """A rule of the header_checks table; ``id`` is the stable number in the reject text."""

    __tablename__ = "block_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # sender_domain | regex
    value: Mapped[str] = mapped_column(String(500))  # the domain, or the raw pcre pattern
    pattern: Mapped[str] = mapped_column(Text)  # the full /.../flags written to header_checks
    reject_text: Mapped[str] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(16))  # auto | manual | imported
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    hits: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_hit_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class SenderBlock(Base):
    """A sender refused for one user's aliases (``alias_id`` None) or for one alias.
    Enforced by the milter for that user's or alias's mail only; never written to
    Postfix's tables, which would refuse the sender for everyone. ``sender`` is a
    domain (its subdomains too) or one address."""

    __tablename__ = "sender_blocks"
    __table_args__ = (Index("ix_sender_blocks_owner", "owner_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    alias_id: Mapped[int | None] = mapped_column(ForeignKey("aliases.id", ondelete="CASCADE"))
    sender: Mapped[str] = mapped_column(LowerString(320))
    note: Mapped[str | None] = mapped_column(Text)
    hits: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_hit_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class BayesToken(Base):
    __tablename__ = "bayes_tokens"

    token: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    spam: Mapped[int] = mapped_column(Integer, default=0)
    ham: Mapped[int] = mapped_column(Integer, default=0)


class BayesLearned(Base):
    """Digest of each learned message, so one message is never learned twice."""

    __tablename__ = "bayes_learned"

    digest: Mapped[str] = mapped_column(String(64), primary_key=True)
    is_spam: Mapped[bool] = mapped_column(Boolean)
    learned_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Counter(Base):
    """Named counters (scanned by action, learns): what 'aliasd stat' prints."""

    __tablename__ = "counters"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, default=0)


from aliasd.models_quarantine import (  # noqa: E402
    HoldState,
    MessageSample,
    QuarantinedMessage,
    UserBayesLearned,
    UserBayesToken,
)

__all__ = [
    "Alias",
    "AliasChange",
    "AliasOrigin",
    "AliasState",
    "ApiToken",
    "Base",
    "BayesLearned",
    "BayesToken",
    "BlockRule",
    "CatchAllPolicy",
    "Counter",
    "Domain",
    "HoldState",
    "LoginAttempt",
    "MailEvent",
    "ReplyMode",
    "ReverseAlias",
    "MessageSample",
    "QuarantinedMessage",
    "SenderBlock",
    "SiteDay",
    "SiteKnownSender",
    "SiteLeak",
    "SiteLeakSummary",
    "SiteSender",
    "User",
    "UserBayesLearned",
    "UserBayesToken",
    "utcnow",
]
