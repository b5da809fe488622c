"""Is this sender blocked for this recipient? :func:`blocked_for` is the one function
that says so; lookupd's sender_access map, the scanner's BLOCKLISTED symbol, the milter's
verdict, the report's "blocked" column and the web buttons all ask it.

Three kinds of block:

* **server-wide rules** (``block_rules``, what Postfix's header_checks table and the
  sender_access map hold), judged as Postfix judges them:

  - the envelope sender (MAIL FROM) is refused when its domain or a parent domain is
    one a rule names: a domain rule, or an imported/regex rule that is just an escaped
    domain (``/massnews\\.gr/``), exactly what the sender_access map refuses;
  - the message's header lines are refused as header_checks refuses them: a domain
    rule matches a domain (or subdomain) written after ``@`` or ``.`` in From:,
    Reply-To:, Sender: or Return-Path: (what its ``/^(From|...):.*[@.]domain.../``
    pattern matches); any other rule's pattern is matched against every logical header
    line (``Name: value``, continuation lines joined by a newline, bytes read as
    Latin-1 as PCRE sees them) with Postfix's pcre defaults (case-insensitive, ``.``
    matches a newline; the ``i``, ``m``, ``s``, ``x`` flags toggle, ``A`` anchors).
    Python's ``re`` evaluates them; a pattern it cannot compile (PCRE-only syntax) is
    judged by the domain it names, if any, and logged. MIME part headers (which
    Postfix also checks, through mime_header_checks) are not looked at.

* **per-user blocks**: a domain (and its subdomains) or an address, refused for every
  alias of one user;
* **per-alias blocks**: the same, for one alias.

Per-user and per-alias blocks match the envelope sender and the From: address: the two
identities the report shows. They exist only in the milter; Postfix never sees them.
"""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from aliasd.core.block_protection import covering
from aliasd.core.block_sender import Sender, sender_address_of
from aliasd.core.blocking import KIND_DOMAIN, SENDER_HEADERS, list_rules, rule_domain
from aliasd.db import Database
from aliasd.models import BlockRule, SenderBlock

log = logging.getLogger(__name__)

SCOPE_SERVER = "server"
SCOPE_USER = "user"
SCOPE_ALIAS = "alias"
USER_REJECT_TEXT = "The recipient does not accept mail from this sender"

_SENDER_HEADERS = frozenset(h.lower() for h in SENDER_HEADERS)
# A host-name run as PCRE's ASCII \w sees it; the domain rule's end condition
# (?![\w-]|\.[\w-]) makes a rule match exactly such a whole run (or a dot-suffix of it).
_HOST_RUN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")


# --- the snapshot of every block ------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """Why a sender is blocked: which rule or block, of which scope."""

    scope: str  # server | user | alias
    id: int  # a block_rules id (server) or a sender_blocks id
    matched: str  # the domain, address or pattern that matched
    reject_text: str

    @property
    def server_wide(self) -> bool:
        return self.scope == SCOPE_SERVER


@dataclass(frozen=True)
class _ServerRule:
    id: int
    reject_text: str
    pattern: str
    literal: str | None = None  # lower-case text a case-insensitive literal rule looks for
    regex: re.Pattern | None = None
    anchored: bool = False


@dataclass
class BlockList:
    """Every enabled block at one moment. Immutable once built; share it freely."""

    envelope_domains: dict[str, _ServerRule] = field(default_factory=dict)
    header_domains: dict[str, _ServerRule] = field(default_factory=dict)
    header_rules: list[_ServerRule] = field(default_factory=list)
    user_blocks: dict[int, dict[str, int]] = field(default_factory=dict)  # owner → sender → id
    alias_blocks: dict[int, dict[str, int]] = field(default_factory=dict)  # alias → sender → id

    def server_rule_count(self) -> int:
        return len({r.id for r in (*self.envelope_domains.values(), *self.header_domains.values(),
                                   *self.header_rules)})  # fmt: skip

    def domains_of(self, owner_id: int | None = None) -> set[str]:
        """Every domain a server rule (or ``owner_id``'s own domain block) names: the
        report narrows its candidate rows with it before asking :func:`blocked_for`."""
        names = set(self.envelope_domains) | set(self.header_domains)
        if owner_id is not None:
            names |= {s for s in self.user_blocks.get(owner_id, {}) if "@" not in s}
        return names


@functools.lru_cache(maxsize=65536)
def postfix_pattern(pattern: str) -> tuple[re.Pattern | None, bool]:
    """``/body/flags`` as a Python regex with Postfix's pcre defaults, and whether it
    is anchored (the A flag). (None, False) when Python cannot compile it."""
    if not pattern.startswith("/"):
        return None, False
    body, _, flags = pattern[1:].rpartition("/")
    options = {"i": True, "s": True, "m": False, "x": False}
    for flag in flags:
        if flag in options:
            options[flag] = not options[flag]
    re_flags = ((re.IGNORECASE if options["i"] else 0) | (re.DOTALL if options["s"] else 0)
                | (re.MULTILINE if options["m"] else 0) | (re.VERBOSE if options["x"] else 0))
    try:
        return re.compile(body, re_flags), "A" in flags
    except (re.error, RecursionError, OverflowError) as exc:
        log.warning("block rule %s cannot be evaluated here (%s); judged by its domain only",
                    pattern[:100], exc)
        return None, False


_ESCAPED_LITERAL = re.compile(r"(?:[A-Za-z0-9_-]|\\[^A-Za-z0-9])+")


def _server_rule(rule) -> _ServerRule:
    pattern = rule.pattern or ""
    body, _, flags = pattern[1:].rpartition("/") if pattern.startswith("/") else ("", "", "")
    text = rule.reject_text or f"Blocked id={rule.id}"
    if body and _ESCAPED_LITERAL.fullmatch(body) and not set(flags) & set("iAx"):
        # A plain escaped text (most imported rules): a substring test is the same
        # match as the regex, and far cheaper over thousands of rules.
        literal = re.sub(r"\\(.)", r"\1", body).lower()
        return _ServerRule(rule.id, text, pattern, literal=literal)
    regex, anchored = postfix_pattern(pattern)
    return _ServerRule(rule.id, text, pattern, regex=regex, anchored=anchored)


def load_blocklist(
    session: Session, *, server_only: bool = False, rules: Iterable[BlockRule] | None = None
) -> BlockList:
    """Read every enabled block (``server_only``: the server-wide rules only; ``rules``:
    the enabled server rules when the caller has read them already)."""
    blocklist = BlockList()
    for rule in list_rules(session, enabled_only=True) if rules is None else rules:
        compiled = _server_rule(rule)
        domain = rule_domain(rule)
        if domain and domain not in blocklist.envelope_domains:
            blocklist.envelope_domains[domain] = compiled
        if rule.kind == KIND_DOMAIN:
            blocklist.header_domains.setdefault(rule.value, compiled)
        else:
            blocklist.header_rules.append(compiled)
    if not server_only:
        rows = session.execute(
            select(SenderBlock.id, SenderBlock.owner_id, SenderBlock.alias_id, SenderBlock.sender)
            .order_by(SenderBlock.id)
        )
        for block_id, owner_id, alias_id, sender in rows:
            if alias_id is None:
                blocklist.user_blocks.setdefault(owner_id, {}).setdefault(sender, block_id)
            else:
                blocklist.alias_blocks.setdefault(alias_id, {}).setdefault(sender, block_id)
    return blocklist


# --- the decision -----------------------------------------------------------------------
def _header_domain_hit(lines: Iterable[str], rules: dict[str, _ServerRule]) -> tuple[str, _ServerRule] | None:
    for line in lines:
        name, _, value = line.partition(":")
        if name.lower() not in _SENDER_HEADERS:
            continue
        for run in _HOST_RUN.finditer(value):
            host = run.group(0).lower()
            whole = run.start() > 0 and value[run.start() - 1] in "@."
            labels = host.split(".")
            for i in range(0 if whole else 1, len(labels)):
                rule = rules.get(".".join(labels[i:]))
                if rule is not None:
                    return ".".join(labels[i:]), rule
    return None


def _header_rule_hit(lines: tuple[str, ...], rules: list[_ServerRule]) -> _ServerRule | None:
    if not rules or not lines:
        return None
    # Literals hold no newline, so one search over the joined lines is the same test
    # as one per line, and much cheaper over thousands of rules.
    joined = "\n".join(lines).lower()
    for rule in rules:
        if rule.literal is not None:
            if rule.literal in joined:
                return rule
        elif rule.regex is not None:
            test = rule.regex.match if rule.anchored else rule.regex.search
            if any(test(line) for line in lines):
                return rule
    return None


def _personal_hit(blocks: dict[str, int] | None, sender: Sender) -> tuple[str, int] | None:
    if not blocks:
        return None
    for address in (sender_address_of(sender.envelope), sender.from_address):
        if address and address in blocks:
            return address, blocks[address]
    for domain in (sender.envelope_domain, sender.from_domain):
        hit = covering(domain, blocks)
        if hit is not None:
            return hit, blocks[hit]
    return None


def server_block(blocklist: BlockList, sender: Sender) -> Block | None:
    """The server-wide rule refusing ``sender`` for everyone, if any."""
    hit = covering(sender.envelope_domain, blocklist.envelope_domains)
    if hit is not None:
        rule = blocklist.envelope_domains[hit]
        return Block(SCOPE_SERVER, rule.id, hit, rule.reject_text)
    found = _header_domain_hit(sender.header_lines, blocklist.header_domains)
    if found is not None:
        domain, rule = found
        return Block(SCOPE_SERVER, rule.id, domain, rule.reject_text)
    rule = _header_rule_hit(sender.header_lines, blocklist.header_rules)
    if rule is not None:
        return Block(SCOPE_SERVER, rule.id, rule.pattern, rule.reject_text)
    return None


def blocked_for(
    blocklist: BlockList,
    sender: Sender,
    *,
    owner_id: int | None = None,
    alias_id: int | None = None,
) -> Block | None:
    """Whether ``sender`` is blocked for a recipient: the alias ``alias_id`` of user
    ``owner_id`` (either may be None: then only the blocks that need no such context).
    Server-wide rules come first (they refuse the message for everyone), then the
    alias's own blocks, then the user's."""
    return server_block(blocklist, sender) or personal_block(
        blocklist, sender, owner_id=owner_id, alias_id=alias_id
    )


def personal_block(
    blocklist: BlockList, sender: Sender, *, owner_id: int | None, alias_id: int | None
) -> Block | None:
    """The recipient's own part of :func:`blocked_for` (for callers that judged the
    server-wide rules once for a message with many recipients)."""
    if alias_id is not None:
        hit = _personal_hit(blocklist.alias_blocks.get(alias_id), sender)
        if hit is not None:
            return Block(SCOPE_ALIAS, hit[1], hit[0], USER_REJECT_TEXT)
    if owner_id is not None:
        hit = _personal_hit(blocklist.user_blocks.get(owner_id), sender)
        if hit is not None:
            return Block(SCOPE_USER, hit[1], hit[0], USER_REJECT_TEXT)
    return None


# --- a cached copy for the mail path ----------------------------------------------------
def fingerprint(session: Session) -> tuple:
    """A cheap summary that changes whenever a block is added, removed, enabled or
    disabled (rules are never edited otherwise): re-reading thousands of rules only
    when it changes keeps a 2 s refresh cheap."""
    enabled_ids = func.sum(case((BlockRule.enabled.is_(True), BlockRule.id), else_=0))
    rules = session.execute(select(func.count(), func.max(BlockRule.id), enabled_ids)).one()
    personal = session.execute(
        select(func.count(), func.max(SenderBlock.id), func.sum(SenderBlock.id))
    ).one()
    return tuple(rules) + tuple(personal)


class BlockListCache:
    """The block list of one process, re-read at most every ``ttl`` seconds. When the
    database cannot be read, the last copy serves while younger than ``max_staleness``;
    after that :meth:`get` raises, and the caller decides (the milter passes the
    message marked unscanned; nothing is refused on a guess)."""

    def __init__(
        self,
        database: Database,
        *,
        ttl: float = 2.0,
        max_staleness: float = 60.0,
        server_only: bool = False,
    ) -> None:
        self.database = database
        self.ttl = ttl
        self.max_staleness = max_staleness
        self.server_only = server_only
        self._blocklist: BlockList | None = None
        self._loaded_at = float("-inf")
        self._fingerprint: tuple | None = None
        self._lock = threading.Lock()

    def get(self) -> BlockList:
        now = time.monotonic()
        current = self._blocklist
        if current is not None and now - self._loaded_at < self.ttl:
            return current
        with self._lock:
            if self._blocklist is not None and time.monotonic() - self._loaded_at < self.ttl:
                return self._blocklist
            try:
                with self.database.session() as session:
                    mark = fingerprint(session)
                    if self._blocklist is not None and mark == self._fingerprint:
                        fresh = self._blocklist
                    else:
                        fresh = load_blocklist(session, server_only=self.server_only)
            except Exception:
                if self._blocklist is not None and now - self._loaded_at < self.max_staleness:
                    log.warning("block list not re-read; using the copy from %.0f s ago",
                                now - self._loaded_at)
                    return self._blocklist
                raise
            self._blocklist, self._loaded_at, self._fingerprint = fresh, now, mark
            return fresh

    def invalidate(self) -> None:
        with self._lock:
            self._loaded_at = float("-inf")
