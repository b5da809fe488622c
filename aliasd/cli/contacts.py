"""aliasd alias write-to | contacts: reverse aliases from the command line."""

from __future__ import annotations

import click

from aliasd.cli.common import fail_on_domain_errors, state
from aliasd.core import aliases as core
from aliasd.core import reverse_aliases as ra
from aliasd.core.errors import AliasdError
from aliasd.core.reply_headers import HeaderInjection, check_display_name


@click.command("write-to")
@click.argument("alias")
@click.argument("correspondent")
@click.option("--name", help="The correspondent's display name.")
@fail_on_domain_errors
def write_to(alias: str, correspondent: str, name: str | None) -> None:
    """Print the reverse alias to write to so that mail reaches CORRESPONDENT from ALIAS."""
    settings = state().settings
    try:
        name = check_display_name(name)
    except HeaderInjection as exc:
        raise AliasdError(str(exc)) from exc
    with state().database().session() as session:
        row = ra.write_to(session, core.get_alias(session, alias), correspondent, name=name,
                          reply_domain=settings.reply_domain)
        click.echo(row.address)


@click.command("contacts")
@click.argument("alias")
@fail_on_domain_errors
def contacts(alias: str) -> None:
    """List ALIAS's contacts (tab-separated: reverse alias, correspondent, enabled,
    forwarded, sent, refused)."""
    with state().database().session() as session:
        for row in ra.list_for_alias(session, core.get_alias(session, alias).id):
            click.echo("\t".join([row.address, row.correspondent, "yes" if row.enabled else "no",
                                  str(row.forwarded_count), str(row.sent_count),
                                  str(row.refused_count)]))


MODES = click.Choice(["preserve", "rewrite", "default"])


@click.command("reply-settings")
@click.argument("alias")
@click.option("--name", help="Display name of mail sent as the alias; empty removes it.")
@click.option("--mode", type=MODES, help="How forwarded mail carries the reverse alias; "
              "'default' follows the domain.")
@fail_on_domain_errors
def reply_settings(alias: str, name: str | None, mode: str | None) -> None:
    """Set ALIAS's reply display name and forwarding mode."""
    try:
        checked = check_display_name(name) if name is not None else None
    except HeaderInjection as exc:
        raise AliasdError(str(exc)) from exc
    with state().database().session() as session:
        row = core.get_alias(session, alias)
        if name is not None:
            row.reply_name = checked
        if mode is not None:
            row.reply_mode = None if mode == "default" else mode
        click.echo(f"{row.address}: name {row.reply_name or '-'}, mode {row.reply_mode or 'default'}")


@click.command("reply-mode")
@click.argument("domain")
@click.argument("mode", type=MODES)
@fail_on_domain_errors
def domain_reply_mode(domain: str, mode: str) -> None:
    """How forwarded mail to DOMAIN's aliases carries the reverse alias ('default':
    the reply_mode setting)."""
    with state().database().session() as session:
        row = core.get_domain(session, domain)
        row.reply_mode = None if mode == "default" else mode
        click.echo(f"{row.name}: reply mode {row.reply_mode or 'default'}")
