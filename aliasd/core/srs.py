"""Sender Rewriting Scheme (SRS): keep SPF passing when aliasd forwards mail.

When ``sender@bank.example`` writes to ``github.com@example.net`` and aliasd forwards the
message to the owner's mailbox provider, the provider checks SPF for ``bank.example``
against *our* IP and fails. SRS rewrites the envelope sender to an address in our own
domain that encodes the original one, signed so that only we can reverse it:

    sender@bank.example  →  SRS0=HHHH=TT=bank.example=sender@<srs_domain>

A bounce to that address comes back to us; we check the hash (HMAC-SHA1 with our secret)
and the day stamp, and send it on to ``sender@bank.example``. An address we did not sign,
that was altered, or whose stamp is older than ``srs_max_age_days`` is refused: we are
not an open relay for forged bounces.

The cryptography and the SRS0/SRS1 formats come from ``srslib`` (the Guarded scheme of
the SRS paper, libsrs2-compatible: hashes compared case-insensitively because MTAs may
change the case of local parts). This module adds the policy around it:

* **Secrets rotate**: the first of ``srs_secrets`` signs, every one verifies, so a new
  secret can be put first while bounces to addresses signed with the old one still work
  until they expire.
* **A minimum hash length**: srslib verifies a hash of any length by comparing it with
  the same-length prefix of the expected one, so a one-character hash would be guessed
  one time in 36. Hashes shorter than ``srs_hash_length`` are refused here.
* **Which senders are rewritten** (:meth:`SrsRewriter.forward`): Postfix's
  ``sender_canonical_maps`` runs in cleanup for *every* message, before Postfix knows
  where the message goes, so the map cannot see "forwarded or not". What it can see is
  whose address the sender is. Senders in our own domains (``srs_domain``, the managed
  alias domains, ``srs_exclude_domains``) are left alone: that mail is ours, SPF for those
  domains lists us, and it keeps already-rewritten ``SRS0=…@srs_domain`` senders from
  being rewritten twice when a message passes cleanup again. Every other sender is a
  foreign one whose mail reaches an aliasd MX only to be forwarded (aliases have no local
  mailboxes), so "foreign sender" is the practical test for "forwarded mail". The rare
  foreign-sender message that is delivered locally on the same host gets an SRS sender
  too; that is harmless, because the address reverses to the original sender for
  bounces, and a site that wants otherwise can switch SRS off for one service in
  master.cf (``-o sender_canonical_maps=``) or list the domain in
  ``srs_exclude_domains``.
* **SRS senders from other forwarders** follow the SRS1 rules: ``SRS0=…@hop1`` becomes
  ``SRS1=HHHH=hop1==…@<srs_domain>`` (a bounce goes straight back to hop1, which checks
  its own hash and stamp), and an ``SRS1`` address keeps its first hop and gets our hash.
* **Over-long results**: SMTP paths are limited to 256 octets (RFC 5321 4.5.3.1.3). When
  the rewritten address would exceed that, the sender is left as it is: the message
  still goes out (perhaps failing SPF) instead of being refused by the next hop.

Nothing here knows about sockets or Postfix replies beyond the shared Decision type.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import srslib

from aliasd.core.addresses import AddressError, normalize_domain
from aliasd.core.decision import Decision

if TYPE_CHECKING:  # config.Settings.validate imports this module to check SRS settings
    from aliasd.config import Settings

MIN_HASH_LENGTH = 4  # shorter hashes are guessable by brute force at RCPT time
MAX_HASH_LENGTH = 27  # base64 of a SHA-1 digest is 27 characters before its "=" padding
MAX_AGE_DAYS = 1023  # SRS day stamps count days modulo 1024
MAX_PATH = 254  # RFC 5321 path limit (256) minus the angle brackets

# "SRS0=" or "SRS1=", then the hash up to the next "=". We only ever sign with "=" (srslib
# also reads "-"/"+"), so other separators are simply not ours; the replica's catch-all
# guard checks the same "srs0="/"srs1=" prefixes.
_SRS_LOCAL = re.compile(r"^SRS[01]=", re.IGNORECASE)
_SRS_HASH = re.compile(r"^SRS[01]=([^=]+)=", re.IGNORECASE)
# Characters that would make a sender unusable or ambiguous inside a rewritten address.
_BAD_LOCAL = re.compile(r"[\s\x00-\x1f\x7f\"<>,@\\]")


class SrsConfigError(ValueError):
    """SRS settings that cannot work; the message says which and why."""


class SrsRefused(ValueError):
    """An address at the SRS domain that must not be reversed (forged, altered, expired
    or malformed). The message says why, for logs."""


@dataclass(frozen=True)
class SrsConfig:
    domain: str
    secrets: tuple[str, ...]
    hash_length: int = 4
    max_age_days: int = 21
    exclude_domains: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings, secrets: Iterable[str] | None = None
                      ) -> SrsConfig | None:  # fmt: skip
        """The SRS configuration. ``secrets`` (the generated ones when none are
        configured) given: an empty ``srs_domain`` stays empty, meaning "each managed
        domain is its own SRS domain". Without: None when no ``srs_domain`` is set."""
        if not settings.srs_domain and secrets is None:
            return None
        return cls.build(
            domain=settings.srs_domain,
            secrets=settings.srs_secrets if secrets is None else secrets,
            hash_length=settings.srs_hash_length,
            max_age_days=settings.srs_max_age_days,
            exclude_domains=settings.srs_exclude_domains,
        )

    @classmethod
    def build(
        cls,
        *,
        domain: str,
        secrets: Iterable[str],
        hash_length: int = 4,
        max_age_days: int = 21,
        exclude_domains: Iterable[str] = (),
    ) -> SrsConfig:
        """Validate and normalise; raises SrsConfigError with a clear message."""
        try:
            norm_domain = normalize_domain(domain) if domain else ""
        except AddressError as exc:
            raise SrsConfigError(f"srs_domain: {exc}") from exc
        secret_list = tuple(s for s in (str(x).strip() for x in secrets) if s)
        if not secret_list:
            raise SrsConfigError("srs_secrets: at least one non-empty secret is needed")
        if not MIN_HASH_LENGTH <= hash_length <= MAX_HASH_LENGTH:
            raise SrsConfigError(
                f"srs_hash_length must be between {MIN_HASH_LENGTH} and {MAX_HASH_LENGTH}"
            )
        if not 1 <= max_age_days <= MAX_AGE_DAYS:
            raise SrsConfigError(f"srs_max_age_days must be between 1 and {MAX_AGE_DAYS}")
        excludes = []
        for entry in exclude_domains:
            entry = entry.strip()
            if not entry:
                continue
            # ".example.com" means every subdomain of example.com (as in postsrsd).
            dot = "." if entry.startswith(".") else ""
            try:
                excludes.append(dot + normalize_domain(entry.lstrip(".")))
            except AddressError as exc:
                raise SrsConfigError(f"srs_exclude_domains: {exc}") from exc
        return cls(norm_domain, secret_list, hash_length, max_age_days, tuple(excludes))


def _split(address: str) -> tuple[str, str] | None:
    """(local part as given, normalised domain) of a map key, or None if unusable."""
    raw = (address or "").strip()
    if raw.startswith("<") and raw.endswith(">"):
        raw = raw[1:-1]
    local, at, domain = raw.rpartition("@")
    if not at or not local or not local.isascii() or _BAD_LOCAL.search(local):
        return None
    try:
        return local, normalize_domain(domain)
    except AddressError:
        return None


class SrsRewriter:
    """Forward and reverse rewriting with aliasd's policy around srslib. ``clock`` returns
    Unix seconds; tests inject one to check expiry."""

    def __init__(self, config: SrsConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._srs = srslib.SRS(
            config.secrets[0],
            prev_secrets=list(config.secrets[1:]),
            validity_days=config.max_age_days,
            hash_length=config.hash_length,
        )
        # srslib reads the time through this attribute (its own test hook); setting it
        # gives stamps and expiry checks one injectable clock.
        self._srs._time_fn = clock
        self._exact_excludes = frozenset(d for d in config.exclude_domains if d[0] != ".")
        self._suffix_excludes = tuple(d for d in config.exclude_domains if d[0] == ".")

    @property
    def domain(self) -> str:
        return self.config.domain

    # --- forward (sender_canonical_maps) -----------------------------------------------
    def is_local_sender_domain(self, domain: str, managed_domains: Container[str]) -> bool:
        """True for domains whose senders are never rewritten (see module docstring)."""
        if domain == self.config.domain or domain in self._exact_excludes:
            return True
        if any(domain.endswith(suffix) for suffix in self._suffix_excludes):
            return True
        return domain in managed_domains

    def sender_domain(self, sender: str) -> str | None:
        """The normalised domain of a sender key, or None when it is not an address we
        could rewrite (the map then answers NOTFOUND and Postfix keeps the sender)."""
        parts = _split(sender)
        return parts[1] if parts else None

    def forward(self, sender: str, managed_domains: Container[str] = ()) -> str | None:
        """The SRS sender for ``sender``, or None when it stays as it is."""
        parts = _split(sender)
        if parts is None:
            return None
        local, domain = parts
        if self.is_local_sender_domain(domain, managed_domains):
            return None
        try:
            rewritten = self._srs.forward(f"{local}@{domain}", self.config.domain)
        except srslib.Error:
            return None
        if len(rewritten) > MAX_PATH:
            return None
        return rewritten

    def forward_decision(self, sender: str, managed_domains: Container[str] = ()) -> Decision:
        rewritten = self.forward(sender, managed_domains)
        return Decision.found(rewritten) if rewritten else Decision.notfound()

    # --- reverse (recipient_canonical_maps) ---------------------------------------------
    def is_srs_recipient(self, address: str) -> bool:
        """True for ``SRS0…``/``SRS1…`` local parts at our SRS domain (any case)."""
        parts = _split(address)
        return bool(parts and parts[1] == self.config.domain and _SRS_LOCAL.match(parts[0]))

    def reverse(self, address: str) -> str:
        """Where a bounce to ``address`` must go. Raises SrsRefused for anything that is
        not a valid, unexpired SRS address signed by us (the caller decides whether that
        is "not ours" or "refuse")."""
        parts = _split(address)
        if parts is None:
            raise SrsRefused(f"{address!r} is not a usable address")
        local, domain = parts
        if domain != self.config.domain:
            raise SrsRefused(f"{address!r} is not at the SRS domain {self.config.domain}")
        if not _SRS_LOCAL.match(local):
            raise SrsRefused(f"{address!r} is not an SRS address")
        found = _SRS_HASH.match(local)
        if not found or len(found.group(1)) < self.config.hash_length:
            raise SrsRefused(f"{address!r}: the hash is missing or too short")
        try:
            original = self._srs.reverse(f"{local}@{domain}")
        except srslib.InvalidHashError as exc:
            raise SrsRefused(f"{address!r}: the hash does not verify (forged or altered)") from exc
        except srslib.InvalidTimestampError as exc:
            raise SrsRefused(f"{address!r}: the time stamp is expired or invalid") from exc
        except srslib.Error as exc:
            raise SrsRefused(f"{address!r}: malformed SRS address ({exc})") from exc
        target = _split(original)
        if target is None:
            raise SrsRefused(f"{address!r} reverses to an unusable address {original!r}")
        return f"{target[0]}@{target[1]}"

    def reverse_decision(self, address: str) -> tuple[Decision, str | None]:
        """The map answer for a recipient, and a refusal reason to log when a bounce
        address at our SRS domain was refused. Refused answers NOTFOUND: Postfix then
        asks virtual_alias_maps, which does not know SRS local parts, and smtpd rejects
        the recipient with 550 at RCPT time (no backscatter, no relaying)."""
        if not self.is_srs_recipient(address):
            return Decision.notfound(), None
        try:
            return Decision.found(self.reverse(address)), None
        except SrsRefused as exc:
            return Decision.notfound(), str(exc)


def is_srs_local_part(local: str) -> bool:
    """True for local parts that look like SRS0/SRS1 addresses; the catch-all must never
    create aliases for them (an SRS bounce we refuse must stay refused)."""
    return bool(_SRS_LOCAL.match(local or ""))
