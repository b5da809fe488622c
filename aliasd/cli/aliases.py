"""aliasd alias add | list | disable | enable | burn | delete | forget"""

from __future__ import annotations

import click
from sqlalchemy import or_, select

from aliasd.cli.common import fail_on_domain_errors, state
from aliasd.core import aliases as core
from aliasd.models import Alias, AliasState, User


@click.group("alias")
def alias_group() -> None:
    """Aliases: one address per site."""


@alias_group.command("add")
@click.argument("address")
@click.option("--owner", required=True)
@click.option("--site", help="The site this address is given to (URL or host name).")
@click.option("--dest", "destinations", multiple=True, help="Destination; repeatable. Default: owner's mailbox.")
@click.option("--note")
@fail_on_domain_errors
def add(address: str, owner: str, site: str | None, destinations: tuple[str, ...],
        note: str | None) -> None:
    """Create an alias."""
    with state().database().session() as session:
        user = core.get_user(session, owner)
        alias = core.create_alias(
            session, address, user, site=site, destinations=list(destinations) or None, note=note
        )
        click.echo(f"{alias.address} -> {alias.destinations}")


@alias_group.command("list")
@click.option("--owner")
@click.option("--search", help="Substring of address, site or note.")
@click.option("--state", "state_", type=click.Choice([s.value for s in AliasState]))
def list_aliases(owner: str | None, search: str | None, state_: str | None) -> None:
    """List aliases (tab-separated: address, state, site, destinations, forwarded, spam)."""
    with state().database().session() as session:
        query = select(Alias).order_by(Alias.address)
        if owner:
            query = query.join(User, Alias.owner_id == User.id).where(User.username == owner)
        if state_:
            query = query.where(Alias.state == state_)
        if search:
            like = f"%{search.lower()}%"
            query = query.where(
                or_(Alias.address.like(like), Alias.site.like(like), Alias.note.ilike(like))
            )
        for alias in session.scalars(query):
            click.echo(
                f"{alias.address}\t{alias.state}\t{alias.site or '-'}\t{alias.destinations}"
                f"\t{alias.forwarded_count}\t{alias.spam_count}"
            )


def _state_command(name: str, target: AliasState, help_text: str) -> click.Command:
    @click.command(name, help=help_text)
    @click.argument("addresses", nargs=-1, required=True)
    @fail_on_domain_errors
    def command(addresses: tuple[str, ...]) -> None:
        with state().database().session() as session:
            for address in addresses:
                alias = core.get_alias(session, address)
                core.set_state(session, alias, target)
                click.echo(f"{alias.address} {target.value}")

    return command


@alias_group.command("forget")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Confirm: the address may be created again.")
@fail_on_domain_errors
def forget(addresses: tuple[str, ...], yes: bool) -> None:
    """Remove aliases and their tombstones, releasing the addresses."""
    if not yes:
        click.confirm(f"Release {len(addresses)} address(es) for re-use?", abort=True)
    with state().database().session() as session:
        for address in addresses:
            core.forget(session, core.get_alias(session, address))
            click.echo(f"{address} forgotten")


alias_group.add_command(_state_command("disable", AliasState.DISABLED, "Refuse mail (reversible)."))
alias_group.add_command(_state_command("enable", AliasState.ACTIVE, "Accept mail again."))
alias_group.add_command(_state_command("burn", AliasState.BURNED, "Refuse mail for ever."))
alias_group.add_command(
    _state_command("delete", AliasState.DELETED, "Hide and refuse; a tombstone keeps the address from coming back.")
)


def register(group: click.Group) -> None:
    group.add_command(alias_group)
