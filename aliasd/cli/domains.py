"""aliasd domain add | list | set"""

from __future__ import annotations

import click

from aliasd.cli.common import fail_on_domain_errors, state
from aliasd.core import aliases as core
from aliasd.mailauth.provision import provision_domain
from aliasd.models import CatchAllPolicy

POLICIES = click.Choice([p.value for p in CatchAllPolicy])


@click.group("domain")
def domain_group() -> None:
    """Managed (catch-all) domains."""


@domain_group.command("add")
@click.argument("domain")
@click.option("--owner", required=True, help="User whose mailbox catch-all aliases forward to.")
@click.option("--catch-all", "catch_all", type=POLICIES, default="reject", show_default=True)
@click.option("--catch-all-regex", help="Local parts the catch-all may create must match this.")
@click.option("--max-per-hour", type=int, help="Cap on aliases the catch-all creates per hour.")
@fail_on_domain_errors
def add(domain: str, owner: str, catch_all: str, catch_all_regex: str | None,
        max_per_hour: int | None) -> None:
    """Manage a domain."""
    with state().database().session() as session:
        user = core.get_user(session, owner)
        created = core.create_domain(
            session, domain, user, catch_all=catch_all,
            catch_all_regex=catch_all_regex, catch_all_max_per_hour=max_per_hour,
        )
        name = created.name
        click.echo(f"domain {name} added (owner {user.username}, catch-all {catch_all})")
    provision_domain(state().settings, name)
    click.echo(f"DNS records to publish: aliasd dns {name}", err=True)


@domain_group.command("set")
@click.argument("domain")
@click.option("--catch-all", "catch_all", type=POLICIES)
@click.option("--catch-all-regex", help="Empty string removes the gate.")
@click.option("--max-per-hour", type=int, help="Negative removes the cap.")
@fail_on_domain_errors
def set_(domain: str, catch_all: str | None, catch_all_regex: str | None,
         max_per_hour: int | None) -> None:
    """Change a domain's catch-all policy."""
    fields: dict = {}
    if catch_all is not None:
        fields["catch_all"] = catch_all
    if catch_all_regex is not None:
        fields["catch_all_regex"] = catch_all_regex  # core: empty removes the gate
    if max_per_hour is not None:
        fields["catch_all_max_per_hour"] = None if max_per_hour < 0 else max_per_hour
    if not fields:
        raise click.UsageError("nothing to change: give --catch-all, --catch-all-regex or --max-per-hour")
    with state().database().session() as session:
        dom = core.get_domain(session, domain)
        core.update_domain(session, dom, **fields)
        click.echo(f"domain {dom.name} updated")


@domain_group.command("list")
def list_domains() -> None:
    """List managed domains."""
    with state().database().session() as session:
        for dom in core.list_domains(session):
            cap = dom.catch_all_max_per_hour
            extra = []
            if dom.catch_all_regex:
                extra.append(f"regex={dom.catch_all_regex}")
            if cap is not None:
                extra.append(f"max/h={cap}")
            click.echo(f"{dom.name}\t{dom.owner.username}\t{dom.catch_all}\t{' '.join(extra)}")


def register(group: click.Group) -> None:
    group.add_command(domain_group)


def _add_reply_mode_command() -> None:
    from aliasd.cli.contacts import domain_reply_mode  # reverse aliases

    domain_group.add_command(domain_reply_mode)


_add_reply_mode_command()
