"""What a managed domain needs beyond its row: DKIM keys (and, server-wide, the SRS
secret). Run when a domain is added, and for every domain by ``aliasd db upgrade``, so
installations that predate the keys get them; signing creates a missing key on first
use as well."""

from __future__ import annotations

import logging

from aliasd.config import Settings
from aliasd.db import Database
from aliasd.mailauth import keys, records

log = logging.getLogger(__name__)


def provision_domain(settings: Settings, domain: str) -> list[keys.SigningKey]:
    """The domain's DKIM keys, created if missing. A failure is logged, never raised:
    the domain works without them (mail is then forwarded unsealed)."""
    try:
        return keys.ensure_keys(settings, domain)
    except (keys.DkimKeyError, OSError) as exc:
        log.warning("DKIM keys for %s could not be created: %s", domain, exc)
        return []


def provision_all(settings: Settings, database: Database) -> list[str]:
    """Keys for every managed domain (and the reverse-alias domain) and the SRS secret;
    lines saying what was made."""
    from sqlalchemy import select

    from aliasd.mailauth import srs_secret
    from aliasd.models import Domain

    lines = []
    if srs_secret.ensure_secret(settings):
        lines.append(f"SRS secret created in {srs_secret.secret_file(settings)}")
    with database.engine.connect() as conn:
        names = list(conn.scalars(select(Domain.name).order_by(Domain.id)))
    before = set(keys.known_domains(settings))
    for name in records.dns_domains(settings, names):
        made = provision_domain(settings, name)
        if made and name not in before:
            lines.append(f"DKIM key {made[0].selector} created for {name}")
    return lines
