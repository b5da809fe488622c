"""One-click links carried in forwarded mail: a signed, expiring token (HMAC through
itsdangerous, keyed by the server's secret key) naming exactly one action on one
alias: disable it, or block one sender for it. Whoever holds the link may do that one
thing without signing in, and nothing else; a forged, altered or expired token does
nothing at all. The alias is named by its number and its address: a number alone could
name another user's alias later (SQLite hands a forgotten alias's number out again)."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from aliasd.config import Settings
from aliasd.core import aliases as core_aliases
from aliasd.core import sender_blocks
from aliasd.core.errors import AliasdError
from aliasd.core.sender_blocks import SenderBlockError, normalize_sender
from aliasd.models import Alias, AliasState

SALT = "aliasd-oneclick-v1"
DISABLE = "disable"
BLOCK = "block"


class LinkInvalid(AliasdError):
    """The link was altered, forged or made with another key."""


class LinkExpired(AliasdError):
    pass


@dataclass(frozen=True)
class OneClick:
    action: str  # DISABLE | BLOCK
    alias_id: int
    sender: str | None = None  # BLOCK: the sender address or domain to block
    address: str | None = None  # the alias's address when the link was made
    # Read from a token: its mark of the address (None in links made before links
    # carried one), and when it was signed.
    mark: str | None = None
    issued_at: dt.datetime | None = None


def _mark(address: str) -> str:
    """A short fingerprint of an alias address (a link stays short whatever its length)."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()[:16]


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.secret_key, salt=SALT)


def make_token(settings: Settings, click: OneClick) -> str:
    payload = {"a": click.action, "i": click.alias_id}
    if click.sender:
        payload["s"] = click.sender
    if click.address:
        payload["d"] = _mark(click.address)
    return _serializer(settings).dumps(payload)


def read_token(settings: Settings, token: str) -> OneClick:
    """The action a token names; LinkInvalid / LinkExpired otherwise."""
    try:
        payload, issued_at = _serializer(settings).loads(
            token, max_age=settings.oneclick_max_age_days * 86400, return_timestamp=True)
    except SignatureExpired as exc:
        raise LinkExpired("this link has expired; sign in to manage the alias") from exc
    except BadSignature as exc:
        raise LinkInvalid("this link is not valid (altered or not made by this server)") from exc
    if not isinstance(payload, dict) or payload.get("a") not in (DISABLE, BLOCK) \
            or not isinstance(payload.get("i"), int) \
            or not isinstance(payload.get("d"), str | None):
        raise LinkInvalid("this link is not valid")
    return OneClick(payload["a"], payload["i"], payload.get("s"), mark=payload.get("d"),
                    issued_at=issued_at)


def _alias_of(session: Session, click: OneClick) -> Alias | None:
    """The alias the link was made for, or None when it is gone, even if its number now
    belongs to another alias. A link without an address mark (made before links carried
    one, and valid at most ``oneclick_max_age_days`` after) names an alias that existed
    when it was signed; its time is in whole seconds, hence the second's grace."""
    alias = session.get(Alias, click.alias_id)
    if alias is None:
        return None
    if click.mark is not None:
        return alias if click.mark == _mark(alias.address) else None
    if click.issued_at is not None and alias.created_at >= click.issued_at + dt.timedelta(seconds=1):
        return None
    return alias


def sender_to_block(from_address: str | None, envelope_sender: str | None) -> str | None:
    """Whom a block link names: the From: address the owner sees, which stays the same
    from one mailing to the next (bulk mail has a new bounce address, VERP, for every
    message, so blocking that would stop nothing); else the envelope sender."""
    for candidate in (from_address, envelope_sender):
        if candidate:
            try:
                return normalize_sender(candidate)
            except SenderBlockError:
                continue
    return None


def link(settings: Settings, click: OneClick) -> str | None:
    """The URL of the one-click page, or None when ``web_base_url`` is not set."""
    if not settings.web_base_url:
        return None
    return f"{settings.web_base_url.rstrip('/')}/oneclick/{make_token(settings, click)}"


def describe(session: Session, click: OneClick) -> str:
    alias = _alias_of(session, click)
    address = alias.address if alias else "(an alias that no longer exists)"
    if click.action == DISABLE:
        return f"Disable the alias {address}"
    return f"Block {click.sender} for the alias {address}"


def apply(session: Session, click: OneClick) -> str:
    """Do what the link names; returns what was done, fit to show."""
    alias = _alias_of(session, click)
    if alias is None or alias.state in (AliasState.DELETED.value, AliasState.BURNED.value):
        raise AliasdError("this alias no longer exists")
    if click.action == DISABLE:
        if alias.state == AliasState.DISABLED.value:
            return f"{alias.address} was already disabled"
        core_aliases.set_state(session, alias, AliasState.DISABLED.value)
        return f"{alias.address} is disabled: mail to it is now refused"
    if not click.sender:
        raise LinkInvalid("this link is not valid")
    block = sender_blocks.add_block(session, alias.owner_id, click.sender, alias=alias,
                                    note="one-click link in forwarded mail")
    return f"{block.sender} is blocked for {alias.address}"
