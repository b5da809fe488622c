"""Per-user API tokens. Only a SHA-256 digest is stored: the tokens are 256-bit random,
so a slow password hash buys nothing and a fast lookup by digest is exact."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from aliasd.core.errors import AliasdError, NotFound
from aliasd.models import ApiToken, User, utcnow

TOKEN_PREFIX = "aliasd_"
# last_used_at is written at most this often per token, not on every API call.
_TOUCH_EVERY = dt.timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_token(session: Session, user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token; returns the row and the plain token, which is never stored."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise AliasdError("a token needs a name of 1 to 100 characters")
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name, token_hash=digest(plain), prefix=plain[:14])
    session.add(row)
    session.flush()
    return row, plain


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    return list(
        session.scalars(
            select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)
        )
    )


def revoke_token(session: Session, user: User, token_id: int) -> None:
    row = session.get(ApiToken, token_id)
    if row is None or row.user_id != user.id:
        raise NotFound("no such token")
    session.delete(row)


def user_for_token(session: Session, token: str) -> User | None:
    """The owner of ``token``, or None; refreshes the token's last use."""
    if not token or len(token) > 200:
        return None
    wanted = digest(token)
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == wanted))
    if row is None or not hmac.compare_digest(row.token_hash, wanted):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > _TOUCH_EVERY:
        row.last_used_at = now
    return row.user
