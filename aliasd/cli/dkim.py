"""aliasd dkim list | rotate DOMAIN"""

from __future__ import annotations

import click

from aliasd.cli.common import state
from aliasd.core import aliases as core
from aliasd.mailauth import keys, records


@click.group("dkim")
def dkim_group() -> None:
    """DKIM keys of the managed domains (used for ARC seals and signatures)."""


def _managed_domains() -> list[str]:
    """Managed domains and the reverse-alias domain: each signs with keys of its own."""
    with state().database().session() as session:
        names = [d.name for d in core.list_domains(session)]
    return records.dns_domains(state().settings, names)


@dkim_group.command("list")
def list_keys() -> None:
    """Each managed domain's keys (and the reverse-alias domain's): selector,
    algorithm, created, state."""
    settings = state().settings
    for domain in _managed_domains():
        try:
            published = keys.published_keys(settings, domain)
        except keys.DkimKeyError as exc:
            click.echo(f"{domain}\t(error: {exc})")
            continue
        for key in published:
            status = f"retiring, published until {key.retire_after}" if key.retire_after else "signing"
            click.echo(f"{domain}\t{key.selector}\t{key.algorithm}\t{key.created}\t{status}")


@dkim_group.command("rotate")
@click.argument("domain")
@click.option("--overlap-days", type=click.IntRange(min=0), default=None,
              help="Days the old key stays published (default: dkim_rotation_overlap_days).")
def rotate(domain: str, overlap_days: int | None) -> None:
    """New keys for DOMAIN (a managed domain or the reverse-alias domain); the old ones
    stay published for the overlap period."""
    settings = state().settings
    if domain.lower().rstrip(".") not in _managed_domains():
        raise click.ClickException(f"{domain} is not a managed domain")
    try:
        new = keys.rotate(settings, domain, overlap_days)
    except keys.DkimKeyError as exc:
        raise click.ClickException(str(exc)) from exc
    for key in new:
        click.echo(f"new key {key.selector} ({key.algorithm}) for {key.domain}; publish:")
        click.echo(f'{key.dns_name}. 3600 IN TXT "{key.dns_txt()}"')
    click.echo("run `aliasd dns DOMAIN` for every record to publish")


def register(group: click.Group) -> None:
    group.add_command(dkim_group)
