"""Blocking policy: which senders are refused, and the rules that say so.

A rule is a row of ``block_rules``; its id is stable and appears in the reject text, so a
sender (or the admin reading a bounce) can name the rule. Two kinds:

* ``sender_domain`` – built by aliasd from a domain (auto-block, the block button, the CLI);
  the domain is normalised and every character escaped, so user data never becomes regex
  syntax. It is matched in the From/Reply-To/Sender/Return-Path headers only.
* ``regex`` – a pattern an admin wrote or imported; Postfix's parser checks it before it
  is ever written to the live table.

The rules reach Postfix twice: as the header_checks pcre table (published after each
commit that changes a rule, by aliasd.postfix.publisher) and as an access(5) map for
check_sender_access served by lookupd (aliasd.lookup.access_map). This module only
decides; it never writes files or runs Postfix commands.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core import protected_senders
from aliasd.core.addresses import AddressError, normalize_domain
from aliasd.core.block_protection import (
    covering,
    exempt_domains,
    is_protected,
    protected_domains,
    server_block_refusal,
)
from aliasd.core.errors import AliasdError, NotFound
from aliasd.core.ordinary_mail import ordinary_header_matched, why_too_broad
from aliasd.core.pcre_syntax import (  # noqa: F401 - re-exported: callers use blocking.*
    SENDER_HEADERS,
    PatternError,
    domain_pattern,
    escaped_domain,
    pcre_escape,
)
from aliasd.models import BlockRule, MailEvent, utcnow

KIND_DOMAIN = "sender_domain"
KIND_REGEX = "regex"
SOURCES = ("auto", "manual", "imported")

class BlockError(AliasdError):
    """A rule could not be added or changed; the message says why."""


# --- patterns (syntax in aliasd.core.pcre_syntax) -----------------------------------
def format_reject_text(settings: Settings, rule_id: int) -> str:
    """The configured reject text with ``{id}`` replaced (replace, not str.format, so a
    brace typed in the setting cannot raise)."""
    template = settings.blocklist_reject_text or "Blocked id={id}"
    result = template.replace("{id}", str(rule_id))
    # Reject text must stay on one line of printable ASCII for Postfix; any blank
    # (newline, tab, non-breaking space) becomes a plain space.
    result = "".join(" " if c.isspace() else c for c in result)
    return " ".join("".join(c for c in result if 32 <= ord(c) < 127).split())


def rule_domain(rule: BlockRule) -> str | None:
    """The sender domain a rule blocks, if it is a plain domain rule: ours, or an imported
    ``/massnews\\.gr/``-style pattern. None for other regexes."""
    if rule.kind == KIND_DOMAIN:
        return rule.value
    candidate = escaped_domain(rule.value or "")
    if candidate:
        try:
            return normalize_domain(candidate)
        except AddressError:
            return None
    return None


# --- rules ------------------------------------------------------------------------------
def _use_id(session: Session, wanted_id: int | None) -> int | None:
    """``wanted_id`` when no rule has it yet (imports keep the ids senders were told)."""
    if wanted_id is None or wanted_id < 1:
        return None
    if session.get(BlockRule, wanted_id) is not None:
        return None
    return wanted_id


def _sync_sequence(session: Session) -> None:
    """After inserting explicit ids, move PostgreSQL's sequence past them."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text(
                "SELECT setval(pg_get_serial_sequence('block_rules', 'id'), "
                "(SELECT COALESCE(MAX(id), 1) FROM block_rules))"
            )
        )


def _new_rule(
    session: Session,
    settings: Settings,
    *,
    kind: str,
    value: str,
    pattern: str,
    source: str,
    owner_id: int | None,
    note: str | None,
    enabled: bool = True,
    wanted_id: int | None = None,
    reject_text: str | None = None,
    force: bool = False,
) -> BlockRule:
    if source not in SOURCES:
        raise BlockError(f"unknown rule source {source!r}")
    # ``force`` is an admin who means it: freemail domains are in the ordinary-mail
    # baseline precisely so that only a forced block can refuse them.
    if enabled and not force and (header := ordinary_header_matched(pattern)) is not None:
        raise BlockError(f"rule refused: {why_too_broad(pattern, header)}")
    rule = BlockRule(
        kind=kind,
        value=value,
        pattern=pattern,
        reject_text="",
        source=source,
        enabled=enabled,
        owner_id=owner_id,
        note=note,
    )
    explicit = _use_id(session, wanted_id)
    if explicit is not None:
        rule.id = explicit
    session.add(rule)
    session.flush()  # the id is part of the reject text
    if explicit is not None:
        _sync_sequence(session)
    rule.reject_text = reject_text or format_reject_text(settings, rule.id)
    session.flush()
    return rule


def _lock_rules(session: Session) -> None:
    """One rule writer at a time until this transaction ends, so milters on several
    processes or hosts reaching the threshold together add one rule, not one each."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(7243110)"))
    else:  # a write, even one matching no row, takes SQLite's database write lock
        session.execute(text("UPDATE block_rules SET id = id WHERE id < 0"))


def find_domain_rule(session: Session, domain: str) -> BlockRule | None:
    return session.scalar(
        select(BlockRule)
        .where(BlockRule.kind == KIND_DOMAIN, BlockRule.value == domain)
        .order_by(BlockRule.id)
        .limit(1)
    )


def block_domain(
    session: Session,
    settings: Settings,
    domain: str,
    *,
    source: str = "manual",
    owner_id: int | None = None,
    note: str | None = None,
    force: bool = False,
) -> BlockRule:
    """Block a sender domain for everyone; idempotent (an existing rule is returned, and
    re-enabled when a person asks again). A served, mailbox or exempt domain is refused
    (BlockError) unless ``force`` (an admin at the command line who means it)."""
    try:
        domain = normalize_domain(domain)
    except AddressError as exc:
        raise BlockError(f"cannot block {domain!r}: {exc}") from exc
    if not force:
        refusal = server_block_refusal(session, settings, domain)
        if refusal:
            raise BlockError(refusal)
    _lock_rules(session)
    existing = find_domain_rule(session, domain)
    if existing is not None:
        if not existing.enabled and source != "auto":
            existing.enabled = True
        return existing
    return _new_rule(
        session,
        settings,
        kind=KIND_DOMAIN,
        value=domain,
        pattern=domain_pattern(domain),
        source=source,
        owner_id=owner_id,
        note=note,
        force=force,
    )


def add_regex_rule(
    session: Session,
    settings: Settings,
    body: str,
    flags: str = "",
    *,
    source: str = "manual",
    owner_id: int | None = None,
    note: str | None = None,
    enabled: bool = True,
    wanted_id: int | None = None,
    force: bool = False,
) -> BlockRule:
    """Add a raw pcre rule ``/body/flags``. The caller must have had Postfix check it
    (header_checks.check_rule_line); here only what would break the line is refused,
    and a rule that is just a protected domain (served, mailbox, exempt): refused, or
    for an import kept disabled, unless ``force``."""
    if not body or any(ord(c) < 32 for c in body):
        raise BlockError("a pattern must be non-empty and on one line")
    if re.search(r"(?<!\\)(?:\\\\)*/", body):
        raise BlockError("escape '/' inside the pattern as '\\/'")
    if any(c not in "imsxAEUX" for c in flags):
        raise BlockError(f"unknown pcre flags {flags!r} (Postfix accepts i m s x A E U X)")
    pattern = f"/{body}/{flags}"
    existing = find_pattern(session, pattern)
    if existing is not None:
        return existing
    named = rule_domain(BlockRule(kind=KIND_REGEX, value=body))
    refusal = None if force or not named else server_block_refusal(session, settings, named)
    if refusal and source != "imported":
        raise BlockError(refusal)
    if refusal and enabled:
        enabled = False
        note = f"{note + '; ' if note else ''}imported disabled: {refusal}"
    return _new_rule(
        session,
        settings,
        kind=KIND_REGEX,
        value=body,
        pattern=pattern,
        source=source,
        owner_id=owner_id,
        note=note,
        enabled=enabled,
        wanted_id=wanted_id,
        force=force,
    )


def find_pattern(session: Session, pattern: str) -> BlockRule | None:
    return session.scalar(select(BlockRule).where(BlockRule.pattern == pattern).limit(1))


def get_rule(session: Session, rule_id: int) -> BlockRule:
    rule = session.get(BlockRule, rule_id)
    if rule is None:
        raise NotFound(f"no block rule with id {rule_id}")
    return rule


def set_enabled(session: Session, settings: Settings, rule_id: int, enabled: bool, *,
                force: bool = False) -> BlockRule:
    """Enable or disable a rule. Enabling one that names a served, mailbox or exempt
    domain (an import keeps such a rule disabled) is refused (BlockError) unless
    ``force``, as adding it would be."""
    rule = get_rule(session, rule_id)
    if enabled and not rule.enabled and not force:
        named = rule_domain(rule)
        refusal = server_block_refusal(session, settings, named) if named else None
        if refusal:
            raise BlockError(f"rule {rule.id} stays disabled: {refusal}")
    rule.enabled = enabled
    session.flush()
    return rule


def list_rules(session: Session, *, enabled_only: bool = False) -> list[BlockRule]:
    query = select(BlockRule).order_by(BlockRule.id)
    if enabled_only:
        query = query.where(BlockRule.enabled.is_(True))
    return list(session.scalars(query))


def blocked_domains(session: Session) -> dict[str, BlockRule]:
    """Enabled rules that block a whole sender domain, by domain (for the access map and
    the report's "blocked" column)."""
    out: dict[str, BlockRule] = {}
    for rule in list_rules(session, enabled_only=True):
        domain = rule_domain(rule)
        if domain and domain not in out:
            out[domain] = rule
    return out


def is_domain_blocked(domain: str | None, blocked: dict[str, Any]) -> bool:
    """Whether ``domain`` or one of its parent domains is in ``blocked``."""
    return covering(domain, blocked) is not None


def record_hits(session: Session, hits: dict[int, int], at: dt.datetime | None = None) -> None:
    """Add counted hits (from the access map) to their rules."""
    when = at or utcnow()
    for rule_id, count in hits.items():
        rule = session.get(BlockRule, rule_id)
        if rule is not None:
            rule.hits = (rule.hits or 0) + count
            rule.last_hit_at = when


# --- auto-block policy ------------------------------------------------------------------
def spam_count(session: Session, owner_id: int, domain: str, since: dt.datetime) -> int:
    """Spam from ``domain`` (envelope or From:) to one user's aliases since ``since``.
    Bounded by the (owner_id, at) index: one user's recent events only."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(MailEvent)
            .where(
                MailEvent.owner_id == owner_id,
                MailEvent.at >= since,
                MailEvent.is_spam.is_(True),
                or_(MailEvent.sender_domain == domain, MailEvent.from_domain == domain),
            )
        )
        or 0
    )


@dataclass
class _EventView:
    owner_id: int | None
    is_spam: bool
    domains: list[str]
    at: dt.datetime


def _view(event: Any) -> _EventView:
    domains = []
    for attr in ("sender_domain", "from_domain"):
        value = getattr(event, attr, None)
        if value:
            try:
                value = normalize_domain(value)
            except AddressError:
                continue
            if value not in domains:
                domains.append(value)
    return _EventView(
        owner_id=getattr(event, "owner_id", None),
        is_spam=bool(getattr(event, "is_spam", False)),
        domains=domains,
        at=getattr(event, "at", None) or utcnow(),
    )


def after_spam_event(session: Session, settings: Settings, event: Any) -> list[BlockRule]:
    """Called by the mail path after recording a mail event (a MailEvent, flushed or
    not). When a sender domain has now sent ``autoblock_threshold`` spam within
    ``autoblock_period_hours`` to this user's aliases, a rule is added (once; a rule the
    user disabled is left disabled). Returns the rules added; the header_checks table is
    published after the caller's transaction commits (aliasd.postfix.publisher)."""
    view = _view(event)
    if not settings.autoblock_enabled or not view.is_spam or view.owner_id is None:
        return []
    if not view.domains:
        return []
    session.flush()  # count the event being recorded
    since = utcnow() - dt.timedelta(hours=settings.autoblock_period_hours)
    # Auto-block adds server-wide rules: never for served, mailbox or exempt domains.
    protected: set[str] | None = None
    added: list[BlockRule] = []
    already: dict[str, BlockRule] | None = None
    for domain in view.domains:
        if find_domain_rule(session, domain) is not None:
            continue  # blocked, or a rule someone disabled
        if already is None:
            already = blocked_domains(session)
        if is_domain_blocked(domain, already):
            continue  # covered by a parent domain or an imported /domain\.tld/ rule
        if spam_count(session, view.owner_id, domain, since) < settings.autoblock_threshold:
            continue
        if protected is None:
            protected = protected_domains(session) | exempt_domains(settings)
            # and the senders known to belong to any of this user's sites
            protected |= protected_senders.for_user(
                session, view.owner_id, settings.attribution_affiliations_file
            )
        if is_protected(domain, protected):
            continue
        if ordinary_header_matched(domain_pattern(domain)) is not None:
            continue  # e.g. gmail.com: a block would refuse ordinary mail for everyone
        rule = block_domain(
            session,
            settings,
            domain,
            source="auto",
            owner_id=view.owner_id,
            force=True,  # checked above against the same protected set
            note=(
                f"{settings.autoblock_threshold}+ spam within "
                f"{settings.autoblock_period_hours} h"
            ),
        )
        added.append(rule)
    return added


def rule_lines(rules: Iterable[BlockRule]) -> list[tuple[int, str, str]]:
    """(id, pattern, reject text) of enabled rules in id order."""
    return [(r.id, r.pattern, r.reject_text) for r in sorted(rules, key=lambda r: r.id) if r.enabled]
