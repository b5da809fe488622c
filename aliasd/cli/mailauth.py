"""aliasd dns DOMAIN | srs rotate | doctor"""

from __future__ import annotations

import sys

import click

from aliasd.cli.common import state
from aliasd.core import aliases as core
from aliasd.doctor import host_name_check
from aliasd.mailauth import keys, records, srs_secret


@click.command("dns")
@click.argument("domain", required=False)
def dns_command(domain: str | None) -> None:
    """Print the DNS records DOMAIN needs, in zone-file format; without DOMAIN, those
    of every managed domain and of the reverse-alias domain (reply_domain)."""
    settings = state().settings
    with state().database().session() as session:
        wanted = records.dns_domains(settings, [d.name for d in core.list_domains(session)])
    names = wanted
    if domain is None and not names:
        raise click.ClickException("no managed domain yet: aliasd domain add DOMAIN --owner USER")
    if domain is not None:
        names = [domain.lower().rstrip(".")]
        if names[0] not in wanted:
            raise click.ClickException(f"{domain} is not a managed domain")
    host = host_name_check(settings)
    if host.status != "ok":  # the records below would point MX and SPF at it
        click.echo(f"warning: this host's name {host.detail}: {host.fix}", err=True)
    try:
        click.echo("\n".join(records.zone_text(settings, n) for n in names), nl=False)
    except keys.DkimKeyError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group("srs")
def srs_group() -> None:
    """SRS secrets."""


@srs_group.command("rotate")
def srs_rotate() -> None:
    """Put a new SRS secret first; older ones keep verifying bounces. Restart lookupd."""
    settings = state().settings
    try:
        values = srs_secret.rotate(settings)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"new SRS secret in {srs_secret.secret_file(settings)} ({len(values)} kept); "
               "restart aliasd lookupd to sign with it")  # fmt: skip


@click.command("doctor")
@click.option("--postfix-config", "postfix_dir", default=None,
              help="Postfix configuration directory (default: postconf's own).")
def doctor(postfix_dir: str | None) -> None:
    """Check Postfix's configuration, aliasd's daemons and each domain's DNS."""
    from aliasd.doctor import run_checks

    failed = False
    for check in run_checks(state().settings, state().database(check_schema=False), postfix_dir):
        click.echo(check.line())
        failed = failed or check.status == "fail"
    sys.stdout.flush()
    if failed:
        raise SystemExit(1)


def register(group: click.Group) -> None:
    group.add_command(dns_command)
    group.add_command(srs_group)
    group.add_command(doctor)
