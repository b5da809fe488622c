"""aliasd alias add | list | disable | enable | burn | delete | forget | import | export"""

from __future__ import annotations

import sys

import click
from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from aliasd.cli.common import describe_database_error, echo_err, fail_on_domain_errors, state
from aliasd.core import aliases as core
from aliasd.core import virtual_file
from aliasd.core.bounded_lines import TextLines
from aliasd.models import Alias, AliasState


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
@click.option("--all", "include_deleted", is_flag=True, help="Include deleted aliases (tombstones).")
@fail_on_domain_errors
def list_aliases(owner: str | None, search: str | None, state_: str | None,
                 include_deleted: bool) -> None:
    """List aliases (tab-separated: address, state, site, destinations, forwarded, spam).
    Deleted aliases are hidden unless --all or --state deleted."""
    with state().database().session() as session:
        query = select(Alias).order_by(Alias.address)
        if owner:
            query = query.where(Alias.owner_id == core.get_user(session, owner).id)
        if state_:
            query = query.where(Alias.state == state_)
        elif not include_deleted:
            query = query.where(Alias.state != AliasState.DELETED.value)
        if search:
            # % and _ in the search are literal characters, not wildcards.
            text = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            like = f"%{text}%"
            query = query.where(
                or_(
                    Alias.address.like(like, escape="\\"),
                    Alias.site.like(like, escape="\\"),
                    Alias.note.ilike(like, escape="\\"),
                )
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
        done = []
        with state().database().session() as session:
            for address in addresses:
                alias = core.get_alias(session, address)
                core.set_state(session, alias, target)
                done.append(alias.address)
        # Only after the commit: one bad address changes nothing, and says so.
        for address in done:
            click.echo(f"{address} {target.value}")

    return command


@alias_group.command("forget")
@click.argument("addresses", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Confirm: the address may be created again.")
@fail_on_domain_errors
def forget(addresses: tuple[str, ...], yes: bool) -> None:
    """Remove aliases and their tombstones, releasing the addresses."""
    if not yes:
        click.confirm(f"Release {len(addresses)} address(es) for re-use?", abort=True)
    done = []
    with state().database().session() as session:
        for address in addresses:
            alias = core.get_alias(session, address)
            done.append(alias.address)
            core.forget(session, alias)
    for address in done:
        click.echo(f"{address} forgotten")


alias_group.add_command(_state_command("disable", AliasState.DISABLED, "Refuse mail (reversible)."))
alias_group.add_command(_state_command("enable", AliasState.ACTIVE, "Accept mail again."))
alias_group.add_command(_state_command("burn", AliasState.BURNED, "Refuse mail for ever."))
alias_group.add_command(
    _state_command("delete", AliasState.DELETED, "Hide and refuse; a tombstone keeps the address from coming back.")
)


class UnreadableFile(click.ClickException):
    exit_code = 2


class DatabaseFailure(click.ClickException):
    exit_code = 3


@alias_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--owner", help="Owner of every imported alias. Default: each domain's owner.")
@click.option("--site-from-local", is_flag=True,
              help="Record the local part as the site when it looks like a host name.")
@click.option("--update", "update_existing", is_flag=True,
              help="Give existing aliases the file's destinations instead of skipping them.")
@click.option("--dry-run", is_flag=True, help="Check and report, change nothing.")
@fail_on_domain_errors
def import_(file: str, owner: str | None, site_from_local: bool, update_existing: bool,
            dry_run: bool) -> None:
    """Import a Postfix virtual(5) file (`address dest[, dest...]`).

    Bad lines are reported on stderr as FILE:LINE: reason and the rest is imported, in one
    transaction. Exit status: 0 all imported (or already present), 1 some lines refused,
    2 the file could not be read, 3 the database failed (nothing imported)."""
    try:
        # Binary, read in bounded chunks: a line over the limit is reported and skipped,
        # never held in memory whole (TextLines also drops a byte-order mark).
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        raise UnreadableFile(f"cannot read {file}: {exc.strerror or exc}") from exc
    lines = TextLines(stream)
    try:
        database = state().database()
    except click.ClickException as exc:  # not there, old schema, unreachable
        stream.close()
        raise DatabaseFailure(f"{exc.message}; nothing was imported") from exc
    try:
        with stream, database.session() as session:
            user = core.get_user(session, owner) if owner else None
            report = virtual_file.import_virtual(
                session, lines, owner=user, site_from_local=site_from_local,
                update_existing=update_existing,
            )
            if dry_run:
                session.rollback()
    except OSError as exc:  # e.g. a directory or a read error half-way: nothing written
        raise UnreadableFile(f"cannot read {file}: {exc.strerror or exc}") from exc
    except IntegrityError as exc:  # another writer added one of these addresses meanwhile
        raise DatabaseFailure(
            "another writer created some of these addresses during the import; "
            "nothing was imported, run the import again"
        ) from exc
    except SQLAlchemyError as exc:  # one transaction: a failure anywhere loses nothing
        raise DatabaseFailure(
            f"database error, nothing was imported: {describe_database_error(exc)}"
        ) from exc
    name = "<stdin>" if file == "-" else file
    report.errors += [virtual_file.LineProblem(o.number, o.reason) for o in lines.overlong]
    for problem in report.problems:
        echo_err(f"{name}:{problem.line}: {problem.reason}")
    verb = "would import" if dry_run else "imported"
    click.echo(
        f"{verb} {report.imported}, updated {report.updated}, "
        f"duplicates {len(report.duplicates)}, errors {len(report.errors)}"
    )
    if report.errors:
        sys.exit(1)


@alias_group.command("export")
@click.option("--owner", help="Only this user's aliases.")
@click.option("--all", "include_all", is_flag=True,
              help="Also list disabled, burned and deleted aliases, as comments naming the state.")
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write to this file (replaced atomically) instead of standard output.")
@fail_on_domain_errors
def export(owner: str | None, include_all: bool, output: str) -> None:
    """Print active aliases as a Postfix virtual(5) file, sorted by address.

    An alias such a file cannot carry back (its address or a destination starts with
    '#') is written as a "# not exported:" comment and named on stderr; exit status 1."""
    with state().database().session() as session:
        user = core.get_user(session, owner) if owner else None
        rows = virtual_file.export_rows(session, owner=user, include_all=include_all)
    try:
        with click.open_file(output, "w", encoding="utf-8", atomic=output != "-") as out:
            out.writelines(virtual_file.render_virtual(rows))
    except OSError as exc:  # atomic: the file it would replace is left as it was
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc
    left_out = [(address, reason) for address, destinations, state in rows
                if state == AliasState.ACTIVE.value
                and (reason := virtual_file.not_exportable(address, destinations))]
    for address, reason in left_out:
        echo_err(f"{address}: not exported: {reason}")
    if left_out:
        sys.exit(1)


def register(group: click.Group) -> None:
    group.add_command(alias_group)


def _add_contact_commands() -> None:
    from aliasd.cli.contacts import contacts, reply_settings, write_to  # reverse aliases

    alias_group.add_command(write_to)
    alias_group.add_command(contacts)
    alias_group.add_command(reply_settings)


_add_contact_commands()
