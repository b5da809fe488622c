"""What the spam-source report groups an alias under: its site, or the address itself
when the alias was never tied to a site (it still identifies who leaked it). The one
place that rule lives, in Python and in SQL."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_

from aliasd.models import Alias


def report_site_of(site: str | None, address: str) -> str:
    return site or address


def aliases_under(site: str) -> ColumnElement[bool]:
    """SQL condition: the aliases the report shows under ``site``."""
    return or_(Alias.site == site, and_(Alias.site.is_(None), Alias.address == site))
